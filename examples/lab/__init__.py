"""Lab module: answers laboratory ServiceRequests with Observations and a DiagnosticReport."""
