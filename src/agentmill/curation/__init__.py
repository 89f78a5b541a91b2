"""Curation: filters (and, later, dedup, decontamination, balance)."""
