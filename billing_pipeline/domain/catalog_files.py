"""Reading the reviewable catalog files (YAML) and turning validation errors into one line that
names the file, the item and the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"


def read_yaml(path: Path, error: type[Exception]) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{path.name}: not valid YAML: {exc}") from None


def describe(error: dict, raw: object, collection: str, id_field: str, noun: str,
             hidden: tuple[str, ...] = ()) -> str:
    """'meter 'egress', aggregation: Input should be ...' from one pydantic error."""
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == collection and isinstance(loc[1], int):
        items = raw.get(collection, []) if isinstance(raw, dict) else []
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        item_id = item.get(id_field) if isinstance(item, dict) else None
        where = f"{noun} {item_id!r}" if item_id else f"{noun} #{loc[1] + 1}"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc if p not in hidden)
    message = error["msg"].removeprefix("Value error, ")
    head = ", ".join(p for p in (where, field) if p)
    return f"{head}: {message}" if head else message


def load_catalog(path: Path, model: type[BaseModel], error: type[Exception], collection: str = "",
                 id_field: str = "", noun: str = "", hidden: tuple[str, ...] = ()) -> BaseModel:
    """A catalog file validated by ``model``; the first problem raised as ``error``, naming the file,
    the item (``noun`` + its ``id_field`` within ``collection``) and the field."""
    raw = read_yaml(path, error)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path.name}: {describe(exc.errors()[0], raw, collection, id_field, noun, hidden)}") from None
