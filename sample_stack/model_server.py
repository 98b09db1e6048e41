"""The sample model server: a torch text classifier behind dynamic batching.

Endpoints:
  POST /predict        {"text": "..."} → {"label", "scores", "version", "batch_size", "tokens"}
                       503 when the queue is full, 504 past the request deadline, 500 on a failed batch
  GET  /health         alive
  GET  /ready          model loaded and warmed (503 before)
  GET  /metrics        Prometheus text
  /admin/faults        GET the fault state, POST to set, DELETE to clear (see FAULT HOOKS below)

FAULT HOOKS (a small protocol any model service can implement for aichaos's AI faults): off unless
``--enable-faults`` (or MODEL_FAULTS_ENABLED=1); every call needs ``Authorization: Bearer <token>``
with the token from ``--faults-token`` / MODEL_FAULTS_TOKEN. POST a JSON object with any of:
  slowdown: float ≥ 1       inference takes this many times as long
  error_fraction: 0..1      this share of requests answer ``error_status`` (default 500)
  hang: bool                requests wait (until cleared or their deadline) instead of being served
  memory_mb: int            hold this much extra memory on the model's device (pressure)
  oom_next_batch: bool      the next batch fails with an out-of-memory error (a real CUDA OOM on GPU)
  version: "v1" | "v2"      swap the model version in place
DELETE clears every fault (and restores the version the server started with).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import resource
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from sample_stack.aserve import Request, Response, json_response, serve_async, text_response
from sample_stack.batcher import Batcher, DeadlineExceeded, Job, QueueFull, finish_each
from sample_stack.model import LABELS, batch_tensor, build_model, parameter_count, tokenize
from sample_stack.prom import BATCH_BUCKETS, LATENCY_BUCKETS, Registry

log = logging.getLogger("model-server")


class OutOfMemory(RuntimeError):
    pass


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class Faults:
    def __init__(self, initial_version: str) -> None:
        self.lock = threading.Lock()
        self.initial_version = initial_version
        self.reset()

    def reset(self) -> None:
        self.slowdown = 1.0
        self.error_fraction = 0.0
        self.error_status = 500
        self.hang = False
        self.memory_mb = 0
        self.oom_next_batch = False

    def to_json(self, version: str) -> dict[str, Any]:
        return {"slowdown": self.slowdown, "error_fraction": self.error_fraction, "error_status": self.error_status,
                "hang": self.hang, "memory_mb": self.memory_mb, "oom_next_batch": self.oom_next_batch,
                "version": version}


class ModelService:
    def __init__(self, args: argparse.Namespace) -> None:
        self.device = pick_device(args.device)
        self.version = args.version
        self.metrics = Registry()
        m = self.metrics
        m.describe("model_requests_total", "counter", "Requests by HTTP status", labelled=True)
        m.describe("model_request_seconds", "histogram", "Request latency in the server")
        m.describe("model_batch_size", "histogram", "Requests per inference batch")
        m.describe("model_inference_seconds", "histogram", "Time of one batch's forward pass")
        m.describe("model_queue_depth", "gauge", "Requests waiting for a batch")
        m.describe("model_device_memory_bytes", "gauge", "Memory in use on the model's device")
        m.describe("model_device_memory_free_bytes", "gauge",
                   "Free memory on the model's device (CUDA free memory, or MemAvailable on the host)")
        m.describe("model_info", "gauge", "Model version and device")
        m.describe("model_ready", "gauge", "1 once the model is loaded and warmed")
        self.models = {"v1": build_model("v1", self.device), "v2": build_model("v2", self.device)}
        self.faults = Faults(self.version)
        self.faults_enabled = args.enable_faults
        self.faults_token = args.faults_token
        self.ballast: torch.Tensor | None = None
        self.deadline = args.deadline_ms / 1000
        self.memory_reserve = args.memory_reserve_mb * 2**20
        self.batcher = Batcher(self._run_batch, max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000,
                               max_queue=args.max_queue, on_batch=self._on_batch, deliver=self._deliver)
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first request
        self.ready = False
        log.info("model %s on %s, %d parameters", self.version, self.device, parameter_count(self.models["v1"]))

    def warm_up(self) -> None:
        for n in (1, 8, 64):
            self._forward([tokenize("warm up " * n)] * 4)
        self.ready = True
        self.metrics.set("model_ready", 1)
        log.info("warmed up; ready")

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.observe("model_batch_size", size, BATCH_BUCKETS)
        self.metrics.observe("model_inference_seconds", seconds, LATENCY_BUCKETS)

    def _forward(self, token_lists: Sequence[list[int]]) -> list[dict[str, Any]]:
        model = self.models[self.version]
        with torch.inference_mode():
            probs = torch.softmax(model(batch_tensor(list(token_lists), self.device)), dim=-1).cpu()
        out = []
        for row, tokens in zip(probs.tolist(), token_lists, strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": LABELS[best], "scores": [round(p, 5) for p in row], "tokens": len(tokens)})
        return out

    def _deliver(self, jobs: Sequence[Job], results: Sequence[Any] | None, error: BaseException | None) -> None:
        """On the batcher's thread: hand a whole batch to the event loop in one wake-up."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(finish_each, jobs, results, error)

    def _run_batch(self, token_lists: Sequence[list[int]]) -> list[dict[str, Any]]:
        faults = self.faults
        if faults.oom_next_batch:
            faults.oom_next_batch = False
            self._out_of_memory(len(token_lists))
        if self.memory_reserve and self.device_memory_free() < self.memory_reserve:
            # another tenant took the device's memory: refuse rather than be killed mid-batch
            raise OutOfMemory(f"free {self.device.type} memory below the {self.memory_reserve // 2**20} MiB reserve "
                              f"in a batch of {len(token_lists)}")
        started = time.perf_counter()
        results = self._forward(token_lists)
        if faults.slowdown > 1:
            time.sleep((time.perf_counter() - started) * (faults.slowdown - 1))
        version = self.version
        for r in results:
            r["version"] = version
            r["batch_size"] = len(token_lists)
        return results

    def _out_of_memory(self, size: int) -> None:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            try:  # a real CUDA OOM: ask for more than the device has free
                torch.empty(int(free * 2), dtype=torch.uint8, device=self.device)
            except torch.cuda.OutOfMemoryError as exc:
                raise OutOfMemory(f"CUDA out of memory in a batch of {size}: {str(exc).splitlines()[0]}") from exc
        raise OutOfMemory(f"out of memory in a batch of {size} (simulated on {self.device.type})")

    def device_memory_free(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return 0

    def device_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def set_faults(self, body: dict[str, Any]) -> None:
        faults = self.faults
        allowed = {"slowdown", "error_fraction", "error_status", "hang", "memory_mb", "oom_next_batch", "version"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}")
        with faults.lock:
            if "slowdown" in body:
                value = float(body["slowdown"])
                if value < 1:
                    raise ValueError("slowdown must be >= 1")
                faults.slowdown = value
            if "error_fraction" in body:
                value = float(body["error_fraction"])
                if not 0 <= value <= 1:
                    raise ValueError("error_fraction must be between 0 and 1")
                faults.error_fraction = value
            if "error_status" in body:
                status = int(body["error_status"])
                if not 400 <= status <= 599:
                    raise ValueError("error_status must be a 4xx or 5xx code")
                faults.error_status = status
            if "hang" in body:
                faults.hang = bool(body["hang"])
            if "memory_mb" in body:
                self._set_ballast(int(body["memory_mb"]))
            if "oom_next_batch" in body:
                faults.oom_next_batch = bool(body["oom_next_batch"])
            if "version" in body:
                if body["version"] not in self.models:
                    raise ValueError("version must be v1 or v2")
                self.version = body["version"]

    def clear_faults(self) -> None:
        with self.faults.lock:
            self.faults.reset()
            self._set_ballast(0)
            self.version = self.faults.initial_version

    def _set_ballast(self, mb: int) -> None:
        if mb < 0:
            raise ValueError("memory_mb must be >= 0")
        self.ballast = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if mb:
            # touch every page so the memory is really taken, not just reserved
            self.ballast = torch.ones(mb * 1024 * 1024, dtype=torch.uint8, device=self.device)
        self.faults.memory_mb = mb

    async def predict(self, text: str) -> tuple[int, dict[str, Any]]:
        faults = self.faults
        if faults.hang:
            until = time.monotonic() + self.deadline
            while faults.hang and time.monotonic() < until:
                await asyncio.sleep(0.05)
            if faults.hang:
                return 504, {"error": "hung (fault injected)"}
        if faults.error_fraction and random.random() < faults.error_fraction:
            return faults.error_status, {"error": "injected error"}
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        waiter = self.loop.create_future()
        try:
            job = self.batcher.enqueue(tokenize(text), self.deadline, future=waiter)
        except QueueFull as exc:
            return 503, {"error": str(exc)}
        try:
            return 200, await asyncio.wait_for(waiter, self.deadline)
        except TimeoutError:
            job.abandoned = True
            return 504, {"error": f"no answer within {self.deadline:g}s"}
        except DeadlineExceeded as exc:
            return 504, {"error": str(exc)}
        except OutOfMemory as exc:
            return 507, {"error": str(exc)}
        except Exception as exc:
            log.exception("batch failed")
            return 500, {"error": f"inference failed: {exc}"}

    # ------------------------------------------------------------ HTTP
    def _authorized(self, request: Request) -> Response | None:
        if not self.faults_enabled:
            return json_response(404, {"error": "fault hooks are disabled (start with --enable-faults)"})
        if request.headers.get("authorization") != f"Bearer {self.faults_token}":
            return json_response(401, {"error": "missing or wrong bearer token"})
        return None

    async def handle(self, request: Request) -> Response:
        route = (request.method, request.path)
        if route == ("POST", "/predict"):
            started = time.perf_counter()
            try:
                body = request.json()
            except ValueError as exc:
                return json_response(400, {"error": f"bad JSON: {exc}"})
            text = body.get("text") if isinstance(body, dict) else None
            if not isinstance(text, str):
                status, payload = 400, {"error": "body must be {\"text\": string}"}
            else:
                status, payload = await self.predict(text)
            self.metrics.inc("model_requests_total", status=str(status))
            self.metrics.observe("model_request_seconds", time.perf_counter() - started, LATENCY_BUCKETS)
            return json_response(status, payload)
        if route == ("GET", "/health"):
            return json_response(200, {"status": "alive"})
        if route == ("GET", "/ready"):
            return json_response(200 if self.ready else 503, {"ready": self.ready, "version": self.version})
        if route == ("GET", "/metrics"):
            m = self.metrics
            m.set("model_queue_depth", self.batcher.depth)
            m.set("model_device_memory_bytes", self.device_memory(), device=self.device.type)
            m.set("model_device_memory_free_bytes", self.device_memory_free(), device=self.device.type)
            m.set("model_info", 1, version=self.version, device=self.device.type)
            return text_response(200, m.render())
        if request.path == "/admin/faults":
            return self._admin(request)
        return json_response(404, {"error": "not found"})

    def _admin(self, request: Request) -> Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        if request.method == "GET":
            return json_response(200, self.faults.to_json(self.version))
        if request.method == "DELETE":
            self.clear_faults()
            log.info("faults cleared")
            return json_response(200, self.faults.to_json(self.version))
        if request.method != "POST":
            return json_response(404, {"error": "not found"})
        try:
            body = request.json()
        except ValueError as exc:
            return json_response(400, {"error": f"bad JSON: {exc}"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "expected a JSON object"})
        try:
            self.set_faults(body)
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        except (RuntimeError, MemoryError) as exc:
            return json_response(507, {"error": f"could not apply: {exc}"})
        log.info("faults set: %s", body)
        return json_response(200, self.faults.to_json(self.version))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default=env("MODEL_HOST", "127.0.0.1"))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=env("MODEL_DEVICE", "auto"))
    p.add_argument("--version", choices=["v1", "v2"], default=env("MODEL_VERSION", "v1"))
    p.add_argument("--max-batch", type=int, default=int(env("MODEL_MAX_BATCH", "32")))
    p.add_argument("--max-wait-ms", type=float, default=float(env("MODEL_MAX_WAIT_MS", "5")))
    p.add_argument("--max-queue", type=int, default=int(env("MODEL_MAX_QUEUE", "256")))
    p.add_argument("--deadline-ms", type=float, default=float(env("MODEL_DEADLINE_MS", "5000")))
    p.add_argument("--threads", type=int, default=int(env("MODEL_THREADS", "1")))
    p.add_argument("--memory-reserve-mb", type=int, default=int(env("MODEL_MEMORY_RESERVE_MB", "0")),
                   help="refuse batches (507) while the device's free memory is below this; 0: never")
    p.add_argument("--enable-faults", action="store_true", default=env("MODEL_FAULTS_ENABLED") == "1")
    p.add_argument("--faults-token", default=env("MODEL_FAULTS_TOKEN", ""))
    args = p.parse_args(argv)
    if args.enable_faults and not args.faults_token:
        p.error("--enable-faults needs --faults-token (or MODEL_FAULTS_TOKEN)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    service = ModelService(args)
    serve_async(args.host, args.port, service.handle, "model-server",
                on_start=lambda: threading.Thread(target=service.warm_up, daemon=True).start(),
                on_stop=service.batcher.stop)


if __name__ == "__main__":
    main()
