"""The sample LLM server's Prometheus metrics, under vLLM's names wherever vLLM has one.

vLLM's: ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (gauges),
``vllm:kv_cache_usage_perc`` (0..1; also as ``vllm:gpu_cache_usage_perc``, its older name, which
dashboards built for vLLM before v0.10 read), ``vllm:num_preemptions_total``,
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``, ``vllm:request_success_total``
(by ``finished_reason``), and histograms ``vllm:time_to_first_token_seconds``,
``vllm:inter_token_latency_seconds`` (each gap between two tokens of a stream, as the front sends
them), ``vllm:request_time_per_output_token_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:request_queue_time_seconds`` and ``vllm:iteration_tokens_total`` (tokens per engine step).
Every vLLM series carries ``model_name``.

The sample server's own: ``llm_batch_size`` (sequences per engine step: above 1 means requests
are batched), ``llm_engine_alive``, ``llm_model_loaded``, ``llm_cold_starts_total``,
``llm_kv_cache_blocks`` (``state`` total or used), ``llm_engine_steps_total``,
``llm_requests_rejected_total`` (by ``reason``) and ``http_requests_total`` (by handler, method and
status, the name vLLM's HTTP instrumentation uses).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sample_stack.llm_engine import Engine, Sequence

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
               1.0, 2.5, 5.0, 7.5, 10.0)
E2E_BUCKETS = (0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class _EngineState(Collector):
    """Gauges and counters read from the engine at scrape time."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine, self.model = engine, model

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        e, labels = self.engine, [self.model]

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, text, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, text, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        yield gauge("vllm:num_requests_running", "Requests in the running batch", e.num_running)
        yield gauge("vllm:num_requests_waiting", "Requests waiting to be admitted", e.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 means full)", e.kv_usage)
        yield gauge("vllm:gpu_cache_usage_perc", "KV-cache usage (1 means full); vLLM's older name", e.kv_usage)
        yield counter("vllm:num_preemptions", "Sequences preempted (to be recomputed)", e.preemptions)
        yield counter("vllm:prompt_tokens", "Prompt tokens prefilled", e.prompt_tokens)
        yield counter("vllm:generation_tokens", "Tokens generated", e.generation_tokens)
        yield gauge("llm_engine_alive", "1 while the engine loop runs", int(e.alive))
        yield gauge("llm_model_loaded", "1 while the model's weights are loaded", int(e.loaded))
        yield counter("llm_cold_starts", "Model loads after an unload", e.cold_starts)
        yield counter("llm_engine_steps", "Engine steps", e.steps)
        blocks = GaugeMetricFamily("llm_kv_cache_blocks", "KV-cache budget in blocks", labels=["state"])
        blocks.add_metric(["total"], e.total_blocks)
        blocks.add_metric(["used"], e.used_blocks)
        yield blocks


class LLMMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r, m = self.registry, ["model_name"]
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token", m, registry=r,
                              buckets=TTFT_BUCKETS).labels(model)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Gap between two tokens of a stream", m,
                             registry=r, buckets=ITL_BUCKETS).labels(model)
        self.tpot = Histogram("vllm:request_time_per_output_token_seconds", "Per request: (E2E - TTFT) / (tokens - 1)",
                              m, registry=r, buckets=ITL_BUCKETS).labels(model)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Request arrival to its last token", m,
                             registry=r, buckets=E2E_BUCKETS).labels(model)
        self.queue = Histogram("vllm:request_queue_time_seconds", "Arrival to first scheduled", m, registry=r,
                               buckets=TTFT_BUCKETS).labels(model)
        self.iteration_tokens = Histogram("vllm:iteration_tokens_total", "Tokens per engine step", m, registry=r,
                                          buckets=TOKEN_BUCKETS).labels(model)
        self.success = Counter("vllm:request_success", "Finished requests by reason", ["model_name", "finished_reason"],
                               registry=r)
        self.batch = Histogram("llm_batch_size", "Sequences computed per engine step", registry=r,
                               buckets=BATCH_BUCKETS)
        self.rejected = Counter("llm_requests_rejected", "Requests refused before generation", ["reason"],
                                registry=r)
        self.http = Counter("http_requests", "HTTP requests", ["handler", "method", "status"], registry=r)

    def watch(self, engine: Engine) -> None:
        self.registry.register(_EngineState(engine, self.model))

    def step(self, batch: int, prefill_tokens: int, decode_tokens: int, seconds: float) -> None:
        """The engine's StepObserver."""
        self.batch.observe(batch)
        self.iteration_tokens.observe(prefill_tokens + decode_tokens)

    def finished(self, seq: Sequence) -> None:
        if seq.finished is None or seq.finish_reason is None:
            return
        self.success.labels(self.model, seq.finish_reason).inc()
        self.e2e.observe(seq.finished - seq.arrival)
        if seq.first_scheduled is not None:
            self.queue.observe(seq.first_scheduled - seq.arrival)
        if seq.first_token is not None:
            self.ttft.observe(seq.first_token - seq.arrival)
            if len(seq.output) > 1:
                self.tpot.observe((seq.finished - seq.first_token) / (len(seq.output) - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
