"""Field types shared by the experiment and stack models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from aichaos.experiment.durations import MAX_DURATION, parse_duration

_NUMBER = r"\d+(\.\d+)?"
DURATION_PATTERN = rf"^(?=.*\d)\s*({_NUMBER}h)?\s*({_NUMBER}m)?\s*({_NUMBER}s)?\s*({_NUMBER}ms)?\s*$"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": DURATION_PATTERN},
                              {"type": "number", "minimum": 0, "maximum": MAX_DURATION}],
                    "description": "a duration: 30s, 2m, 1m30s, 500ms, or seconds as a number; units largest first, "
                                   "each once; at most 24h"}),
]


class Strict(BaseModel):
    """Base of every file model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)
