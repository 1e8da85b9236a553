"""Test helpers shared across test packages (a throwaway PostgreSQL cluster, ...)."""
