"""YAML loading that remembers where every key and value came from.

``load_yaml`` returns plain data plus a map from key path (a tuple of keys and list indices) to the
line it stands on, so that validation errors can point at ``file:line``. Duplicate keys are errors
(PyYAML silently keeps the last one, which would lose data).

A file is read only when it is a regular file of at most ``MAX_FILE_BYTES`` (a FIFO would block,
``/dev/zero`` would never end), and its YAML is refused *before* any Python object is built when it
nests deeper than ``MAX_DEPTH`` levels, holds an alias to a value that contains it, or would expand
through its aliases past ``MAX_VALUES`` values or ``MAX_TEXT`` characters (an "alias bomb": a
kilobyte of nested aliases can stand for gigabytes)::

    a: &a [x, x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]    # 100 values
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]    # 1,000, and so on
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aichaos.errors import ExperimentError, Problem

MAX_FILE_BYTES = 1024 * 1024  # an experiment or stack file (a few KiB in practice)
MAX_DEPTH = 64  # levels of nesting, aliases expanded
MAX_VALUES = 100_000  # scalars, lists and mappings, aliases expanded
MAX_TEXT = 4 * 1024 * 1024  # characters of all scalars together, aliases expanded

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
            shown = part if part.isprintable() and len(part) <= 100 else _brief(part)  # no escapes to the terminal
            out += f".{shown}" if out else shown
    return out


def describe_value(value: object) -> str:
    """How a YAML value reads to the person who wrote it: "a list", "a number", "nothing (null)"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text" if value else "an empty string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _brief(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "…"


class _Refused(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer, counting as it goes: it refuses deep nesting, recursive aliases and
    documents that expand past the bounds above while it builds the node graph, in which an alias
    is one shared node, so that nothing is ever expanded to find out."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0  # nodes in the file itself, a lower bound of the expanded count that stops early
        self._aliases = 0
        # id(node) → (values, characters, depth), aliases expanded; a node is here once it is complete
        self._expanded: dict[int, tuple[int, int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            self._aliases += 1
            if node is None or id(node) not in self._expanded:
                raise _Refused(event.start_mark, f"the alias *{event.anchor} stands inside the value it names "
                                                 "(a recursive alias)")
            return node
        if self._depth >= MAX_DEPTH:
            raise _Refused(self.peek_event().start_mark, f"nested deeper than {MAX_DEPTH} levels")
        self._composed += 1
        if self._composed > MAX_VALUES:
            raise _Refused(self.peek_event().start_mark, f"the file holds more than {MAX_VALUES:,} values")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:  # never: only an event stream that ended early has no node, and the parser raises
            return None
        self._expanded[id(node)] = size = self._size(node)
        values, text, depth = size
        if values > MAX_VALUES or text > MAX_TEXT or depth > MAX_DEPTH:
            what = (f"more than {MAX_VALUES:,} values" if values > MAX_VALUES
                    else f"more than {MAX_TEXT:,} characters" if text > MAX_TEXT
                    else f"deeper than {MAX_DEPTH} levels")
            raise _Refused(node.start_mark, f"this value expands to {what} through its aliases" if self._aliases
                           else f"this value holds {what}")
        return node

    def _size(self, node: yaml.Node) -> tuple[int, int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 1, len(node.value), 1
        children: list[yaml.Node] = (list(node.value) if isinstance(node, yaml.SequenceNode)
                                     else [n for pair in node.value for n in pair])
        sizes = [self._expanded[id(child)] for child in children]
        return (1 + sum(s[0] for s in sizes), sum(s[1] for s in sizes), 1 + max((s[2] for s in sizes), default=0))


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
    except Exception as exc:  # PyYAML's own constructors fail this way, e.g. on !!timestamp 2024-99-99
        why = f": {exc}" if isinstance(exc, ValueError) else ""
        if "integer string conversion" in why:  # Python's digit limit, whose advice is for programmers
            why = ": the number has too many digits"
        raise ExperimentError([Problem(file, node.start_mark.line + 1, format_path(path),
                                       f"cannot read {_brief(str(node.value))} as !!{node.tag.rsplit(':', 1)[-1]}"
                                       f"{why}")]) from exc
    finally:
        constructor.dispose()


def parse_yaml(text: str, file: str) -> Located:
    """Parse YAML text; every syntax error becomes an ExperimentError with the line."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
        node = loader.get_single_node()
    except _Refused as exc:
        raise ExperimentError([Problem(file, exc.mark.line + 1, "",
                                       f"{exc.message} (column {exc.mark.column + 1})")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or str(exc)
        raise ExperimentError([Problem(file, line, "", f"invalid YAML: {what}")]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML forbids, e.g. NUL: it has a position, no mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise ExperimentError([Problem(file, line, "", f"invalid YAML: character {char} (column {column}) is "
                                       "not allowed in YAML")]) from exc
    except yaml.YAMLError as exc:
        raise ExperimentError([Problem(file, 1, "", f"invalid YAML: {exc}")]) from exc
    except (ValueError, RecursionError) as exc:  # e.g. NUL bytes in the stream; nesting is bounded above
        raise ExperimentError([Problem(file, 1, "", f"invalid YAML: {exc}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[KeyPath, int] = {}
    data = None if node is None else _construct(node, (), lines, file)
    return Located(file=file, data=data, lines=lines)


def read_file(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``MAX_FILE_BYTES``."""
    where = str(path)
    try:
        # stat before opening (opening a device can have effects), fstat after (it may have been swapped)
        before = path.stat()
        if not stat.S_ISREG(before.st_mode):
            raise ExperimentError([Problem(where, None, "", _not_regular(before.st_mode))])
        # O_NONBLOCK: a FIFO put in its place meanwhile must not block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as exc:
        raise ExperimentError([Problem(where, None, "", "no such file")]) from exc
    except OSError as exc:
        raise ExperimentError([Problem(where, None, "", f"cannot read: {exc.strerror}")]) from exc
    with os.fdopen(fd, "rb") as f:
        after = os.fstat(f.fileno())
        if not stat.S_ISREG(after.st_mode):
            raise ExperimentError([Problem(where, None, "", _not_regular(after.st_mode))])
        try:
            raw = f.read(MAX_FILE_BYTES + 1) if after.st_size <= MAX_FILE_BYTES else b""
        except OSError as exc:
            raise ExperimentError([Problem(where, None, "", f"cannot read: {exc.strerror}")]) from exc
    if after.st_size > MAX_FILE_BYTES or len(raw) > MAX_FILE_BYTES:
        raise ExperimentError([Problem(where, None, "", f"the file is {max(after.st_size, len(raw)):,} bytes; "
                                       f"an experiment or stack file may be at most {MAX_FILE_BYTES:,} (1 MiB)")])
    return raw


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
    return f"is {kind}, not a regular file; give the path of a YAML file"


def decode_utf8(raw: bytes, file: str) -> str:
    """``raw`` as text; bytes that are not UTF-8 are reported with their line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ExperimentError([Problem(file, 1, "", "the file is UTF-16 text; save it as UTF-8")]) from None
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        raise ExperimentError([Problem(file, line, "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column "
                                       f"{column} (save the file as UTF-8)")]) from None


def load_yaml(path: Path) -> Located:
    """Read and parse an experiment or stack file (see the module's docstring for what is refused)."""
    return parse_yaml(decode_utf8(read_file(path), str(path)), str(path))
