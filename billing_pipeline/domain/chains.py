"""Chain identifiers as the gateway logs them, and their names on an invoice (catalog/chains.yaml)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BillingError
from .catalog_files import CATALOG_DIR, load_catalog


class ChainFileError(BillingError):
    pass


class _ChainFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chains: dict[str, str] = Field(min_length=1)


def load_chains(path: Path | None = None) -> dict[str, str]:
    """Chain id -> display name, in the file's order."""
    return load_catalog(path or CATALOG_DIR / "chains.yaml", _ChainFile, ChainFileError).chains


@lru_cache(maxsize=1)
def known_chains() -> dict[str, str]:
    return load_chains()


def chain_display_name(chain: str) -> str:
    return known_chains().get(chain, chain)
