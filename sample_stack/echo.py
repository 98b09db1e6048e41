"""Plain test services for aichaos's own tests and benchmarks: a backend and a frontend calling it.

``python -m sample_stack.echo backend --port P`` answers ``/work`` (optionally sleeping
``?ms=N``) and ``/health``; ``--fail-status N`` makes every ``/work`` answer N while ``/health`` still
says 200 (a service whose readiness lies), and ``--startup-delay S`` waits S seconds before it
listens (a service slow to start, for recovery that includes a restart).
``python -m sample_stack.echo frontend --port P`` forwards ``/work`` to
``$BACKEND_URL`` over a kept-alive connection per thread and answers 502 when the backend fails;
its ``/metrics`` counts requests by status and backend failures, and gauges requests in flight.
With ``BACKEND_FRESH_CONNECTIONS=1`` it opens a new backend connection per request instead, so a
toxic on a share of the connections (``toxicity``) hits that share of the requests.
"""

from __future__ import annotations

import argparse
import http.client
import os
import threading
import time
from urllib.parse import parse_qs, urlsplit

from sample_stack.httpserve import JsonHandler, Server, serve
from sample_stack.prom import Registry

METRICS = Registry()
METRICS.describe("echo_requests_total", "counter", "Requests to /work by status", labelled=True)
METRICS.describe("echo_backend_failures_total", "counter", "Backend calls that failed")
METRICS.describe("echo_in_flight", "gauge", "Requests being served")
_in_flight = [0]
_in_flight_lock = threading.Lock()


def _track(delta: int) -> None:
    with _in_flight_lock:
        _in_flight[0] += delta
        METRICS.set("echo_in_flight", _in_flight[0])


class _PostLikeGet(JsonHandler):
    """POST takes a JSON body (checked, then ignored) and answers like GET."""

    def do_GET(self) -> None:
        self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            self.read_json()
        except ValueError:
            self.send_json(400, {"error": "bad json"})
            return
        self.do_GET()


class Backend(_PostLikeGet):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self.send_json(200, {"ok": True})
            return
        if url.path != "/work":
            self.send_json(404, {"error": "not found"})
            return
        if FAIL_STATUS[0]:
            self.send_json(FAIL_STATUS[0], {"error": "failing on purpose (--fail-status)"})
            return
        ms = float(parse_qs(url.query).get("ms", ["0"])[0])
        if ms > 0:
            time.sleep(ms / 1000)
        self.send_json(200, {"ok": True, "slept_ms": ms})


_local = threading.local()
FAIL_STATUS = [0]


def _backend() -> http.client.HTTPConnection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        url = urlsplit(os.environ["BACKEND_URL"])
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80,
                                          timeout=float(os.environ.get("BACKEND_TIMEOUT", "5")))
        _local.conn = conn
    return conn


class Frontend(_PostLikeGet):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, {"ok": True})
            return
        if self.path == "/metrics":
            self.send_text(200, METRICS.render())
            return
        conn = _backend()
        _track(+1)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            body = response.read()
            status, payload = response.status, {"backend": body.decode(errors="replace")}
            if os.environ.get("BACKEND_FRESH_CONNECTIONS") == "1":
                conn.close()
                _local.conn = None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _local.conn = None
            METRICS.inc("echo_backend_failures_total")
            status, payload = 502, {"error": f"backend failed: {exc}"}
        finally:
            _track(-1)
        METRICS.inc("echo_requests_total", status=str(status))
        self.send_json(status, payload)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["backend", "frontend"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fail-status", type=int, default=0, help="backend: answer /work with this status")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds to wait before listening")
    args = parser.parse_args()
    FAIL_STATUS[0] = args.fail_status
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)
    handler = Backend if args.role == "backend" else Frontend
    serve(Server((args.host, args.port), handler), args.role)


if __name__ == "__main__":
    main()
