"""The sample LLM router: one OpenAI endpoint in front of replicas of the sample LLM server.

``POST /v1/chat/completions`` and ``/v1/completions`` go to the replica with the fewest requests in
flight (round robin among equals) whose circuit breaker lets them through. A replica that answers
429 or 5xx, refuses the connection, times out, or sends nothing of a stream within
``--first-chunk-timeout`` is skipped: the request is retried, after a jittered backoff and within
a retry budget, on the other replica first (fallback), then on any. A stream is committed to a
replica once its first chunk has come; from then on chunks are relayed one by one as they come, and
a replica that fails later ends the client's stream with an error event (its tokens cannot be taken
back): an error event in the stream (a 429 or a 5xx after the 200) is relayed like any other, which is
the failure mode LiteLLM users report, a router that does not fall back once the stream has begun.
``--resume-streams`` (``ROUTER_RESUME_STREAMS=1``) fixes it: the router reads the events it relays,
and when a replica sends an error event or breaks the stream, asks another replica for the same
request and relays only the text the client has not had yet (the answer is the same one only under
deterministic decoding: temperature 0, or a seed, and the same model on every replica).

4xx other than 429 are the client's: passed on, never retried. Each replica has its own breaker:
consecutive failures (5xx, connection errors, timeouts, broken streams; not 429, which is a replica
shedding load, not failing) open it for a cooldown, then one trial request half-opens it.

Replicas come from ``--replica URL`` (repeatable) or, as the stack file hands them over, from every
``REPLICA_<NAME>_URL`` variable (replica ``<name>`` in the metrics).

``GET /metrics``: ``router_requests_total`` (by status), ``router_upstream_requests_total`` (by
replica and status, or ``connect_error``/``timeout``/``broken_stream``), ``router_retries_total``,
``router_fallbacks_total`` (answers from a replica after another failed), ``router_breaker_state``
(0 closed, 1 half-open, 2 open) and ``router_breaker_opened_total`` by replica,
``router_in_flight`` by replica, and ``router_time_to_first_chunk_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sample_stack.llm_metrics import TTFT_BUCKETS
from sample_stack.llm_openai import DONE, error_body, error_event
from sample_stack.resilience import CircuitBreaker, RetryBudget

log = logging.getLogger("llm-router")

PASSED_HEADERS = ("authorization", "content-type", "accept")


@dataclass
class Replica:
    name: str
    url: str
    breaker: CircuitBreaker
    in_flight: int = 0


@dataclass
class Failure:
    """A replica's answer that another replica may do better on."""

    status: int
    body: bytes
    label: str
    headers: dict[str, str] = field(default_factory=dict)


class _BreakerState(Collector):
    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("router_breaker_state", "Breaker: 0 closed, 1 half-open, 2 open", labels=["replica"])
        opened = GaugeMetricFamily("router_breaker_opened_total", "Times the breaker opened", labels=["replica"])
        flight = GaugeMetricFamily("router_in_flight", "Requests in flight", labels=["replica"])
        for r in self.replicas:
            state.add_metric([r.name], int(r.breaker.state))
            opened.add_metric([r.name], r.breaker.opened_count)
            flight.add_metric([r.name], r.in_flight)
        yield from (state, opened, flight)


class Router:
    def __init__(self, replicas: list[tuple[str, str]], args: argparse.Namespace) -> None:
        self.replicas = [Replica(name, url.rstrip("/"), CircuitBreaker(failures=args.breaker_failures,
                                                                       cooldown=args.breaker_cooldown))
                         for name, url in replicas]
        self.budget = RetryBudget(max_retries=args.max_retries, ratio=args.retry_ratio, min_retries=args.min_retries,
                                  base_backoff=args.backoff, max_backoff=args.max_backoff)
        self.first_chunk_timeout = args.first_chunk_timeout
        self.resume_streams = args.resume_streams
        self.timeout = httpx.Timeout(connect=args.connect_timeout, read=args.read_timeout, write=5.0, pool=5.0)
        self.client: httpx.AsyncClient | None = None
        self._turn = itertools.count()
        r = self.registry = CollectorRegistry()
        self.requests = Counter("router_requests", "Client requests by status", ["status"], registry=r)
        self.upstream = Counter("router_upstream_requests", "Requests to replicas by outcome", ["replica", "status"],
                                registry=r)
        self.retries = Counter("router_retries", "Retries of a request on a replica", registry=r)
        self.fallbacks = Counter("router_fallbacks", "Answers from a replica after another failed", registry=r)
        self.resumed = Counter("router_resumed_streams", "Streams resumed on another replica after failing midway",
                               registry=r)
        self.first_chunk = Histogram("router_time_to_first_chunk_seconds", "Request to the first relayed chunk",
                                     registry=r, buckets=TTFT_BUCKETS)
        r.register(_BreakerState(self.replicas))
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.forward, methods=["POST"]),
            Route("/v1/completions", self.forward, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ], lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            self.client = client
            yield

    # ------------------------------------------------------------ choosing a replica
    def _pick(self, tried: list[Replica]) -> Replica | None:
        """The untried replica with the fewest in flight whose breaker lets it through; else any."""
        turn = next(self._turn)
        n = len(self.replicas)
        order = sorted(range(n), key=lambda i: (self.replicas[i] in tried, self.replicas[i].in_flight,
                                                (i - turn) % n))
        for i in order:
            if self.replicas[i].breaker.allow():
                return self.replicas[i]
        return None

    # ------------------------------------------------------------ forwarding
    async def forward(self, request: Request) -> Response:
        body = await request.body()
        try:
            streamed = bool(json.loads(body or b"{}").get("stream"))
        except (ValueError, AttributeError):
            return self._answer(JSONResponse(error_body(400, "the body must be a JSON object"), 400))
        headers = {k: v for k, v in request.headers.items() if k in PASSED_HEADERS}
        started = asyncio.get_running_loop().time()
        self.budget.record_request()
        tried: list[Replica] = []
        last = Failure(503, json.dumps(error_body(503, "no replica is available (every breaker is open)")).encode(),
                       "no_replica")
        attempt = 0
        while (replica := self._pick(tried)) is not None:
            outcome = await self._try(replica, request.url.path, body, headers, streamed, started)
            tried.append(replica)
            if not isinstance(outcome, Failure):
                if attempt:
                    self.fallbacks.inc()
                return self._answer(outcome)
            last = outcome
            attempt += 1
            if not self.budget.try_retry(attempt):
                break
            self.retries.inc()
            await asyncio.sleep(self.budget.backoff(attempt))
        return self._answer(Response(last.body, last.status, headers=last.headers, media_type="application/json"))

    def _answer(self, response: Response) -> Response:
        self.requests.labels(str(response.status_code)).inc()
        return response

    async def _try(self, replica: Replica, path: str, body: bytes, headers: dict[str, str], streamed: bool,
                   started: float) -> Response | Failure:
        assert self.client is not None
        request = self.client.build_request("POST", replica.url + path, content=body, headers=headers)
        replica.in_flight += 1
        handed_over = False
        sent_at = asyncio.get_running_loop().time()
        try:
            try:
                sending = self.client.send(request, stream=True)
                # a stream's first-chunk timeout counts from the request: a replica that holds even its
                # headers back (a slow first byte) is skipped as one that holds its first chunk back
                upstream = await (asyncio.wait_for(sending, self.first_chunk_timeout) if streamed else sending)
            except TimeoutError as exc:
                return self._failed(replica, 504, f"{replica.name} sent nothing within the first-chunk timeout: "
                                                  f"{exc!r}", "timeout")
            except httpx.TimeoutException as exc:
                return self._failed(replica, 504, f"{replica.name} timed out: {exc!r}", "timeout")
            except httpx.HTTPError as exc:
                return self._failed(replica, 502, f"{replica.name} unreachable: {exc!r}", "connect_error")
            status = upstream.status_code
            if status == 429 or status >= 500:
                try:
                    content = await upstream.aread()
                except httpx.HTTPError:
                    content = json.dumps(error_body(status, f"{replica.name} answered {status}")).encode()
                finally:
                    await upstream.aclose()
                self.upstream.labels(replica.name, str(status)).inc()
                if status >= 500:
                    replica.breaker.record_failure()
                else:  # 429: alive and shedding load; it also ends a half-open breaker's trial
                    replica.breaker.record_success()
                kept = {k: v for k, v in upstream.headers.items() if k.lower() == "retry-after"}
                return Failure(status, content, str(status), kept)
            if not streamed or status != 200:
                try:
                    content = await upstream.aread()
                except httpx.TimeoutException as exc:
                    return self._failed(replica, 504, f"{replica.name} timed out: {exc!r}", "timeout")
                except httpx.HTTPError as exc:
                    return self._failed(replica, 502, f"{replica.name} broke its answer: {exc!r}", "broken_stream")
                finally:
                    await upstream.aclose()
                replica.breaker.record_success()
                self.upstream.labels(replica.name, str(status)).inc()
                return Response(content, status, media_type=upstream.headers.get("content-type"))
            chunks = upstream.aiter_raw()
            try:
                left = self.first_chunk_timeout - (asyncio.get_running_loop().time() - sent_at)
                first = await asyncio.wait_for(anext(chunks), max(left, 0.001))
            except (TimeoutError, StopAsyncIteration, httpx.HTTPError) as exc:
                await upstream.aclose()
                label = "timeout" if isinstance(exc, TimeoutError | httpx.TimeoutException) else "broken_stream"
                return self._failed(replica, 504 if label == "timeout" else 502,
                                    f"{replica.name} sent no first chunk: {exc!r}", label)
            self.first_chunk.observe(asyncio.get_running_loop().time() - started)
            handed_over = True
            relay = (self._relay_resuming(replica, upstream, first, chunks, path, body, headers)
                     if self.resume_streams else self._relay(replica, upstream, first, chunks))
            return StreamingResponse(relay, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        finally:
            if not handed_over:
                replica.in_flight -= 1

    def _failed(self, replica: Replica, status: int, message: str, label: str) -> Failure:
        log.warning("%s", message)
        replica.breaker.record_failure()
        self.upstream.labels(replica.name, label).inc()
        return Failure(status, json.dumps(error_body(status, message)).encode(), label)

    async def _relay(self, replica: Replica, upstream: httpx.Response, first: bytes,
                     chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            yield first
            try:
                async for chunk in chunks:
                    yield chunk
            except httpx.HTTPError as exc:
                log.warning("%s broke a stream: %r", replica.name, exc)
                replica.breaker.record_failure()
                self.upstream.labels(replica.name, "broken_stream").inc()
                yield error_event(f"the replica {replica.name} failed in the middle of the stream", 502)
                return
            replica.breaker.record_success()
            self.upstream.labels(replica.name, "200").inc()
        finally:
            replica.in_flight -= 1
            await upstream.aclose()

    async def _relay_resuming(self, replica: Replica, upstream: httpx.Response, first: bytes,
                              chunks: AsyncIterator[bytes], path: str, body: bytes,
                              headers: dict[str, str]) -> AsyncIterator[bytes]:
        """Relay event by event; when ``replica`` fails midway, go on from another replica's answer to
        the same request, less the text already relayed."""
        framer = EventFramer()
        sent = 0  # characters of text the client has had
        failure = ""
        try:
            try:
                async for raw in _prepend(first, chunks):
                    for event in framer.feed(raw):
                        if is_error_event(event):
                            failure = "error_event"
                            break
                        sent += len(event_text(event))
                        yield event
                    if failure:
                        break
            except httpx.HTTPError as exc:
                failure = "broken_stream"
                log.warning("%s broke a stream: %r", replica.name, exc)
            if not failure:
                if framer.rest:
                    yield framer.rest
                replica.breaker.record_success()
                self.upstream.labels(replica.name, "200").inc()
                return
            replica.breaker.record_failure()
            self.upstream.labels(replica.name, failure).inc()
        finally:
            replica.in_flight -= 1
            await upstream.aclose()
        async for event in self._resume(replica, path, body, headers, sent):
            yield event

    async def _resume(self, failed: Replica, path: str, body: bytes, headers: dict[str, str],
                      skip: int) -> AsyncIterator[bytes]:
        """Another replica's stream for the same request, its first ``skip`` characters of text left out."""
        assert self.client is not None
        other = self._pick([failed])
        if other is None or other is failed:
            yield error_event(f"the replica {failed.name} failed in the middle of the stream", 502) + DONE
            return
        self.retries.inc()
        other.in_flight += 1
        try:
            async with self.client.stream("POST", other.url + path, content=body, headers=headers) as upstream:
                if upstream.status_code != 200:
                    self.upstream.labels(other.name, str(upstream.status_code)).inc()
                    yield error_event(f"{failed.name} failed midway and {other.name} answered "
                                      f"{upstream.status_code}", 502) + DONE
                    return
                framer = EventFramer()
                async for raw in upstream.aiter_raw():
                    for event in framer.feed(raw):
                        if skip and not is_error_event(event):
                            event, skip = skip_text(event, skip)
                        if event:
                            yield event
            self.upstream.labels(other.name, "200").inc()
            self.resumed.inc()
            self.fallbacks.inc()
        except httpx.HTTPError as exc:
            other.breaker.record_failure()
            self.upstream.labels(other.name, "broken_stream").inc()
            yield error_event(f"{failed.name} failed midway and {other.name} too: {exc!r}", 502)
        finally:
            other.in_flight -= 1

    async def models(self, request: Request) -> Response:
        assert self.client is not None
        for replica in sorted(self.replicas, key=lambda r: int(r.breaker.state)):
            try:
                upstream = await self.client.get(replica.url + "/v1/models")
            except httpx.HTTPError:
                continue
            if upstream.status_code == 200:
                return Response(upstream.content, 200, media_type="application/json")
        return JSONResponse(error_body(503, "no replica answered"), 503)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "replicas": {r.name: int(r.breaker.state) for r in self.replicas}})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")


class EventFramer:
    """Cuts a byte stream into server-sent events (each ending in a blank line)."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.rest += data
        *events, self.rest = re.split(rb"(?<=\n\n)", self.rest)
        return [e for e in events if e]


async def _prepend(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in chunks:
        yield chunk


def _payload(event: bytes) -> dict | None:
    if not event.startswith(b"data:") or event.startswith(b"data: [DONE]"):
        return None
    try:
        payload = json.loads(event[5:])
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def is_error_event(event: bytes) -> bool:
    payload = _payload(event)
    return payload is not None and "error" in payload


def event_text(event: bytes) -> str:
    """The text an OpenAI chunk carries (chat: ``delta.content``; completions: ``text``)."""
    payload = _payload(event)
    choices = (payload or {}).get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def skip_text(event: bytes, skip: int) -> tuple[bytes, int]:
    """The event less its first ``skip`` characters of text (b"" when nothing else is left in it), and
    how many characters are still to skip after it."""
    text = event_text(event)
    payload = _payload(event)
    if payload is None or not text:
        return event, skip
    choice = payload["choices"][0]
    kept = text[skip:]
    left = max(0, skip - len(text))
    if "delta" in choice:
        choice["delta"] = {"content": kept} if kept else {}
    else:
        choice["text"] = kept
    if not kept and choice.get("finish_reason") is None and not payload.get("usage"):
        return b"", left
    return f"data: {json.dumps(payload)}\n\n".encode(), left


def replicas_from(urls: list[str], environ: dict[str, str]) -> list[tuple[str, str]]:
    """``--replica`` URLs (named by their host and port), else every ``REPLICA_<NAME>_URL`` variable."""
    if urls:
        return [(re.sub(r"^https?://", "", u).rstrip("/"), u) for u in urls]
    found = [(m.group(1).lower().replace("_", "-"), value) for key, value in environ.items()
             if (m := re.fullmatch(r"REPLICA_(\w+?)_URL", key)) and value]
    return [("replica-" + name, url) for name, url in sorted(found)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default=env("ROUTER_HOST", "127.0.0.1"))
    p.add_argument("--replica", action="append", default=[], help="a replica's base URL (repeatable)")
    p.add_argument("--first-chunk-timeout", type=float, default=float(env("ROUTER_FIRST_CHUNK_TIMEOUT", "5.0")),
                   help="seconds a replica may take to send a stream's first chunk before the request moves on")
    p.add_argument("--connect-timeout", type=float, default=float(env("ROUTER_CONNECT_TIMEOUT", "1.0")))
    p.add_argument("--read-timeout", type=float, default=float(env("ROUTER_READ_TIMEOUT", "30.0")),
                   help="seconds without a byte from a replica (a non-streamed answer comes whole)")
    p.add_argument("--max-retries", type=int, default=int(env("ROUTER_MAX_RETRIES", "2")))
    p.add_argument("--retry-ratio", type=float, default=float(env("ROUTER_RETRY_RATIO", "0.5")),
                   help="retries may add at most this share of the last 10 s of requests")
    p.add_argument("--min-retries", type=int, default=int(env("ROUTER_MIN_RETRIES", "10")))
    p.add_argument("--backoff", type=float, default=float(env("ROUTER_BACKOFF", "0.02")), help="base backoff, s")
    p.add_argument("--max-backoff", type=float, default=float(env("ROUTER_MAX_BACKOFF", "0.5")))
    p.add_argument("--breaker-failures", type=int, default=int(env("ROUTER_BREAKER_FAILURES", "3")))
    p.add_argument("--resume-streams", action="store_true", default=env("ROUTER_RESUME_STREAMS") == "1",
                   help="a stream that fails midway goes on from another replica's answer (same text only under "
                        "deterministic decoding)")
    p.add_argument("--breaker-cooldown", type=float, default=float(env("ROUTER_BREAKER_COOLDOWN", "2.0")))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s llm-router %(levelname)s %(message)s")
    replicas = replicas_from(args.replica, dict(os.environ))
    if not replicas:
        raise SystemExit("no replicas: give --replica URL or set REPLICA_<NAME>_URL")
    disable_created_metrics()
    router = Router(replicas, args)
    log.info("routing to %s", ", ".join(f"{n} ({u})" for n, u in replicas))
    uvicorn.run(router.app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, backlog=2048, timeout_keep_alive=30, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
