"""Usage-to-invoice billing pipeline for a multi-chain RPC provider."""
