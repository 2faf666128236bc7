"""Reading the reviewable catalog files (YAML) and turning validation errors into one line that
names the file, the item and the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first_line[key] + 1})",
                    key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where (1-based line and column) and what, without PyYAML's multi-line excerpt."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"not valid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({exc.context} from line {exc.context_mark.line + 1})" if exc.context and exc.context_mark else ""
    return f"not valid YAML{where}: {exc.problem or exc.context}{context}"


def read_yaml(path: Path, error: type[Exception]) -> object:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{path.name}: not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
                    "(save the file as UTF-8)") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path.name}: {_yaml_problem(exc)}") from None


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
    if not isinstance(raw, dict):
        got = "nothing (the file is empty)" if raw is None else f"a {type(raw).__name__}"
        raise error(f"{path.name}: expected a mapping of keys at the top level, got {got}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path.name}: {describe(exc.errors()[0], raw, collection, id_field, noun, hidden)}") from None
