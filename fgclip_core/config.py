"""Shared helpers for typed, validated configs.

Each domain owns its config model (``fgclip_core.model.config``, ``fgclip_core.data.config``,
``fgclip_core.train.config`` ...) as a pydantic model whose field defaults are the single source of
defaults. This module only loads files and applies ``a.b.c=value`` overrides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fgclip_core.errors import UserError
from fgclip_core.safe_yaml import MAX_BYTES, load_yaml

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configs: unknown keys are an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError, UserError):
    """A config file or override is malformed; the message names the file and the field."""


def format_validation_error(e: ValidationError) -> str:
    """pydantic's errors as one line: ``field.path: message (got value)``, ``; ``-separated."""
    items = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<root>"
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        items.append(f"{loc}: {err.get('msg')} (got {got})")
    return "; ".join(items)


def read_mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{p}: config larger than {MAX_BYTES} bytes")
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config: {e}") from e
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"{p}: not valid JSON: {e}") from e
    else:
        data = load_yaml(text, str(p))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML scalars (``1e-6``, ``true``, ``[1,2]``)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        value = load_yaml(raw, f"override {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> T:
    """Build ``model`` from an optional file, a base mapping and overrides; errors name the source."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_mapping(path))
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = str(path) if path is not None else model.__name__
        raise ConfigError(f"{where}: invalid config: {format_validation_error(e)}") from e
