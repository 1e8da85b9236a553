"""The HTTP layer: routing, content negotiation, and errors -> OperationOutcome (in one place)."""
