"""What LLM requests add to a second's bucket, and the LLM metrics of a window.

Every LLM request is recorded in the bucket of the second it started in, like every other request
(``aichaos.metrics.samples``); its stream's measurements (``aichaos.load.openai.StreamResult``) go
into histograms of that bucket, so a window's percentiles come from merged histograms exactly as the
request latencies' do:

- ``ttft``, ``tpot``, ``e2el``: one sample per successful request;
- ``itl``: one sample per gap between consecutive content chunks (many per request);
- ``gap``: one sample per successful streamed request, its longest gap (a stall).

The window's metrics (``LLM_METRICS``): ``ttft_p50_ms``/``_p95_ms``/``_p99_ms`` and the same for
``itl``, ``tpot`` and ``e2el``; ``max_gap_ms``, the longest gap of any stream in the window;
``tokens_per_s``, output tokens of successful requests per second; ``goodput``, requests per second
that met every per-request limit of ``load.goodput`` (every successful one without limits). A
percentile of fewer than ``min_samples`` samples is insufficient data (None), never a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aichaos.metrics.histogram import bucket_of, merge, percentile, value_of

if TYPE_CHECKING:
    from aichaos.load.openai import StreamResult

_COUNTS = ("requests", "streams", "good", "output_tokens", "prompt_tokens", "from_usage", "from_chunks")
_HISTOGRAMS = ("ttft", "itl", "tpot", "e2el", "gap")
_PERCENTILES = (50, 95, 99)
PERCENTILE_METRICS = tuple(f"{h}_p{q}_ms" for h in ("ttft", "itl", "tpot", "e2el") for q in _PERCENTILES)
LLM_METRICS: tuple[str, ...] = (*PERCENTILE_METRICS, "max_gap_ms", "tokens_per_s", "goodput")


def _add(hist: dict[int, int], ms: float) -> None:
    key = bucket_of(ms)
    hist[key] = hist.get(key, 0) + 1


@dataclass
class LlmStats:
    """The LLM requests that started in one second (or a merge of several seconds)."""

    requests: int = 0  # LLM requests, failed ones included
    streams: int = 0  # of which succeeded
    good: int = 0  # of which met the goodput limits
    output_tokens: int = 0
    prompt_tokens: int = 0
    from_usage: int = 0  # successful requests whose token count is the server's usage
    from_chunks: int = 0  # ... whose count is their content chunks (the server sent no usage)
    ttft: dict[int, int] = field(default_factory=dict)
    itl: dict[int, int] = field(default_factory=dict)
    tpot: dict[int, int] = field(default_factory=dict)
    e2el: dict[int, int] = field(default_factory=dict)
    gap: dict[int, int] = field(default_factory=dict)

    def record(self, result: StreamResult) -> None:
        """Add one request's result (in the load process, as the request ends)."""
        self.requests += 1
        if not result.ok:
            return
        self.streams += 1
        self.good += result.good
        self.output_tokens += result.output_tokens
        self.prompt_tokens += result.prompt_tokens or 0
        if result.tokens_from == "usage":
            self.from_usage += 1
        elif result.tokens_from == "chunks":
            self.from_chunks += 1
        if result.ttft_ms is not None:
            _add(self.ttft, result.ttft_ms)
        _add(self.e2el, result.e2el_ms)
        tpot = result.tpot_ms
        if tpot is not None:
            _add(self.tpot, tpot)
        itl = self.itl
        for gap in result.itl_ms:
            key = bucket_of(gap)
            itl[key] = itl.get(key, 0) + 1
        longest = result.max_gap_ms
        if longest is not None:
            _add(self.gap, longest)

    def add(self, other: LlmStats) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _HISTOGRAMS:
            mine: dict[int, int] = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n

    def copy(self) -> LlmStats:
        out = LlmStats()
        out.add(self)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        for name in _HISTOGRAMS:
            out[name] = {str(k): v for k, v in sorted(getattr(self, name).items())}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LlmStats:
        out = cls()
        for name in _COUNTS:
            setattr(out, name, int(data.get(name, 0)))
        for name in _HISTOGRAMS:
            setattr(out, name, {int(k): int(v) for k, v in (data.get(name) or {}).items()})
        return out


def merge_llm(stats: Iterable[LlmStats | None]) -> LlmStats | None:
    """The merge of several seconds' stats; None when none of them had an LLM request."""
    present = [s for s in stats if s is not None]
    if not present:
        return None
    out = LlmStats()
    for name in _COUNTS:
        setattr(out, name, sum(getattr(s, name) for s in present))
    for name in _HISTOGRAMS:
        setattr(out, name, merge(getattr(s, name) for s in present))
    return out


def llm_metrics(stats: LlmStats, seconds: int, min_samples: int = 1) -> dict[str, Any]:
    """The window's LLM metrics (``LLM_METRICS``, each a number or None) and its counts: requests,
    successful streams, output tokens and where their counts came from (``tokens_from``)."""
    out: dict[str, Any] = {}
    for name in ("ttft", "itl", "tpot", "e2el"):
        hist: dict[int, int] = getattr(stats, name)
        enough = sum(hist.values()) >= max(1, min_samples)
        for q in _PERCENTILES:
            out[f"{name}_p{q}_ms"] = percentile(hist, q) if enough else None
    out["max_gap_ms"] = value_of(max(stats.gap)) if stats.gap else None
    out["tokens_per_s"] = stats.output_tokens / seconds if seconds else 0.0
    out["goodput"] = stats.good / seconds if seconds else 0.0
    out["requests"] = stats.requests
    out["streams"] = stats.streams
    out["output_tokens"] = stats.output_tokens
    out["tokens_from"] = {"usage": stats.from_usage, "chunks": stats.from_chunks}
    return out
