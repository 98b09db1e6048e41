"""YAML loading that remembers where every key and value came from.

``load_yaml`` returns plain data plus a map from key path (a tuple of keys and list indices) to the
line it stands on, so that validation errors can point at ``file:line``. Duplicate keys are errors
(PyYAML silently keeps the last one, which would lose data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aichaos.errors import ExperimentError, Problem

KeyPath = tuple[str | int, ...]


@dataclass
class Located:
    """Data read from a file with the line of every key path (1-based)."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ExperimentError([Problem(file, key_node.start_mark.line + 1, format_path(path),
                                               "YAML merge keys (<<) are not supported")])
            key = _construct(key_node, (*path, "<key>"), {}, file)
            if isinstance(key, list | dict):
                raise ExperimentError([Problem(file, key_node.start_mark.line + 1, format_path(path),
                                               "a mapping key must be a plain value")])
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise ExperimentError([Problem(file, key_node.start_mark.line + 1, format_path((*path, key)),
                                               "duplicate key (the earlier value would be lost)")])
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, (*path, key), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ExperimentError([Problem(file, node.start_mark.line + 1, format_path(path), str(exc))]) from exc
    finally:
        constructor.dispose()


def parse_yaml(text: str, file: str) -> Located:
    """Parse YAML text; every syntax error becomes an ExperimentError with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or str(exc)
        raise ExperimentError([Problem(file, line, "", f"invalid YAML: {what}")]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML forbids, e.g. NUL: it has a position, no mark
        line = text.count("\n", 0, exc.position) + 1
        raise ExperimentError([Problem(file, line, "", f"invalid YAML: character {exc.character!r} is not "
                                       "allowed in YAML")]) from exc
    except yaml.YAMLError as exc:
        raise ExperimentError([Problem(file, None, "", f"invalid YAML: {exc}")]) from exc
    except (ValueError, RecursionError) as exc:  # e.g. NUL bytes in the stream, absurd nesting
        raise ExperimentError([Problem(file, None, "", f"invalid YAML: {exc}")]) from exc
    lines: dict[KeyPath, int] = {}
    data = None if node is None else _construct(node, (), lines, file)
    return Located(file=file, data=data, lines=lines)


def load_yaml(path: Path) -> Located:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ExperimentError([Problem(str(path), None, "", "no such file")]) from exc
    except IsADirectoryError as exc:
        raise ExperimentError([Problem(str(path), None, "", "is a directory, not a file")]) from exc
    except OSError as exc:
        raise ExperimentError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError([Problem(str(path), None, "", f"not UTF-8 text (byte {exc.start})")]) from exc
    return parse_yaml(text, str(path))
