"""Exporters: each format is a pure function of our records, validating its own output."""
