"""The sample gateway: the stack's public API.

``POST /predict {"entity_id": ..., "text": ...}`` reads the entity's features from Redis, calls the
model server (per-call timeout, retries within a budget with jittered backoff, a circuit breaker),
and answers the model's label, or a fallback marked ``"degraded": true`` when the model is
unavailable. Features that cannot be read (Redis down) are reported as missing, not fatal.

``GET /metrics`` exposes client requests against upstream calls (retry amplification), retries,
breaker state, fallbacks served, feature reads and errors, and feature staleness.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis

from sample_stack.httpserve import JsonHandler, Server, serve
from sample_stack.prom import LATENCY_BUCKETS, Registry
from sample_stack.resilience import CircuitBreaker, RetryBudget

log = logging.getLogger("gateway")

RETRYABLE = {500, 502, 503, 504, 507}


class Gateway:
    def __init__(self, args: argparse.Namespace) -> None:
        model = urlsplit(args.model_url)
        self.model_host, self.model_port = model.hostname or "127.0.0.1", model.port or 80
        self.model_timeout = args.model_timeout
        self.redis = redis.Redis.from_url(args.redis_url, socket_timeout=args.redis_timeout,
                                          socket_connect_timeout=args.redis_timeout, decode_responses=True,
                                          retry=None)
        self.budget = RetryBudget(max_retries=args.max_retries, ratio=args.retry_ratio)
        self.breaker = CircuitBreaker(failures=args.breaker_failures, cooldown=args.breaker_cooldown)
        self.local = threading.local()
        self.metrics = Registry()
        m = self.metrics
        for name, kind, text in (
            ("gateway_requests_total", "counter", "Client requests by outcome"),
            ("gateway_upstream_calls_total", "counter", "Calls to the model server, retries included"),
            ("gateway_retries_total", "counter", "Retries of model calls"),
            ("gateway_fallbacks_total", "counter", "Degraded fallback answers served"),
            ("gateway_breaker_state", "gauge", "Model breaker: 0 closed, 1 half-open, 2 open"),
            ("gateway_breaker_opened_total", "counter", "Times the breaker opened"),
            ("gateway_feature_errors_total", "counter", "Feature reads that failed (Redis unreachable)"),
            ("gateway_feature_staleness_seconds", "gauge", "Age of the newest feature refresh"),
            ("gateway_retry_amplification", "gauge", "Upstream calls per client request, all time"),
            ("gateway_request_seconds", "histogram", "Client request latency"),
        ):
            m.describe(name, kind, text, labelled=name == "gateway_requests_total")

    # ------------------------------------------------------------ dependencies
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.model_host, self.model_port, timeout=self.model_timeout)
            self.local.conn = conn
        return conn

    def call_model(self, text: str) -> tuple[int, dict[str, Any]]:
        conn = self._conn()
        body = json.dumps({"text": text})
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.local.conn = None
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
            return 0, {"error": f"{kind}: {exc}"}
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"error": "model answered non-JSON"}
        return response.status, payload

    def features(self, entity: str) -> tuple[dict[str, Any] | None, float | None]:
        try:
            data = self.redis.hgetall(f"features:{entity}")
        except redis.RedisError as exc:
            self.metrics.inc("gateway_feature_errors_total")
            log.debug("feature read failed: %s", exc)
            return None, None
        if not data:
            return {}, None
        features: dict[str, Any] = {str(k): v for k, v in data.items()}
        return features, time.time() - float(features.get("updated_at", 0))

    def staleness(self) -> float:
        try:
            last = self.redis.get("pipeline:last_run")
        except redis.RedisError:
            return -1.0
        return time.time() - float(last) if last else -1.0

    # ------------------------------------------------------------ the endpoint
    def predict(self, entity: str, text: str) -> tuple[int, dict[str, Any]]:
        m = self.metrics
        self.budget.record_request()
        features, staleness = self.features(entity)
        answer: dict[str, Any] = {"entity_id": entity, "features": features,
                                  "feature_staleness_s": None if staleness is None else round(staleness, 3)}
        attempt = 0
        reason = "circuit breaker open"
        while self.breaker.allow():
            m.inc("gateway_upstream_calls_total")
            status, payload = self.call_model(text)
            if status == 200:
                self.breaker.record_success()
                answer.update(label=payload.get("label"), scores=payload.get("scores"),
                              model_version=payload.get("version"), degraded=False)
                return 200, answer
            if status and status not in RETRYABLE:  # the client's fault: pass it on, no retry
                self.breaker.record_success()
                return status, {"error": payload.get("error", "model refused the request")}
            self.breaker.record_failure()
            reason = f"model failed ({status or payload.get('error')})"
            attempt += 1
            if not self.budget.try_retry(attempt):
                break
            m.inc("gateway_retries_total")
            time.sleep(self.budget.backoff(attempt))
        m.inc("gateway_fallbacks_total")
        answer.update(label=None, scores=None, model_version=None, degraded=True, reason=reason)
        return 200, answer

    def render_metrics(self) -> str:
        m = self.metrics
        m.set("gateway_breaker_state", int(self.breaker.state))
        m.set("gateway_breaker_opened_total", self.breaker.opened_count)
        m.set("gateway_feature_staleness_seconds", self.staleness())
        requests = sum(m.get("gateway_requests_total", outcome=o) for o in ("ok", "degraded", "error"))
        m.set("gateway_retry_amplification", m.get("gateway_upstream_calls_total") / requests if requests else 0.0)
        return m.render()


def make_handler(gw: Gateway) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self.send_json(200, {"status": "alive"})
            elif self.path == "/metrics":
                self.send_text(200, gw.render_metrics())
            else:
                self.send_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self.send_json(404, {"error": "not found"})
                return
            started = time.perf_counter()
            try:
                body = self.read_json()
            except ValueError as exc:
                self.send_json(400, {"error": f"bad JSON: {exc}"})
                return
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                status, payload = 400, {"error": "body must be {\"entity_id\": ..., \"text\": string}"}
            else:
                status, payload = gw.predict(str(body.get("entity_id", "")), body["text"])
            self.send_json(status, payload)
            outcome = "error" if status != 200 else ("degraded" if payload.get("degraded") else "ok")
            gw.metrics.inc("gateway_requests_total", outcome=outcome)
            gw.metrics.observe("gateway_request_seconds", time.perf_counter() - started, LATENCY_BUCKETS)

    return Handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="The sample stack's gateway")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default=env("GATEWAY_HOST", "127.0.0.1"))
    p.add_argument("--model-url", default=env("MODEL_URL", "http://127.0.0.1:8000"))
    p.add_argument("--redis-url", default=env("REDIS_URL", "redis://127.0.0.1:6379"))
    p.add_argument("--model-timeout", type=float, default=float(env("MODEL_TIMEOUT", "2.0")))
    p.add_argument("--redis-timeout", type=float, default=float(env("REDIS_TIMEOUT", "0.25")))
    p.add_argument("--max-retries", type=int, default=int(env("GATEWAY_MAX_RETRIES", "2")))
    p.add_argument("--retry-ratio", type=float, default=float(env("GATEWAY_RETRY_RATIO", "0.2")))
    p.add_argument("--breaker-failures", type=int, default=int(env("GATEWAY_BREAKER_FAILURES", "5")))
    p.add_argument("--breaker-cooldown", type=float, default=float(env("GATEWAY_BREAKER_COOLDOWN", "2.0")))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    gw = Gateway(args)
    serve(Server((args.host, args.port), make_handler(gw)), "gateway")


if __name__ == "__main__":
    main()
