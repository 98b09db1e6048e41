"""The experiment file as typed models (see DESIGN.md, "Experiment file")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import AfterValidator, Field, ValidationInfo, create_model, field_validator, model_validator

from aichaos.experiment.llm import Goodput, LlmRequest
from aichaos.experiment.stack import Edge as StackEdge
from aichaos.experiment.types import Duration, Strict
from aichaos.metrics.llm import LLM_METRICS
from aichaos.runtime.registry import RUNTIME_CHOICES

EDGE_PATTERN = r"^[a-z][a-z0-9_-]*->[a-z][a-z0-9_-]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


# ---------------------------------------------------------------- load
class Wait(Strict):
    """Think time between a user's requests, uniform in [min, max]."""

    min: Duration = 0.0
    max: Duration = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> Wait:
        if self.max < self.min:
            raise ValueError("max must not be less than min")
        return self


class RequestSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: str = Field(pattern=r"^/", description="required, except for an llm request (its api's path)")
    weight: int = Field(1, ge=1, le=1000)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json", description="JSON body; strings may hold {{ template }} calls")
    llm: LlmRequest | None = Field(None, description="an OpenAI-compatible request, streamed and measured token "
                                                     "by token (POST to its api's path unless path is given)")

    @model_validator(mode="before")
    @classmethod
    def _llm_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("llm"), dict):
            api = data["llm"].get("api", "chat")
            data = {"method": "POST", "path": "/v1/chat/completions" if api == "chat" else "/v1/completions",
                    **data}
        return data

    @field_validator("json_body")
    @classmethod
    def _templates_parse(cls, value: Any) -> Any:
        from aichaos.load.templates import check_templates

        check_templates(value)
        return value

    @model_validator(mode="after")
    def _llm_body(self) -> RequestSpec:
        if self.llm is not None and self.json_body is not None:
            raise ValueError("an llm request's body comes from its llm block: give llm.extra, not json")
        if self.llm is not None and self.method != "POST":
            raise ValueError("an llm request is a POST")
        return self


class RampShape(Strict):
    """From one level to another, linearly over the span (the phase, or the whole run)."""

    type: Literal["ramp"]
    from_: float = Field(alias="from", ge=0, le=1_000_000,
                         description="level at the start (users, or requests/s with rate)")
    to: float = Field(ge=0, le=1_000_000, description="level at the end")


class StepShape(Strict):
    """A staircase: each level in turn for ``every``; the last one holds."""

    type: Literal["step"]
    levels: list[float] = Field(min_length=1, max_length=10_000, description="users, or requests/s with rate")
    every: Duration

    @field_validator("levels")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("levels must not be negative")
        if any(v > 1_000_000 for v in value):
            raise ValueError("levels are at most 1000000")
        return value

    @field_validator("every")
    @classmethod
    def _whole(cls, value: float) -> float:
        if value < 1 or value != int(value):
            raise ValueError("every must be a whole number of seconds, at least 1s")
        return value


class SpikeShape(Strict):
    """The base level, with ``peak`` from ``at`` for ``for`` seconds into the span."""

    type: Literal["spike"]
    peak: float = Field(ge=0, le=1_000_000, description="users, or requests/s with rate")
    at: Duration = 0.0
    for_: Duration = Field(alias="for")
    base: float | None = Field(None, ge=0, le=1_000_000,
                               description="level outside the spike (default: the load's level)")


Shape = Annotated[RampShape | StepShape | SpikeShape, Field(discriminator="type")]


class Load(Strict):
    """How load is driven. Closed loop by default: ``users`` each send a request, wait for the answer
    and ``wait``. With ``rate`` the users pace themselves to that many requests per second in all
    (Locust's constant throughput), so that a slow service shows as achieved < offered."""

    target: str = Field(description="the stack service that receives the load, or the base URL of a server this "
                                    "run does not start: http(s)://host:port[/prefix]")
    users: int = Field(ge=1, le=10000)
    rate: float | None = Field(None, gt=0, le=1_000_000,
                               description="target requests per second in all (pacing); users must be enough "
                                           "to carry it: users >= rate x latency")
    spawn_rate: float | None = Field(None, gt=0, le=10000,
                                     description="users started per second (default: all at once)")
    shape: Shape | None = Field(None, description="how the level (users, or rate) changes over the run")
    wait: Wait = Field(default_factory=Wait)
    timeout: Duration = Field(10.0, description="per-request timeout; a request past it counts as a timeout")
    requests: list[RequestSpec] = Field(default_factory=list)
    locustfile: str | None = Field(None, description="a locustfile whose User classes drive the load instead "
                                                     "of requests (path relative to this file); still measured")
    workers: int = Field(0, ge=0, le=64, description="0: one load process; N: a Locust master and N workers")
    remote_workers: int = Field(0, ge=0, le=1024, description="workers to wait for that join with "
                                                            "`aichaos worker --master HOST:PORT`")
    master_bind: str = Field("127.0.0.1", description="address the Locust master listens on")
    master_port: int | None = Field(None, ge=1, le=65535, description="the master's port (default: a free one)")
    arrival: Literal["paced", "poisson"] = Field(
        "paced", description="with rate: paced (even gaps) or poisson (exponential gaps, as LLM benchmarks drive "
                             "load); users then caps the requests in flight")
    goodput: Goodput | None = Field(None, description="per-request limits a request must meet to count towards "
                                                      "goodput (LLM requests)")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than 0")
        return value

    @model_validator(mode="after")
    def _source(self) -> Load:
        if self.locustfile is None and not self.requests:
            raise ValueError("give requests (or a locustfile)")
        if self.locustfile is not None and self.requests:
            raise ValueError("give either requests or a locustfile, not both")
        if self.locustfile is not None and self.rate is not None:
            raise ValueError("rate paces the declared requests; a locustfile's users keep their own wait_time")
        if self.rate is not None and (self.wait.min or self.wait.max):
            raise ValueError("give either rate (pacing) or wait (think time), not both")
        if self.arrival == "poisson" and self.rate is None:
            raise ValueError("arrival: poisson needs a rate (requests per second in all)")
        if self.goodput is not None and not any(r.llm for r in self.requests):
            raise ValueError("goodput judges llm requests, and there are none")
        return self

    @property
    def target_is_url(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    @property
    def distributed(self) -> bool:
        return bool(self.workers or self.remote_workers)


class PhaseLoad(Strict):
    """What a phase changes in the load (a load-side fault: a traffic spike, an input surge)."""

    users: int | None = Field(None, ge=1, le=10000)
    rate: float | None = Field(None, gt=0, le=1_000_000)
    shape: Shape | None = None
    requests: list[RequestSpec] | None = Field(None, min_length=1, description="another request mix")


# ---------------------------------------------------------------- SLOs and gates
Metric = Literal["p50_ms", "p95_ms", "p99_ms", "error_rate", "rps",  # of every request
                 # of LLM requests (aichaos.metrics.llm.LLM_METRICS)
                 "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms",
                 "tpot_p50_ms", "tpot_p95_ms", "tpot_p99_ms", "e2el_p50_ms", "e2el_p95_ms", "e2el_p99_ms",
                 "max_gap_ms", "tokens_per_s", "goodput"]
LLM_METRIC_DOC = {
    "ttft": "time to first token: request sent → first chunk with content",
    "itl": "inter-token latency: each gap between consecutive content chunks (AIPerf's 'ITL' is tpot)",
    "tpot": "time per output token: (E2EL − TTFT) / (output tokens − 1), per request",
    "e2el": "end-to-end latency: request sent → last chunk",
    "max_gap_ms": "the longest gap between two chunks of any stream (a stall), ms",
    "tokens_per_s": "output tokens per second of successful LLM requests",
    "goodput": "LLM requests per second that met every load.goodput limit",
}


class Bound(Strict):
    """A limit on one metric: absolute (max/min) and/or relative to the baseline.

    With ``baseline_ratio`` and ``baseline_delta`` both given the limit is the looser of the two:
    ``max(ratio × baseline, baseline + delta)``.
    """

    max: float | None = None
    min: float | None = None
    baseline_ratio: float | None = Field(None, gt=0)
    baseline_delta: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _something(self) -> Bound:
        if self.max is None and self.min is None and self.baseline_ratio is None and self.baseline_delta is None:
            raise ValueError("give at least one of max, min, baseline_ratio, baseline_delta")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError("min is above max: no value could hold")
        return self


def _check_request_metric(metric: str | None, limits: dict[str, float | None]) -> None:
    """Latencies and request rates are never negative, and an error rate is a fraction: a limit
    outside that range is a mistake (it would always or never hold)."""
    for key, value in limits.items():
        if value is None:
            continue
        if value < 0:
            raise ValueError(f"{key} must not be negative ({metric} is never below 0)")
        if metric == "error_rate" and value > 1:
            raise ValueError(f"{key} is a fraction of the requests, from 0 to 1 (0.01 is 1%)")


def _check_selector(text: str) -> str:
    from aichaos.metrics.scrape import parse_selector

    parse_selector(text)
    return text


Selector = Annotated[str, AfterValidator(_check_selector)]
SERVICE_METRICS_DOC = ("scraped service metrics: {service: {metric: bound}}; a metric is a Prometheus name, "
                       'optionally with labels, e.g. model_queue_depth or model_requests_total{status="503"}')


DEFAULT_ERROR_RATE = 0.01  # the error-rate bound of an SLO that names none


def _llm_metric_fields(name: str, kind: type, limits: tuple[str, ...] = ()) -> Any:
    """A base model with an optional ``kind`` field for each LLM metric (``LLM_METRICS``), so that SLOs,
    degradation gates and stop conditions name them like ``p95_ms``; ``limits`` are the fields of
    ``kind`` that must not be negative."""
    fields: dict[str, Any] = {}
    for metric in LLM_METRICS:
        base, _, q = metric.partition("_p")
        doc = LLM_METRIC_DOC.get(metric) or f"p{q.split('_')[0]} of {LLM_METRIC_DOC[base]}, ms"
        fields[metric] = (kind | None, Field(None, description=doc))

    def possible(cls: Any, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            _check_request_metric(info.field_name, {k: getattr(value, k) for k in limits})
        return value

    validators = {"_llm_possible": field_validator(*LLM_METRICS)(possible)} if limits else {}
    return create_model(name, __base__=Strict, __validators__=validators, **fields)


if TYPE_CHECKING:  # to mypy, the bases with the LLM metrics' fields are plain models
    class _SloLlm(Strict): ...

    class _DegradationLlm(Strict): ...

    class _StopLlm(Strict): ...
else:
    _SloLlm = _llm_metric_fields("_SloLlm", Bound, ("max", "min"))


class Slo(_SloLlm):
    p50_ms: Bound | None = None
    p95_ms: Bound | None = None
    p99_ms: Bound | None = None
    error_rate: Bound | None = None
    rps: Bound | None = None
    metrics: dict[str, dict[Selector, Bound]] = Field(default_factory=dict, description=SERVICE_METRICS_DOC)

    @field_validator("p50_ms", "p95_ms", "p99_ms", "error_rate", "rps")
    @classmethod
    def _possible(cls, bound: Bound | None, info: ValidationInfo) -> Bound | None:
        if bound is not None:
            _check_request_metric(info.field_name, {"max": bound.max, "min": bound.min})
        return bound

    def bounds(self) -> dict[str, Bound]:
        """Every bound, by metric: request metrics by name, scraped ones as ``service/selector``."""
        out = {k: v for k, v in self.__dict__.items() if v is not None and k != "metrics"}
        out.update({f"{service}/{selector}": bound for service, series in self.metrics.items()
                    for selector, bound in series.items()})
        return out

    def judged_bounds(self) -> dict[str, Bound]:
        """The bounds a window is judged by: the declared ones, and ``error_rate`` at most
        ``DEFAULT_ERROR_RATE`` when the SLO names no error rate (so an outage never passes by
        omission; ``error_rate: {max: 1.0}`` opts out knowingly)."""
        out = self.bounds()
        out.setdefault("error_rate", Bound(max=DEFAULT_ERROR_RATE))
        return out

    @property
    def error_rate_is_default(self) -> bool:
        return self.error_rate is None


class SteadyState(Strict):
    window: Duration = Field(5.0, description="length of the rolling window (steps 1 s)")
    min_requests: int = Field(20, ge=1, le=1_000_000,
                              description="a window with fewer requests is 'unknown', not healthy; a latency "
                                          "percentile of fewer successful requests is insufficient data (the p95 "
                                          "of fewer than 20 is their maximum)")
    warmup: Duration = Field(2.0, description="seconds at the start of the baseline that are discarded")
    slo: Slo

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value < 1 or value != int(value):
            raise ValueError("window must be a whole number of seconds, at least 1s")
        return value

    @model_validator(mode="after")
    def _has_slo(self) -> SteadyState:
        if not self.slo.bounds():
            raise ValueError("slo needs at least one metric")
        return self


class MaxDuration(Strict):
    max: Duration


class RatioLimit(Strict):
    max_ratio: float | None = Field(None, gt=0)
    max_delta: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _something(self) -> RatioLimit:
        if self.max_ratio is None and self.max_delta is None:
            raise ValueError("give max_ratio and/or max_delta")
        return self


if not TYPE_CHECKING:
    _DegradationLlm = _llm_metric_fields("_DegradationLlm", RatioLimit)


class Degradation(_DegradationLlm):
    p50_ms: RatioLimit | None = None
    p95_ms: RatioLimit | None = None
    p99_ms: RatioLimit | None = None
    error_rate: RatioLimit | None = None
    metrics: dict[str, dict[Selector, RatioLimit]] = Field(
        default_factory=dict, description="scraped service metrics, like the SLO's: the fault phase's value "
                                          "against the baseline's")

    def limits(self) -> dict[str, RatioLimit]:
        """Every limit, by metric: request metrics by name, scraped ones as ``service/selector``."""
        out = {k: v for k, v in self.__dict__.items() if v is not None and k != "metrics"}
        out.update({f"{service}/{selector}": limit for service, series in self.metrics.items()
                    for selector, limit in series.items()})
        return out


class Gates(Strict):
    recovery_time: MaxDuration | None = Field(None, description="every fault's time to recover")
    detect_time: MaxDuration | None = Field(None, description="every fault's time to detect")
    degradation: Degradation | None = None
    baseline_steady: bool = Field(True, description="fail when the baseline never reaches steady state")


class Threshold(Strict):
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(0.0, alias="for")

    @model_validator(mode="after")
    def _something(self) -> Threshold:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above and below")
        return self


if not TYPE_CHECKING:
    _StopLlm = _llm_metric_fields("_StopLlm", Threshold, ("above", "below"))


class StopCondition(_StopLlm):
    p50_ms: Threshold | None = None
    p95_ms: Threshold | None = None
    p99_ms: Threshold | None = None
    error_rate: Threshold | None = None
    metrics: dict[str, dict[Selector, Threshold]] = Field(default_factory=dict, description=SERVICE_METRICS_DOC)

    @field_validator("p50_ms", "p95_ms", "p99_ms", "error_rate")
    @classmethod
    def _possible(cls, threshold: Threshold | None, info: ValidationInfo) -> Threshold | None:
        if threshold is not None:
            _check_request_metric(info.field_name, {"above": threshold.above, "below": threshold.below})
        return threshold

    @model_validator(mode="after")
    def _one(self) -> StopCondition:
        if len(self.conditions()) != 1:
            raise ValueError("each stop condition names exactly one metric")
        return self

    def conditions(self) -> dict[str, Threshold]:
        """The condition by metric: request metrics by name, scraped ones as ``service/selector``."""
        out = {k: v for k, v in self.__dict__.items() if v is not None and k != "metrics"}
        out.update({f"{service}/{selector}": t for service, series in self.metrics.items()
                    for selector, t in series.items()})
        return out


# ---------------------------------------------------------------- faults
class FaultSpec(Strict):
    """What every fault of the experiment format is. A subclass with a ``type`` literal is a fault
    type: defining it here adds it to the ``Fault`` union below, and a module of ``aichaos.faults``
    registers how it is checked, applied and reverted (``aichaos.faults.registry``)."""

    MODELS: ClassVar[list[type[FaultSpec]]] = []  # every fault type, in the order defined
    if TYPE_CHECKING:
        type: str  # each subclass declares it as a Literal

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "type" in cls.model_fields:
            FaultSpec.MODELS.append(cls)

    @classmethod
    def type_name(cls) -> str:
        """The ``type`` this model is written with in an experiment file."""
        return str(get_args(cls.model_fields["type"].annotation)[0])


class _EdgeFault(FaultSpec):
    edge: str = Field(pattern=EDGE_PATTERN, description="<dependent>-><dependency>, e.g. gateway->model-server")
    stream: Literal["downstream", "upstream"] = "downstream"
    toxicity: float = Field(1.0, ge=0, le=1)


class LatencyFault(_EdgeFault):
    type: Literal["latency"]
    latency_ms: int = Field(ge=0, le=3_600_000)
    jitter_ms: int = Field(0, ge=0, le=3_600_000)


class BandwidthFault(_EdgeFault):
    type: Literal["bandwidth"]
    rate_kbps: int = Field(ge=0, le=100_000_000, description="KB/s")


class TimeoutFault(_EdgeFault):
    type: Literal["timeout"]
    timeout_ms: int = Field(0, ge=0, le=3_600_000, description="close after this long; 0 holds the data forever")


class ResetPeerFault(_EdgeFault):
    type: Literal["reset_peer"]
    timeout_ms: int = Field(0, ge=0, le=3_600_000)


class DownFault(FaultSpec):
    type: Literal["down"]
    edge: str = Field(pattern=EDGE_PATTERN)


class RetryStormFault(FaultSpec):
    """Latency on a dependency edge past the dependent's own timeout, so that it times out and
    retries: measured as retry amplification (upstream calls per client request)."""

    type: Literal["retry_storm"]
    edge: str = Field(pattern=EDGE_PATTERN)
    latency_ms: int = Field(ge=1, le=3_600_000, description="above the dependent's call timeout")



# ---------------------------------------------------------------- HTTP and stream faults
class _HttpFault(FaultSpec):
    """A fault on the requests of an HTTP edge (``scheme: http``), made by the builtin fault proxy."""

    edge: str = Field(pattern=EDGE_PATTERN, description="<dependent>-><dependency>, an edge with scheme: http")
    fraction: float = Field(1.0, gt=0, le=1, description="the share of requests it acts on")
    path: str = Field("", pattern=r"^(/.*)?$", max_length=1000,
                      description="only requests whose path starts with this (default: all)")
    method: Literal["", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = Field(
        "", description="only requests with this method (default: all)")


class HttpErrorFault(_HttpFault):
    """A share of requests answered with ``status`` by the proxy, without reaching the service."""

    type: Literal["http_error"]
    status: int = Field(503, ge=400, le=599)
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After on 429 and 503 (0: none)")


class FirstByteDelayFault(_HttpFault):
    """The response's first byte (an LLM's first token) held for ``delay_ms``; the rest untouched."""

    type: Literal["first_byte_delay"]
    delay_ms: int = Field(ge=1, le=3_600_000)


class StreamStallFault(_HttpFault):
    """After ``after_events`` server-sent events, the stream held for ``stall_ms``, then it goes on."""

    type: Literal["stream_stall"]
    after_events: int = Field(ge=0, le=1_000_000)
    stall_ms: int = Field(ge=1, le=3_600_000)


class StreamThrottleFault(_HttpFault):
    """At most ``events_per_s`` server-sent events a second (inter-token latency up)."""

    type: Literal["stream_throttle"]
    events_per_s: int = Field(ge=1, le=1_000_000)


class StreamTruncateFault(_HttpFault):
    """After ``after_events`` events the stream ends without the rest, its final event included:
    ``close`` cuts the connection, ``end`` ends the body well framed (a 200 that looks complete)."""

    type: Literal["stream_truncate"]
    after_events: int = Field(ge=0, le=1_000_000)
    mode: Literal["close", "end"] = "close"


class StreamCorruptFault(_HttpFault):
    """Event ``after_events`` + 1 replaced with malformed data, or an error event inserted before it."""

    type: Literal["stream_corrupt"]
    after_events: int = Field(ge=0, le=1_000_000)
    mode: Literal["malformed", "error"] = "malformed"
    status: int = Field(500, ge=400, le=599, description="the error event's code (mode: error), e.g. 429: a rate "
                                                         "limit that arrives after the stream began")


# ---------------------------------------------------------------- AI faults
class _ServiceFault(FaultSpec):
    service: str = Field(description="the stack service it acts on")


class InferenceSlowdownFault(_ServiceFault):
    """Inference takes ``factor`` times as long (through the service's fault hooks)."""

    type: Literal["inference_slowdown"]
    factor: float = Field(gt=1, le=1000)


class InferenceErrorsFault(_ServiceFault):
    """A share of requests answer an error status (through the fault hooks)."""

    type: Literal["inference_errors"]
    fraction: float = Field(gt=0, le=1)
    status: int = Field(500, ge=400, le=599)


class InferenceHangFault(_ServiceFault):
    """Requests wait until the fault ends or their deadline passes (through the fault hooks)."""

    type: Literal["inference_hang"]


class OomNextBatchFault(_ServiceFault):
    """The next batch fails out of memory: a real CUDA OOM on a GPU (through the fault hooks)."""

    type: Literal["oom_next_batch"]


class KvCachePressureFault(_ServiceFault):
    """The KV-cache budget shrunk to ``blocks`` (hook ``kv_cache_blocks``): preemptions, TTFT and E2E up."""

    type: Literal["kv_cache_pressure"]
    blocks: int = Field(ge=1, le=100_000_000, description="KV-cache blocks left to the engine")


class EngineCrashFault(_ServiceFault):
    """The engine loop dies while the HTTP front stays up (hook ``crash``); the revert starts it again.
    Records the service's "health honesty": how long until its health check said so."""

    type: Literal["engine_crash"]
    health_path: str = Field("/health", pattern=r"^/", description="polled during the phase for a non-2xx")


class ModelUnloadFault(_ServiceFault):
    """The model is unloaded (hook ``unload``); the next request pays a cold start of ``cold_start_ms``."""

    type: Literal["model_unload"]
    cold_start_ms: int = Field(2000, ge=0, le=3_600_000)


class Probe(Strict):
    """A fixed set of inputs sent straight to the service each second; the share whose answer
    differs from what the service answered before the fault is the disagreement rate."""

    path: str = Field("/predict", pattern=r"^/")
    json_body: Any = Field(default_factory=lambda: {"text": "{{ words(lognormal(20, 0.8)) }}"}, alias="json")
    answer: str = Field("label", description="the answer's field that is compared")
    count: int = Field(32, ge=1, le=1000)

    @field_validator("json_body")
    @classmethod
    def _templates_parse(cls, value: Any) -> Any:
        from aichaos.load.templates import check_templates

        check_templates(value)
        return value


class ModelSwapFault(_ServiceFault):
    """Hot-swap the served model version (a bad canary), through the fault hooks; measured by the
    disagreement rate of a probe set against the answers of the version served before."""

    type: Literal["model_swap"]
    version: str = Field(min_length=1, max_length=100)
    probe: Probe = Field(default_factory=lambda: Probe())


class DeviceMemoryPressureFault(_ServiceFault):
    """A co-tenant process takes accelerator memory (host memory on a machine without CUDA)."""

    type: Literal["device_memory_pressure"]
    mb: int | None = Field(None, ge=1, le=10_000_000, description="memory to take, in MiB")
    share: float | None = Field(None, gt=0, le=0.95, description="or this share of the free memory")

    @model_validator(mode="after")
    def _one(self) -> DeviceMemoryPressureFault:
        if (self.mb is None) == (self.share is None):
            raise ValueError("give exactly one of mb and share")
        return self


class PipelineStallFault(_ServiceFault):
    """The service's processes are paused (SIGSTOP; docker pause): a feature pipeline stops refreshing."""

    type: Literal["pipeline_stall"]


class ColdStartFault(_ServiceFault):
    """The service is killed and started again; measured as its time to ready and the errors meanwhile."""

    type: Literal["cold_start"]


class DependencyDownFault(_ServiceFault):
    """Every edge into the service goes down: the dependency is unreachable from all its dependents."""

    type: Literal["dependency_down"]


class InputSurgeFault(FaultSpec):
    """The load shifts to other inputs for the phase: these body fields replace the requests' own."""

    type: Literal["input_surge"]
    json_body: dict[str, Any] = Field(alias="json", min_length=1,
                                      description='e.g. {text: "{{ words(lognormal(300, 0.3)) }}"}')

    @field_validator("json_body")
    @classmethod
    def _templates_parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        from aichaos.load.templates import check_templates

        check_templates(value)
        return value


class TrafficSpikeFault(FaultSpec):
    """The load's level (users, or the paced rate) times ``factor`` for the phase."""

    type: Literal["traffic_spike"]
    factor: float = Field(gt=0, le=1000)


class _ContainerTarget(FaultSpec):
    service: str | None = Field(None, description="the stack service it acts on")
    container: str | None = Field(None, description="a container this run did not start (needs --allow-external)")

    @model_validator(mode="after")
    def _one_target(self) -> _ContainerTarget:
        if (self.service is None) == (self.container is None):
            raise ValueError("give exactly one of service and container")
        return self


class ContainerKillFault(_ContainerTarget):
    """Kill the service with a signal; it is started again (and waited for) on revert."""

    type: Literal["kill"]
    signal: str = Field("SIGKILL", pattern=r"^SIG[A-Z0-9]+$")


class ContainerStopFault(_ContainerTarget):
    """Stop the service gracefully (SIGTERM, then SIGKILL); it is started again on revert."""

    type: Literal["stop"]


class ContainerRestartFault(_ContainerTarget):
    """Restart the service; the revert waits until it is ready again."""

    type: Literal["restart"]


class ContainerPauseFault(_ContainerTarget):
    """Freeze the service (docker pause, SIGSTOP locally); unpaused on revert."""

    type: Literal["pause"]


class ContainerCpuFault(_ContainerTarget):
    """Squeeze the container's CPU with ``docker update`` (docker runtime); restored on revert."""

    type: Literal["cpu"]
    cpus: float = Field(gt=0, le=1024, description="CPUs it may use, e.g. 0.2")


class ContainerMemoryFault(_ContainerTarget):
    """Squeeze the container's memory limit with ``docker update`` (docker runtime); restored on revert."""

    type: Literal["memory"]
    mb: int = Field(ge=6, le=10_000_000, description="memory limit in MiB")


# every FaultSpec subclass defined above, discriminated by its ``type``; define new ones above this line
if TYPE_CHECKING:
    Fault = FaultSpec
else:
    Fault = Annotated[Union[tuple(FaultSpec.MODELS)], Field(discriminator="type")]  # noqa: UP007


class Phase(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    duration: Duration
    faults: list[Fault] = Field(default_factory=list)
    load: PhaseLoad | None = Field(None, description="load changes for this phase only")

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if value < 1 or value != int(value):
            raise ValueError("a phase lasts a whole number of seconds, at least 1s")
        return value


class Correctness(Strict):
    """Golden answers (``aichaos.correctness``): a probe set sent with deterministic decoding before the
    load starts, then every ``every`` during the run, each answer compared with its golden one; the
    share of probes truncated, duplicated, changed, with another finish_reason, with usage that
    disagrees with the text, or failed, are series of ``target`` (``aichaos_golden_truncated`` …,
    ``aichaos_golden_mismatch`` for any of them) for SLOs, stop conditions and degradation gates."""

    target: str | None = Field(None, description="the stack service the probes go to, whose name keys the "
                                                 "series (default: the load's target)")
    api: Literal["chat", "completions"] = "chat"
    model: str = Field(min_length=1, max_length=500, description="the model name the server serves")
    prompts: list[str] = Field(default_factory=list, max_length=1000, description="the probe set; or leave it "
                                                                                  "out and give count and prompt")
    count: int = Field(8, ge=1, le=1000, description="probes drawn from prompt (with the seed) when no prompts")
    prompt: str = Field("{{ words(lognormal(20, 0.5)) }}", description="the template the probes are drawn from")
    max_tokens: int = Field(32, ge=1, le=1_000_000)
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy, the same answer every time")
    seed: int = Field(1234, description="sent with every probe, and the seed of the drawn prompts")
    stream: bool = Field(True, description="stream the answers (a truncated or broken stream shows)")
    every: Duration = Field(1.0, description="how often the probe set is sent")
    timeout: Duration = Field(10.0, description="per probe")
    extra: dict[str, Any] = Field(default_factory=dict, description="more body fields, e.g. {ignore_eos: true}")

    @field_validator("prompt")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        from aichaos.load.templates import check_templates

        check_templates(value)
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: float) -> float:
        if value < 1:
            raise ValueError("every must be at least 1s (the series have one value a second)")
        return value

    @model_validator(mode="after")
    def _reserved(self) -> Correctness:
        reserved = {"model", "stream", "stream_options", "messages", "prompt", "max_tokens", "temperature",
                    "seed"} & set(self.extra)
        if reserved:
            raise ValueError(f"extra must not set {', '.join(sorted(reserved))}: give them as keys of correctness")
        return self


if TYPE_CHECKING:
    RuntimeChoice = str
else:
    RuntimeChoice = Literal[RUNTIME_CHOICES]


class Experiment(Strict):
    version: Literal[1] = Field(description="format version of this file")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    stack: str = Field(description="path of the stack file, relative to this file")
    runtime: RuntimeChoice = "auto"
    edges: dict[Annotated[str, Field(pattern=EDGE_PATTERN)], StackEdge] = Field(
        default_factory=dict, description="edges through the fault proxy, added to the stack's: "
                                          "{'<dependent>-><dependency>': {env: VAR, scheme, port, replace}} (a Compose "
                                          "stack's edges are else inferred from its environment values)")
    toxiproxy_url: str | None = Field(None, pattern=r"^https?://", description="use this Toxiproxy server")
    load: Load
    steady_state: SteadyState
    phases: list[Phase] = Field(min_length=1, max_length=1000)
    gates: Gates = Field(default_factory=lambda: Gates())
    stop_when: list[StopCondition] = Field(default_factory=list)
    correctness: Correctness | None = Field(None, description="golden answers of an OpenAI-compatible service, "
                                                              "compared every second (aichaos_golden_* series)")

    @property
    def correctness_target(self) -> str | None:
        """The service the golden-answer probes go to, or None without a correctness block."""
        if self.correctness is None:
            return None
        return self.correctness.target or self.load.target

    @model_validator(mode="after")
    def _probes_fill_windows(self) -> Experiment:
        if self.correctness is not None and self.correctness.every > self.steady_state.window:
            raise ValueError("correctness.every must be at most steady_state.window: a window without a round of "
                             "golden-answer probes has no value of their series and cannot hold")
        return self

    @model_validator(mode="after")
    def _phases(self) -> Experiment:
        names = [p.name for p in self.phases]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"phase names must be unique; repeated: {', '.join(dupes)}")
        if self.phases[0].faults or self.phases[0].load is not None:
            raise ValueError("the first phase is the baseline and must not inject faults or change the load")
        for phase in self.phases:
            if phase.load is None:
                continue
            if phase.load.rate is not None and self.load.rate is None:
                raise ValueError(f"phase {phase.name!r} sets load.rate, but the load is closed-loop: "
                                 "set load.rate to pace the whole run")
            if phase.load.requests is not None and self.load.locustfile is not None:
                raise ValueError(f"phase {phase.name!r} changes requests, but the load comes from a locustfile")
        for phase in self.phases:
            surges = [f for f in phase.faults if isinstance(f, InputSurgeFault)]
            if surges and self.load.locustfile is not None:
                raise ValueError(f"phase {phase.name!r}: input_surge changes the declared requests, but the load "
                                 "comes from a locustfile")
            if surges and phase.load is not None and phase.load.requests is not None:
                raise ValueError(f"phase {phase.name!r}: give either load.requests or an input_surge fault")
            if len(surges) > 1 or sum(isinstance(f, TrafficSpikeFault) for f in phase.faults) > 1:
                raise ValueError(f"phase {phase.name!r}: at most one input_surge and one traffic_spike")
        return self

    @model_validator(mode="after")
    def _bounded(self) -> Experiment:
        """A run lasts at most a day and its load peaks within Load's own bounds (a shape or a
        traffic_spike can reach past them)."""
        from aichaos.experiment.durations import MAX_DURATION
        from aichaos.load.schedule import plan_load

        if self.duration > MAX_DURATION:
            raise ValueError(f"the phases add up to {self.duration:g}s; a run lasts at most 24h ({MAX_DURATION:g}s)")
        plan = plan_load(self.load, self.phases)
        if self.load.rate is None and plan.peak_users > 10000:
            raise ValueError(f"the load peaks at {plan.peak_users} users (shape and traffic_spike included); "
                             "at most 10000")
        peak_rate = max((level.rate or 0.0) for level in plan.levels)
        if peak_rate > 1_000_000:
            raise ValueError(f"the load peaks at {peak_rate:g} requests/s (shape and traffic_spike included); "
                             "at most 1000000")
        return self

    @model_validator(mode="after")
    def _llm_metrics_need_llm_requests(self) -> Experiment:
        named = set(self.steady_state.slo.bounds())
        named.update(m for c in self.stop_when for m in c.conditions())
        if self.gates.degradation is not None:
            named.update(self.gates.degradation.limits())
        llm_named = sorted(named & set(LLM_METRICS))
        mixes = [self.load.requests] + [p.load.requests for p in self.phases if p.load and p.load.requests]
        if llm_named and not any(r.llm is not None for mix in mixes for r in mix):
            raise ValueError(f"{', '.join(llm_named)} measure llm requests (requests with an llm block), and the "
                             "load sends none")
        return self

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.phases)
