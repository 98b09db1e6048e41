"""The steady-state hypothesis, SLO by SLO: how each bound of the SLO fared over a run.

The gates decide the verdict (``aichaos.metrics.verdict``); this says, for each bound the windows
were judged by (``Slo.judged_bounds``, the default error bound included), what was measured in each
phase, how many judged windows broke it, and whether it *held*: in a baseline window (before the
method) and in the run's last judged window (after it), Chaos Toolkit's two checks of the hypothesis.
A bound broken only while a fault was on, then restored, holds: a fault is expected to break the SLO,
and whether it did so within limits is what the gates say.

JUnit shows one test case per result (``aichaos.report.formats.junit_xml``). A run can pass its gates
with a result that did not hold (an experiment with no ``recovery_time`` gate that never recovered):
the exit code follows the gates, and the test case shows the SLO that was not restored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aichaos.experiment.model import Bound, Slo
from aichaos.metrics.analysis import Metrics, Window, WindowStatus, limit_of


@dataclass(frozen=True)
class SloResult:
    metric: str  # as the SLO names it: p95_ms, error_rate, service/selector
    limit: str  # the bound as judged: relative parts resolved against the baseline
    held: bool
    values: dict[str, float | None] = field(default_factory=dict)  # by phase: the value judged (None: no data)
    judged: int = 0  # windows with enough requests to judge
    broken: int = 0  # of which broke this bound
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "limit": self.limit, "held": self.held,
                "values": {k: None if v is None else round(v, 6) for k, v in self.values.items()},
                "judged": self.judged, "broken": self.broken, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SloResult:
        return cls(metric=data["metric"], limit=data["limit"], held=bool(data["held"]), values=dict(data["values"]),
                   judged=int(data["judged"]), broken=int(data["broken"]), detail=data.get("detail", ""))


def format_value(metric: str, value: float | None) -> str:
    """A value of ``metric`` as reports show it: ms to 0.1, an error rate as a percentage."""
    if value is None:
        return "n/a"
    if metric == "error_rate":
        return f"{value:.2%}"
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    return f"{value:.4g}"


def _limit_text(metric: str, bound: Bound, upper: float | None, lower: float | None, default: bool) -> str:
    parts = []
    if upper is not None:
        parts.append(f"<= {format_value(metric, upper)}")
    if lower is not None:
        parts.append(f">= {format_value(metric, lower)}")
    text = " and ".join(parts) or "no limit (no baseline value to resolve it against)"
    if bound.baseline_ratio is not None or bound.baseline_delta is not None:
        text += " (relative to the baseline)"
    if default:
        text += " (the default: the SLO names no error rate)"
    return text


def _value(metrics: Metrics, metric: str, lower_only: bool) -> float | None:
    try:
        return metrics.lowest(metric) if lower_only else metrics.get(metric)
    except AttributeError:  # a metric these Metrics do not carry (an LLM one, recorded elsewhere)
        return None


def slo_results(slo: Slo, baseline: Metrics | None, phases: Sequence[tuple[str, Metrics | None]],
                wins: Sequence[Window], baseline_end: int) -> list[SloResult]:
    """One result per judged bound of ``slo``; ``phases`` are (name, metrics) in order and
    ``baseline_end`` is the first second after the baseline phase."""
    judged = [w for w in wins if w.status is not WindowStatus.UNKNOWN]
    out = []
    for metric, bound in slo.judged_bounds().items():
        upper, lower = limit_of(bound, baseline.get(metric) if baseline is not None else None)
        lower_only = upper is None and lower is not None

        def breaks(window: Window, metric: str = metric) -> bool:
            return any(entry.startswith(metric + "=") for entry in window.broken)

        broken = [w for w in judged if breaks(w)]
        before = [w for w in judged if w.end <= baseline_end]
        held_before = any(not breaks(w) for w in before) if before else None
        held_after = not breaks(judged[-1]) if judged else None
        problems = []
        if held_before is False:
            problems.append(f"broken in every judged baseline window ({len(before)})")
        if held_after is False:
            problems.append("still broken in the run's last judged window")
        if not judged:
            problems.append("no window had enough requests to judge it")
        values = {name: None if m is None else _value(m, metric, lower_only) for name, m in phases}
        values = {k: None if v is not None and math.isinf(v) else v for k, v in values.items()}
        detail = f"broken in {len(broken)} of {len(judged)} judged windows"
        if problems:
            detail += "; " + "; ".join(problems)
        out.append(SloResult(metric, _limit_text(metric, bound, upper, lower,
                                                 metric == "error_rate" and slo.error_rate_is_default),
                             held=not problems, values=values, judged=len(judged), broken=len(broken),
                             detail=detail))
    return out
