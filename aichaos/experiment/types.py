"""Field types shared by the experiment and stack models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from aichaos.experiment.durations import parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h))+\s*$"},
                              {"type": "number", "minimum": 0}],
                    "description": "a duration: 30s, 2m, 1m30s, 500ms, or seconds as a number"}),
]


class Strict(BaseModel):
    """Base of every file model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)
