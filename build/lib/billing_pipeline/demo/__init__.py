"""Demo and scale data: a deterministic usage generator and demo plans, customers and contracts."""
