"""Reporting: figures from numbers (plots) and runs as comparison tables (compare).
Reads runs; writes nothing to a run itself (the app logs what these make)."""
