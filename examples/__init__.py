"""Example modules built on `samverka.sdk` only: two vendors' booking modules for the role `booking`
(`booking_a` keeps its state in a JSON file, `booking_b` in SQLite) and a `lab` module. Run one with
`python -m examples.<name> --help`; `samverka drill replace-module` runs all three."""
