"""YAML → typed Experiment and Stack, with every error naming file, line and key path.

``--set key.path=value`` overrides are applied to the parsed data before validation, so they are
checked exactly like the file (their errors name the override, not a file line).
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from aichaos.errors import ExperimentError, Problem
from aichaos.experiment.model import Experiment
from aichaos.experiment.stack import Edge, Stack
from aichaos.experiment.yamlpos import KeyPath, Located, describe_value, format_path, load_yaml, parse_yaml


@dataclass(frozen=True)
class LoadedExperiment:
    path: Path
    experiment: Experiment
    stack_path: Path
    stack: Stack
    notes: tuple[str, ...] = ()  # what loading the stack inferred or ignored (a Compose file's edges), to print


def _model_at(model: Any, loc: tuple[Any, ...]) -> tuple[Any, KeyPath]:
    """Walk ``loc`` through the model's annotations; return the type there and the loc without union tags."""
    clean: list[str | int] = []
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if origin in (typing.Union, types.UnionType):
            members = [_unwrap(m) for m in typing.get_args(current)]
            tagged = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)
                      and "type" in m.model_fields and part in typing.get_args(m.model_fields["type"].annotation)]
            if tagged:
                current = tagged[0]
                continue  # the tag is pydantic's, not the user's
            non_none = [m for m in members if m is not type(None)]
            current = _unwrap(non_none[0]) if len(non_none) == 1 else None
            origin = typing.get_origin(current)
        clean.append(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if n == part or f.alias == part), None)
            current = field.annotation if field else None
        elif origin is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif origin is dict:
            current = typing.get_args(current)[1]
        else:
            current = None
    return _unwrap(current), tuple(clean)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _allowed_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _problems(exc: ValidationError, located: Located, model: type[BaseModel],
              overridden: dict[KeyPath, str]) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent, _clean_parent = _model_at(model, loc[:-1])
            _, clean = _model_at(model, loc)
            key = str(loc[-1])
            allowed = _allowed_keys(parent)
            close = difflib.get_close_matches(key[:100], allowed, n=1, cutoff=0.6)
            message = f"unknown key {_brief(key)}"
            message += f"; did you mean {close[0]!r}?" if close else (
                f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        else:
            expected, clean = _model_at(model, loc)
            message = _in_user_words(err, expected)
            if kind == "missing":
                message = "required key is missing"
            elif kind == "union_tag_invalid":
                message = message.replace("Input tag", "type").replace(
                    "found using 'type' does not match any of the expected tags:",
                    "is not a known type; expected one of:")
            elif kind == "union_tag_not_found":
                message = "needs a 'type' key"
        source = _source_of(clean, overridden)
        line = None if source else located.line_of(clean)
        problems.append(Problem(source or located.file, line, format_path(clean), message))
    return problems


def _in_user_words(err: ErrorDetails, expected: Any) -> str:
    """Pydantic's message as the file's author would put it: what was expected, what was found,
    no class names ("expected a mapping with name and duration, got a number")."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = _brief(value) if isinstance(value, str) and value else describe_value(value)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected {_mapping_of(expected)}, got {got}"
    simple = {
        "list_type": f"expected a list, got {got}",
        "int_type": f"expected an integer, got {got}",
        "int_parsing": f"expected an integer, got {got}",
        "int_from_float": f"expected an integer, got {value!r}",
        "float_type": (f"the number is too large (about {int(value.bit_length() * 0.30103) + 1} digits)"
                       if isinstance(value, int) else f"expected a number, got {got}"),
        "float_parsing": f"expected a number, got {got}",
        "finite_number": "expected a finite number",
        "string_type": f"expected text, got {got}",
        "bool_type": f"expected true or false, got {got}",
        "bool_parsing": f"expected true or false, got {got}",
    }
    if kind in simple:
        return simple[kind]
    bounds = {"greater_than_equal": ("must be at least", "ge"), "greater_than": ("must be greater than", "gt"),
              "less_than_equal": ("must be at most", "le"), "less_than": ("must be less than", "lt")}
    if kind in bounds and bounds[kind][1] in ctx:
        words, name = bounds[kind]
        return f"{words} {ctx[name]}"
    lengths = {"too_short": "min_length", "too_long": "max_length"}
    if kind in lengths and lengths[kind] in ctx:
        n = ctx[lengths[kind]]
        unit = {"List": "item", "Dictionary": "entry"}.get(str(ctx.get("field_type")), "character")
        plural = "" if n == 1 else ("entries" if unit == "entry" else unit + "s")
        return f"needs at {'least' if kind == 'too_short' else 'most'} {n} {plural or unit}"
    if kind == "literal_error" and "expected" in ctx:
        return f"expected {ctx['expected']}, got {got}"
    if kind == "string_pattern_mismatch" and "pattern" in ctx:
        return f"{_brief(str(value))} does not match the pattern {ctx['pattern']}"
    message = str(err["msg"])
    return message[len("Value error, "):] if message.startswith("Value error, ") else message


def _mapping_of(expected: Any) -> str:
    """ "a mapping with name and duration", "a mapping of max, min, …", "a mapping with type (…)"."""
    if isinstance(expected, type) and issubclass(expected, BaseModel):
        required = [f.alias or n for n, f in expected.model_fields.items() if f.is_required()]
        if required:
            return "a mapping with " + _listed(required, "and")
        return "a mapping of " + _listed(_allowed_keys(expected), "or")
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        tags = [str(a) for m in typing.get_args(expected) if isinstance(m, type) and issubclass(m, BaseModel)
                and "type" in m.model_fields for a in typing.get_args(m.model_fields["type"].annotation)]
        if tags:
            shown = _listed(tags, "or") if len(tags) <= 4 else ", ".join(tags[:3]) + f" or {len(tags) - 3} more"
            return f"a mapping with type ({shown}) and its settings"
    return "a mapping"


def _listed(words: list[str], conjunction: str) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _brief(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "…"


def _booleans_as_numbers(model: Any, data: Any, path: KeyPath, located: Located) -> list[Problem]:
    """``true`` where the model takes a number: pydantic would read it as 1, and ``users: true``
    is a mistake, not one user. Walks the data along the model's annotations."""
    tp = _unwrap(model)
    if isinstance(data, bool):
        if tp in (int, float):
            return [Problem(located.file, located.line_of(path), format_path(path),
                            f"expected a number, got {str(data).lower()}")]
        return []
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and isinstance(data, dict):
        members = [m for m in typing.get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
        tagged = [m for m in members if "type" in m.model_fields
                  and data.get("type") in typing.get_args(m.model_fields["type"].annotation)]
        tp = tagged[0] if tagged else members[0] if len(members) == 1 else None
        origin = None
    problems: list[Problem] = []
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(data, dict):
        fields = {f.alias or n: f for n, f in tp.model_fields.items()} | dict(tp.model_fields)
        for key, value in data.items():
            if key in fields:
                problems += _booleans_as_numbers(fields[key].annotation, value, (*path, key), located)
    elif origin is list and isinstance(data, list):
        for i, item in enumerate(data):
            problems += _booleans_as_numbers(typing.get_args(tp)[0], item, (*path, i), located)
    elif origin is dict and isinstance(data, dict):
        for key, value in data.items():
            problems += _booleans_as_numbers(typing.get_args(tp)[1], value, (*path, key), located)
    return problems


def _source_of(path: KeyPath, overridden: dict[KeyPath, str]) -> str | None:
    for prefix, origin in overridden.items():
        if path[: len(prefix)] == prefix:
            return origin
    return None


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``load.users=50`` → (("load", "users"), 50). Values are YAML scalars or flow collections."""
    if "=" not in text:
        raise ExperimentError([Problem("--set", None, "", f"{text!r} is not key.path=value")])
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ExperimentError([Problem("--set", None, key, f"{text!r} has an empty key")])
    path: list[str | int] = []
    for part in key.split("."):
        path.append(int(part) if part.isascii() and part.isdigit() and len(part) < 10 else part)
    try:  # parsed with the same bounds as a file (aliases, nesting, size)
        value = parse_yaml(raw, "--set").data if raw.strip() else ""
    except ExperimentError as exc:
        why = exc.problems[0].message if exc.problems else "invalid YAML"
        raise ExperimentError([Problem(f"--set {text}", None, key, f"the value is not valid YAML: {why}")]) from None
    return tuple(path), value


def apply_override(data: Any, path: KeyPath, value: Any, text: str) -> KeyPath:
    """Set ``path`` in ``data``; return the part of the path the override created (the whole
    path when it only replaced a value), so that errors inside it are blamed on the override."""
    node = data
    created: KeyPath | None = None
    for i, part in enumerate(path[:-1]):
        where = format_path(path[: i + 1])
        if isinstance(node, dict):
            if not isinstance(part, str):
                part = str(part)
            if part not in node and created is None:
                created = path[: i + 1]
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise ExperimentError([Problem("--set", None, where,
                                               f"index {part} is past the end ({len(node)} items)")])
            node = node[part]
        else:
            raise ExperimentError([Problem("--set", None, where, f"cannot set inside a {type(node).__name__}")])
    last = path[-1]
    if isinstance(node, dict):
        node[str(last)] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    else:
        raise ExperimentError([Problem("--set", None, format_path(path), f"cannot set {text!r} here")])
    return created or path


def _validate(located: Located, model: type[BaseModel], overridden: dict[KeyPath, str] | None = None) -> Any:
    if not isinstance(located.data, dict):
        kind = "empty" if located.data is None else describe_value(located.data)
        raise ExperimentError([Problem(located.file, 1, "",
                                       f"expected a mapping at the top level, the file is {kind}")])
    booleans = [_blamed(p, overridden or {}) for p in _booleans_as_numbers(model, located.data, (), located)]
    try:
        validated = model.model_validate(located.data)
    except ValidationError as exc:
        problems = _problems(exc, located, model, overridden or {})
        raise ExperimentError(booleans + [p for p in problems if p.key not in {b.key for b in booleans}]) from None
    if booleans:
        raise ExperimentError(booleans)
    return validated


def _blamed(problem: Problem, overridden: dict[KeyPath, str], *, above: bool = False) -> Problem:
    """The problem named after the ``--set`` that wrote its key, if one did; with ``above``, also
    after one that wrote a key below it, else after the first."""
    for prefix, origin in overridden.items():
        where = format_path(prefix)
        if problem.key == where or problem.key.startswith((f"{where}.", f"{where}[")):
            return Problem(origin, None, problem.key, problem.message)
    if above and overridden:
        below = [origin for prefix, origin in overridden.items()
                 if not problem.key or format_path(prefix).startswith((f"{problem.key}.", f"{problem.key}["))]
        return Problem((below or list(overridden.values()))[0], None, problem.key, problem.message)
    return problem


def _attributed(problems: list[Problem], original: Located, overridden: dict[KeyPath, str]) -> list[Problem]:
    """A problem the file does not have without the overrides is theirs, even where it is reported
    at a key above the one they set (a mapping whose values no longer fit together)."""
    try:
        _validate(original, Experiment)
        own: set[tuple[str, str]] = set()
    except ExperimentError as exc:
        own = {(p.key, p.message) for p in exc.problems}
    return [p if p.file != original.file or (p.key, p.message) in own else _blamed(p, overridden, above=True)
            for p in problems]


def load_stack(path: Path) -> Stack:
    return load_stack_notes(path)[0]


def load_stack_notes(path: Path, edges: dict[str, Edge] | None = None) -> tuple[Stack, list[str]]:
    """The stack of an aichaos stack file or a Compose file (``aichaos.experiment.compose``), with
    ``edges`` (the experiment's) added, and notes on what was inferred or ignored."""
    from aichaos.experiment.compose import compose_to_stack, is_compose_file

    located = load_yaml(path)
    notes: list[str] = []
    if is_compose_file(path):
        read = compose_to_stack(located, path.parent, edges)
        notes = read.notes
        located = Located(located.file, read.data, located.lines)
        edges = None  # wired by compose_to_stack, with the addresses the environment holds
    elif edges and isinstance(located.data, dict):
        data = copy.deepcopy(located.data)
        for key, edge in edges.items():
            dependent, _, dep = key.partition("->")
            service = (data.get("services") or {}).get(dependent)
            if isinstance(service, dict):
                service.setdefault("depends_on", {})[dep] = edge.model_dump(exclude_none=True)
                notes.append(f"edge {key}: {edge.env} through the fault proxy (declared in the experiment)")
        located = Located(located.file, data, located.lines)
    stack: Stack = _validate(located, Stack)
    return stack, notes


def load_experiment(path: Path | str, overrides: list[str] | None = None) -> LoadedExperiment:
    """Load and validate an experiment and its stack, checking that every reference resolves."""
    path = Path(path)
    located = load_yaml(path)
    original = Located(located.file, copy.deepcopy(located.data), located.lines) if overrides else located
    overridden: dict[KeyPath, str] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        if isinstance(located.data, dict):
            key = apply_override(located.data, key, value, text)
        overridden[key] = f"--set {text}"
    try:
        experiment: Experiment = _validate(located, Experiment, overridden)
    except ExperimentError as exc:
        if not overridden:
            raise
        raise ExperimentError(_attributed(exc.problems, original, overridden)) from None

    stack_line = located.line_of(("stack",))
    if "\0" in experiment.stack:  # no file system takes it: refused here, not as an OS error
        problem = Problem(str(path), stack_line, "stack", "a path cannot hold a NUL character")
        raise ExperimentError([_blamed(problem, overridden)])
    stack_path = (path.parent / experiment.stack).resolve()
    if not stack_path.is_file():
        what = "is not a regular file" if stack_path.exists() else "not found"
        problem = Problem(str(path), stack_line, "stack", f"stack file {experiment.stack!r} {what} "
                                                          f"(looked at {stack_path})")
        raise ExperimentError([_blamed(problem, overridden)])
    stack, notes = load_stack_notes(stack_path, experiment.edges)
    problems = [_blamed(p, overridden) for p in _references(experiment, stack, located)]
    if problems:
        raise ExperimentError(problems)
    return LoadedExperiment(path=path, experiment=experiment, stack_path=stack_path, stack=stack, notes=tuple(notes))


def _references(experiment: Experiment, stack: Stack, located: Located) -> list[Problem]:
    problems: list[Problem] = []
    services = list(stack.services)
    if not experiment.load.target_is_url and experiment.load.target not in stack.services:
        close = difflib.get_close_matches(experiment.load.target, services, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; services: {', '.join(services)}"
        problems.append(Problem(located.file, located.line_of(("load", "target")), "load.target",
                                f"no service {experiment.load.target!r} in the stack{hint}"))
    probed = experiment.correctness_target
    if probed is not None and probed not in stack.services:
        close = difflib.get_close_matches(probed, services, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; services: {', '.join(services)}"
        key_path: KeyPath = ("correctness", "target") if experiment.correctness and experiment.correctness.target \
            else ("correctness",)
        problems.append(Problem(located.file, located.line_of(key_path), format_path(key_path),
                                f"no service {probed!r} in the stack to probe{hint}"))
    from aichaos.faults.registry import kind_of

    for i, phase in enumerate(experiment.phases):
        for j, fault in enumerate(phase.faults):
            for name, message in kind_of(fault).check_stack(fault, stack):
                key: KeyPath = ("phases", i, "faults", j, name)
                problems.append(Problem(located.file, located.line_of(key), format_path(key), message))
    slo_metrics = experiment.steady_state.slo.metrics
    scraped: list[tuple[KeyPath, str, list[str]]] = [(("steady_state", "slo", "metrics", name), name, list(series))
                                                     for name, series in slo_metrics.items()]
    scraped += [(("stop_when", i, "metrics", name), name, list(series)) for i, c in enumerate(experiment.stop_when)
                for name, series in c.metrics.items()]
    if experiment.gates.degradation is not None:
        scraped += [(("gates", "degradation", "metrics", name), name, list(series))
                    for name, series in experiment.gates.degradation.metrics.items()]
    for key, name, selectors in scraped:
        if name not in stack.services:
            close = difflib.get_close_matches(name, services, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; services: {', '.join(services)}"
            problems.append(Problem(located.file, located.line_of(key), format_path(key),
                                    f"no service {name!r} in the stack{hint}"))
        elif stack.services[name].metrics is None and not all(s.startswith("aichaos_") for s in selectors):
            problems.append(Problem(located.file, located.line_of(key), format_path(key),
                                    f"service {name!r} has no metrics path in the stack file "
                                    "(add e.g. metrics: /metrics to it)"))
    for i, request in enumerate(experiment.load.requests):
        if request.llm is not None and request.llm.prompts is not None:
            prompts = Path(located.file).parent / request.llm.prompts
            if not prompts.is_file():
                key = ("load", "requests", i, "llm", "prompts")
                problems.append(Problem(located.file, located.line_of(key), format_path(key),
                                        f"prompts file {request.llm.prompts!r} not found (looked at {prompts})"))
    if experiment.load.locustfile is not None:
        locustfile = Path(located.file).parent / experiment.load.locustfile
        if not locustfile.is_file():
            problems.append(Problem(located.file, located.line_of(("load", "locustfile")), "load.locustfile",
                                    f"locustfile {experiment.load.locustfile!r} not found (looked at {locustfile})"))
    return problems


def json_schema(stack: bool = False) -> dict[str, Any]:
    """The JSON Schema of the experiment format, or with ``stack`` of the stack file format."""
    schema = (Stack if stack else Experiment).model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aichaos stack" if stack else "aichaos experiment"
    return schema
