"""Differential privacy accounting and ledger, anonymisation, HE parameters, secure aggregation."""
