"""One module per FHIR interaction or operation; handlers take Services and parsed arguments."""
