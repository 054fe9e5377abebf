"""The one YAML loader of the project: safe constructors only, bounded work.

``load_yaml(text, source)`` / ``read_yaml(path)`` refuse, with a :class:`~fgclip_core.config.ConfigError`
naming the source, before any expansion happens:
- files larger than :data:`MAX_BYTES`;
- more than :data:`MAX_ALIASES` alias uses (``*name``), recursive aliases, and documents whose
  alias-expanded size (every node counted once per use) exceeds :data:`MAX_EXPANDED_NODES`
  (a "billion laughs" file is a few lines with a 10^9-node expansion);
- nesting deeper than :data:`MAX_DEPTH`;
- any tag that needs a non-safe constructor (``!!python/object`` ...) and every other YAML error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 200_000
MAX_DEPTH = 100


def _config_error(message: str) -> Exception:
    from fgclip_core.config import ConfigError  # late: fgclip_core.config imports this module

    return ConfigError(message)


class _Limited(yaml.SafeLoader):
    """SafeLoader that counts alias uses while composing and checks the expanded size before
    constructing Python objects (construction is what shared references make exponential downstream)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_uses = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} alias uses (*name)")
        return super().compose_node(parent, index)


def _expanded_size(root: Node) -> int:
    """Nodes after alias expansion, without expanding (memoised per node; raises on cycles/depth)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
        if key in active:
            raise yaml.YAMLError("recursive alias (a node contains itself)")
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                total += size(child, depth + 1)
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
        elif not isinstance(node, ScalarNode):
            raise yaml.YAMLError(f"unexpected node {type(node).__name__}")
        if total > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"expands to more than {MAX_EXPANDED_NODES} nodes (nested aliases?)")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """The one YAML document in ``text`` as plain Python data (``None`` for an empty document)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _config_error(f"{source}: YAML larger than {MAX_BYTES} bytes")
    loader = _Limited(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        reason = " ".join(str(e).replace('"<unicode string>", ', "").split())
        raise _config_error(f"{source}: not valid YAML (or refused): {reason}") from e
    except RecursionError as e:
        raise _config_error(f"{source}: YAML nested too deeply") from e
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """``load_yaml`` of a file, refusing files over :data:`MAX_BYTES` before reading them."""
    p = Path(path)
    try:
        if not p.is_file():
            raise _config_error(f"{p}: not a file" if p.exists() else f"{p}: no such file")
        if p.stat().st_size > MAX_BYTES:
            raise _config_error(f"{p}: YAML larger than {MAX_BYTES} bytes")
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except OSError as e:
        raise _config_error(f"{p}: cannot read: {e}") from e
    except UnicodeDecodeError as e:
        raise _config_error(f"{p}: not UTF-8 text: {e}") from e
    return load_yaml(text, str(p))
