"""Load YAML while remembering where every key and value came from.

PyYAML's plain loaders drop positions, so errors could only say *what* is wrong. We compose
the node tree and build plain Python values ourselves, recording the location of each value
and each mapping key by its path (``("rules", 2, "to")``). We also refuse what YAML would
silently accept: duplicate keys (the last one would win) and non-string keys. Sexagesimal
numbers (YAML 1.1 reads ``18:00`` as 1080) stay strings, because times are common here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from policies.errors import Location, PolicyLoadError, Problem

Path = tuple[str | int, ...]

_MAX_NODES = 1_000_000  # refuse alias bombs ("billion laughs") long before memory runs out

# libyaml's composer is several times faster when the wheel ships it.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class SourceMap:
    """Positions of the values (and keys) of one YAML document, keyed by path."""

    file: str
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> Location | None:
        """The location of ``path`` or, failing that, of its closest recorded ancestor."""
        table = self.keys if key else self.values
        p = path
        while True:
            loc = table.get(p) or (self.values.get(p) if key else None)
            if loc is not None:
                return loc
            if not p:
                return None
            p = p[:-1]


def format_path(path: Path) -> str:
    """``("rules", 2, "to")`` -> ``rules[2].to``: the way admins read field names."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Builder:
    def __init__(self, file: str) -> None:
        self.source = SourceMap(file)
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        self._count = 0

    def _loc(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.source.file, mark.line + 1, mark.column + 1)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise PolicyLoadError(
                f"{self.source.file}: document has more than {_MAX_NODES} nodes "
                "(alias expansion?); refusing to load it"
            )
        self.source.values[path] = self._loc(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in node.value:
            return node.value
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    Problem(
                        self._loc(key_node), format_path(path), "'<<' merge keys are not supported"
                    )
                )
                continue
            key = self._constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self.problems.append(
                    Problem(
                        self._loc(key_node),
                        format_path(path),
                        f"keys must be text, got {type(key).__name__} {key!r}",
                    )
                )
                continue
            if key in out:
                first = self.source.keys.get((*path, key))
                self.problems.append(
                    Problem(
                        self._loc(key_node),
                        format_path((*path, key)),
                        f"duplicate key (first defined at line {first.line if first else '?'})",
                    )
                )
                continue
            self.source.keys[(*path, key)] = self._loc(key_node)
            out[key] = self.build(value_node, (*path, key))
        return out


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML document; returns the data, its source map and structural problems.

    Raises PolicyLoadError for text that is not YAML at all, naming the position.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise PolicyLoadError(f"{where}: not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise PolicyLoadError(f"{file}: not valid YAML: {exc}") from exc
    builder = _Builder(file)
    if node is None:  # empty document: problems about it point at its start
        builder.source.values[()] = Location(file, 1, 1)
        return None, builder.source, builder.problems
    data = builder.build(node, ())
    return data, builder.source, builder.problems
