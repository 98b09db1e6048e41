"""A fault from the command line (``aichaos fault inject TYPE --edge A->B --set key=value``), validated
exactly as the same fault in an experiment file: through its model in ``FaultSpec.MODELS`` and its
kind's ``check_stack``, with every error naming the argument that caused it (``--set latency_ms=x``,
``--edge``), never a file line.

    >>> fault_from_args("latency", edge="frontend->backend", sets=["latency_ms=300"], stack=stack)
    LatencyFault(type='latency', edge='frontend->backend', latency_ms=300, ...)
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from aichaos.errors import ExperimentError, Problem
from aichaos.experiment.loader import _allowed_keys, _in_user_words, _model_at, apply_override, parse_override
from aichaos.experiment.model import FaultSpec
from aichaos.experiment.stack import Stack
from aichaos.experiment.yamlpos import KeyPath, format_path


def fault_types() -> dict[str, type[FaultSpec]]:
    """Every fault type of the experiment format, by its ``type``."""
    return {model.type_name(): model for model in FaultSpec.MODELS}


def fault_from_args(type_: str, *, edge: str | None = None, service: str | None = None, sets: Sequence[str] = (),
                    stack: Stack | None = None) -> FaultSpec:
    """The fault model of ``type_`` with its target and ``--set`` overrides; ExperimentError (exit 2),
    each problem naming its argument, when it is not valid or does not fit ``stack``."""
    models = fault_types()
    model = models.get(type_)
    if model is None:
        close = difflib.get_close_matches(type_, list(models), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; types: {', '.join(models)}"
        raise ExperimentError([Problem("TYPE", None, "", f"no fault type {type_!r}{hint}")])
    data: dict[str, Any] = {"type": type_}
    blame: dict[KeyPath, str] = {}
    if edge is not None:
        data["edge"], blame[("edge",)] = edge, "--edge"
    if service is not None:
        data["service"], blame[("service",)] = service, "--service"
    for text in sets:
        key, value = parse_override(text)
        if key == ("type",):
            raise ExperimentError([Problem(f"--set {text}", None, "type", "the type is the command's TYPE argument")])
        blame[apply_override(data, key, value, text)] = f"--set {text}"
    try:
        fault = model.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError([_problem(err, model, blame) for err in exc.errors(include_url=False)]) from None
    if stack is not None:
        from aichaos.faults.registry import kind_of

        problems = [Problem(_source((key,), blame, "--set " + key), None, key, message)
                    for key, message in kind_of(fault).check_stack(fault, stack)]
        if problems:
            raise ExperimentError(problems)
    return fault


def _source(key: KeyPath, blame: dict[KeyPath, str], default: str) -> str:
    for prefix, origin in blame.items():
        if key[: len(prefix)] == prefix:
            return origin
    return default


def _problem(err: Any, model: type[FaultSpec], blame: dict[KeyPath, str]) -> Problem:
    loc: KeyPath = tuple(err["loc"])
    where = format_path(loc)
    if err["type"] == "missing":
        flag, usage = {"edge": ("--edge", "--edge DEPENDENT->DEPENDENCY"),
                       "service": ("--service", "--service NAME")}.get(where, ("--set", f"--set {where}=VALUE"))
        return Problem(flag, None, where, f"required: give {usage}")
    if err["type"] == "extra_forbidden":
        parent, _ = _model_at(model, loc[:-1])
        allowed = [k for k in _allowed_keys(parent) if k != "type"]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        message = f"unknown key {str(loc[-1])!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                    f"; {model.type_name()} takes {', '.join(allowed)}")
        return Problem(_source(loc, blame, "--set"), None, where, message)
    expected, _ = _model_at(model, loc)
    return Problem(_source(loc, blame, "--set"), None, where, _in_user_words(err, expected))
