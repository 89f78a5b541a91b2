"""Curation: filters, exact and near-duplicate removal, decontamination, balance."""
