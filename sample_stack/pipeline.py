"""The sample feature pipeline: refreshes per-entity features in Redis every period.

Each entity's hash ``features:<id>`` holds a score and ``updated_at``; ``pipeline:last_run`` holds
the time of the last complete refresh. When the pipeline stops (or stalls), features go stale and
the gateway's ``gateway_feature_staleness_seconds`` grows. ``GET /health`` and ``GET /metrics`` on
``--port``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import threading
import time

import redis

from sample_stack.httpserve import JsonHandler, Server, serve
from sample_stack.prom import Registry

log = logging.getLogger("pipeline")


class Pipeline:
    def __init__(self, redis_url: str, entities: int, period: float) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                          decode_responses=True, retry=None)
        self.entities, self.period = entities, period
        self.stop = threading.Event()
        self.metrics = Registry()
        self.metrics.describe("pipeline_runs_total", "counter", "Completed refreshes")
        self.metrics.describe("pipeline_errors_total", "counter", "Refreshes that failed")
        self.metrics.describe("pipeline_last_run_timestamp", "gauge", "Time of the last complete refresh")
        self.rng = random.Random(7)

    def refresh(self) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for entity in range(1, self.entities + 1):
            pipe.hset(f"features:{entity}", mapping={"score": round(self.rng.random(), 4), "updated_at": now})
        pipe.set("pipeline:last_run", now)
        pipe.execute()
        self.metrics.inc("pipeline_runs_total")
        self.metrics.set("pipeline_last_run_timestamp", now)

    def loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except redis.RedisError as exc:
                self.metrics.inc("pipeline_errors_total")
                log.warning("refresh failed: %s", exc)
            self.stop.wait(max(0.0, self.period - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = argparse.ArgumentParser(description="The sample stack's feature pipeline")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--redis-url", default=env("REDIS_URL", "redis://127.0.0.1:6379"))
    p.add_argument("--entities", type=int, default=int(env("PIPELINE_ENTITIES", "1000")))
    p.add_argument("--period", type=float, default=float(env("PIPELINE_PERIOD", "1.0")))
    args = p.parse_args(argv)
    pipeline = Pipeline(args.redis_url, args.entities, args.period)

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                ok = pipeline.metrics.get("pipeline_runs_total") > 0
                self.send_json(200 if ok else 503, {"runs": pipeline.metrics.get("pipeline_runs_total")})
            elif self.path == "/metrics":
                self.send_text(200, pipeline.metrics.render())
            else:
                self.send_json(404, {"error": "not found"})

    threading.Thread(target=pipeline.loop, daemon=True).start()
    serve(Server((args.host, args.port), Handler), "pipeline", on_stop=pipeline.stop.set)


if __name__ == "__main__":
    main()
