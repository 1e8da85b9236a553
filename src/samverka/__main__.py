"""`python -m samverka` runs the command line."""

from .cli import main

main()
