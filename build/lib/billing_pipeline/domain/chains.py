"""Chain identifiers as the gateway logs them, and their names on an invoice."""

from __future__ import annotations

CHAIN_NAMES: dict[str, str] = {
    "eth-mainnet": "ETH Mainnet",
    "bsc-mainnet": "BSC Mainnet",
    "polygon-mainnet": "Polygon PoS",
    "arbitrum-one": "Arbitrum One",
    "base-mainnet": "Base Mainnet",
    "optimism-mainnet": "OP Mainnet",
    "avalanche-c": "Avalanche C-Chain",
    "solana-mainnet": "Solana Mainnet",
    "eth-sepolia": "ETH Sepolia",
    "tron-mainnet": "TRON Mainnet",
}


def chain_display_name(chain: str) -> str:
    return CHAIN_NAMES.get(chain, chain)
