"""Parasut: Turkish e-invoices (e-Fatura / e-Arsiv) in lira, issued once per contract-month."""
