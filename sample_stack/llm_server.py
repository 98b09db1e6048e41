"""The sample LLM server: a small torch causal LM behind continuous batching and an OpenAI API.

Endpoints (OpenAI-compatible, as vLLM serves them):
  POST /v1/chat/completions   {"messages": [...], "max_tokens"|"max_completion_tokens", "stream", ...}
  POST /v1/completions        {"prompt": "..." | [token ids], "max_tokens", "stream", ...}
                              Both stream server-sent events with ``"stream": true`` (usage in a last
                              chunk with ``"stream_options": {"include_usage": true}``), else answer
                              one JSON object. Also: temperature (0: greedy), seed, stop, ignore_eos.
                              400 when prompt + max_tokens exceed the context (--max-model-len), or
                              for a bad field; 404 for another model name; 429 with Retry-After when
                              the admission queue (--max-waiting) is full; 503 while the engine is dead.
  GET  /v1/models             the one model served (--model-name)
  GET  /health                200 while the engine loop runs; 503 before the model is loaded and
                              after the engine died, although the HTTP front still answers
  GET  /metrics               Prometheus text, vLLM's metric names (see llm_metrics)
  /admin/faults               GET the fault state, POST to set, DELETE to clear (FAULT HOOKS below)

Continuous batching, the KV-cache budget and preemption: see llm_engine. A chat prompt is its
messages' words plus one role token each and one for the answer; ``usage`` counts those tokens.

FAULT HOOKS (the protocol of the sample model server, aichaos/faults/hooks.py): off unless
``--enable-faults`` (LLM_FAULTS_ENABLED=1); every call needs ``Authorization: Bearer <token>``
(--faults-token, LLM_FAULTS_TOKEN). GET answers every key's current value; POST a JSON object with
any of them sets those; DELETE clears all:
  slowdown: float ≥ 1           every engine step takes this many times as long (prefill and decode)
  decode_delay_ms: float ≥ 0    each decode step waits this long more: every token of every stream later
  stall_after_tokens: int|null  each stream pauses after its Nth token (null: off) ...
  stall_ms: float ≥ 0           ... for this long, while the rest of the batch goes on (default 5000)
  hang: bool                    the engine takes no step: streams freeze and requests wait; /health
                                stays 200, as a hung engine's does
  error_fraction: 0..1          this share of requests fail ...
  error_status: int             ... answering this status at once (default 500) ...
  error_midstream: bool         ... or, when streamed, after a few tokens with an error event (then
                                [DONE], as vLLM ends a stream that failed)
  kv_cache_blocks: int|null     the KV-cache budget in blocks of --block-size tokens (null: the full
                                budget); running sequences over it are preempted
  crash: bool                   true: the engine loop dies (requests in flight fail; /health 503, new
                                requests 503) while the HTTP front stays up; false: start it again
  unload: bool                  true: free the weights and the KV cache; the next request waits for
                                a cold start; false: load again now
  cold_start_ms: float ≥ 0      how long a load after an unload takes at least (default 2000)
aichaos reverts a fault by posting back the values GET gave before it, so each key's GET value,
posted, restores it (``crash: false`` restarts a dead engine, ``unload: false`` loads the model).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import torch
import uvicorn
from prometheus_client import disable_created_metrics
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sample_stack.llm_engine import Engine, EngineConfig, EngineDead, Output, QueueFull, SamplingParams, Sequence
from sample_stack.llm_metrics import LLMMetrics
from sample_stack.llm_model import EOS
from sample_stack.llm_openai import (
    DONE,
    Answer,
    BadRequest,
    ChatRequest,
    CompletionRequest,
    error_body,
    error_event,
    parse,
)

log = logging.getLogger("llm-server")


class FaultUpdate(BaseModel):
    """A POST to the fault hooks: the keys it names, checked."""

    model_config = ConfigDict(extra="forbid")
    slowdown: float | None = Field(None, ge=1)
    decode_delay_ms: float | None = Field(None, ge=0)
    stall_after_tokens: int | None = Field(None, ge=1)
    stall_ms: float | None = Field(None, ge=0)
    hang: StrictBool | None = None
    error_fraction: float | None = Field(None, ge=0, le=1)
    error_status: int | None = Field(None, ge=400, le=599)
    error_midstream: StrictBool | None = None
    kv_cache_blocks: int | None = Field(None, ge=1)
    crash: StrictBool | None = None
    unload: StrictBool | None = None
    cold_start_ms: float | None = Field(None, ge=0)


class Stream:
    """One request's side of the engine: outputs arrive on the event loop, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Output] = asyncio.Queue()
        self.last: float | None = None  # when its last token reached the front (for the ITL histogram)


def pick_device(choice: str) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


class LLMServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model_name = args.model_name
        self.max_model_len = args.max_model_len
        self.faults_enabled = args.enable_faults
        self.faults_token = args.faults_token
        self.metrics = LLMMetrics(self.model_name)
        config = EngineConfig(model_size=args.model_size, max_model_len=args.max_model_len,
                              max_num_seqs=args.max_num_seqs, max_waiting=args.max_waiting,
                              block_size=args.block_size, kv_cache_blocks=args.kv_cache_blocks,
                              device=pick_device(args.device), seed=args.seed)
        self.engine = Engine(config, self._deliver, self.metrics, cold_start_ms=args.cold_start_ms)
        self.metrics.watch(self.engine)
        self.tokenizer = self.engine.tokenizer
        self.initial_blocks = self.engine.total_blocks
        self.error_fraction = 0.0
        self.error_status = 500
        self.error_midstream = False
        self.rng = random.Random()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.render_metrics, methods=["GET"]),
            Route("/admin/faults", self.admin, methods=["GET", "POST", "DELETE"]),
        ], lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.loop = asyncio.get_running_loop()
        self.engine.start()
        yield
        await asyncio.to_thread(self.engine.stop)

    # ------------------------------------------------------------ engine → event loop
    def _deliver(self, outputs: list[Output]) -> None:
        """On the engine's thread: one wake-up of the event loop per step."""
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(self._dispatch, outputs)
        except RuntimeError:  # the event loop has closed: the server is shutting down, nobody waits
            pass

    def _dispatch(self, outputs: list[Output]) -> None:
        now = self.loop.time() if self.loop is not None else 0.0
        for out in outputs:
            stream = out.seq.context
            assert isinstance(stream, Stream)
            if out.tokens:
                if stream.last is not None:
                    self.metrics.itl.observe(now - stream.last)
                stream.last = now
            if out.finish_reason is not None:
                self.metrics.finished(out.seq)
            stream.queue.put_nowait(out)

    # ------------------------------------------------------------ the OpenAI API
    def _refuse(self, status: int, message: str, reason: str, param: str | None = None,
                headers: dict[str, str] | None = None) -> JSONResponse:
        self.metrics.rejected.labels(reason).inc()
        return JSONResponse(error_body(status, message, param=param), status, headers=headers)

    async def completions(self, request: Request) -> Response:
        response = await self._completions(request)
        self.metrics.http.labels("/v1/completions", "POST", str(response.status_code)).inc()
        return response

    async def chat(self, request: Request) -> Response:
        response = await self._chat(request)
        self.metrics.http.labels("/v1/chat/completions", "POST", str(response.status_code)).inc()
        return response

    async def _completions(self, request: Request) -> Response:
        try:
            body: CompletionRequest = parse(CompletionRequest, await request.body())
        except BadRequest as exc:
            return self._refuse(400, str(exc), "invalid", exc.param)
        if isinstance(body.prompt, str):
            prompt = self.tokenizer.encode(body.prompt)
        else:
            if any(not 0 <= t < self.tokenizer.vocab for t in body.prompt):
                return self._refuse(400, f"prompt token ids must be in [0, {self.tokenizer.vocab})", "invalid",
                                    "prompt")
            prompt = list(body.prompt)
        return await self._generate(body, prompt or [EOS], chat=False, default_max=16)

    async def _chat(self, request: Request) -> Response:
        try:
            body: ChatRequest = parse(ChatRequest, await request.body())
        except BadRequest as exc:
            return self._refuse(400, str(exc), "invalid", exc.param)
        prompt = self.tokenizer.encode_chat([(m.role, m.text) for m in body.messages])
        return await self._generate(body, prompt, chat=True, default_max=None)

    async def _generate(self, body: CompletionRequest | ChatRequest, prompt: list[int], chat: bool,
                        default_max: int | None) -> Response:
        if body.model is not None and body.model != self.model_name:
            return self._refuse(404, f"The model `{body.model}` does not exist.", "model", "model")
        max_tokens = body.requested_tokens or default_max or max(1, self.max_model_len - len(prompt))
        if len(prompt) + max_tokens > self.max_model_len:
            return self._refuse(
                400, f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                     f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the {'messages' if chat else 'prompt'}, "
                     f"{max_tokens} in the completion). Please reduce the length of the "
                     f"{'messages' if chat else 'prompt'} or completion.", "context", "max_tokens")
        fail_after = 0
        if self.error_fraction and self.rng.random() < self.error_fraction:
            if not (self.error_midstream and body.stream):
                return self._refuse(self.error_status, "injected error (fault hooks)", "injected")
            fail_after = self.rng.randint(1, max(1, max_tokens - 1))
        params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, seed=body.seed,
                                ignore_eos=body.ignore_eos, stop=body.stops)
        seq = Sequence(prompt, params, context=Stream())
        try:
            self.engine.add(seq)
        except QueueFull as exc:
            return self._refuse(429, f"Too many requests waiting: {exc}", "queue_full", headers={"Retry-After": "1"})
        except EngineDead as exc:
            return self._refuse(503, f"The engine is not running ({exc})", "engine_dead")
        answer = Answer(chat, self.model_name)
        if body.stream:
            return StreamingResponse(self._events(seq, answer, body.include_usage, fail_after),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await self._collect(seq, answer)

    async def _events(self, seq: Sequence, answer: Answer, include_usage: bool, fail_after: int
                      ) -> AsyncIterator[bytes]:
        stream = seq.context
        assert isinstance(stream, Stream)
        done = False
        sent = 0
        opening = answer.role_chunk() if answer.chat else b""
        try:
            while True:
                out = await stream.queue.get()
                if out.error is not None:
                    done = True
                    yield error_event(out.error, 503 if "engine died" in out.error else 500) + DONE
                    return
                sent += out.tokens
                if fail_after and sent >= fail_after and out.finish_reason is None:
                    yield error_event("injected error in the middle of the stream (fault hooks)") + DONE
                    return
                # as vLLM does, the role goes out with the first token, not before there is one
                chunk = opening + answer.token_chunk(out.text, out.finish_reason)
                opening = b""
                if out.finish_reason is not None:
                    done = True
                    if include_usage:
                        chunk += answer.usage_chunk(len(seq.prompt), len(seq.output))
                    yield chunk + DONE
                    return
                yield chunk
        finally:
            if not done:  # the client left, or a fault cut the stream: free the sequence's slot
                self.engine.abort(seq)

    async def _collect(self, seq: Sequence, answer: Answer) -> Response:
        stream = seq.context
        assert isinstance(stream, Stream)
        try:
            while True:
                out = await stream.queue.get()
                if out.error is not None:
                    status = 503 if "engine died" in out.error else 500
                    return JSONResponse(error_body(status, out.error), status)
                if out.finish_reason is not None:
                    return JSONResponse(answer.complete(seq.text, out.finish_reason, len(seq.prompt),
                                                        len(seq.output)))
        except asyncio.CancelledError:
            self.engine.abort(seq)
            raise

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "aichaos",
             "root": self.model_name, "max_model_len": self.max_model_len}]})

    async def health(self, request: Request) -> Response:
        e = self.engine
        if e.alive:
            return JSONResponse({"status": "ok", "model_loaded": e.loaded})
        reason = "loading the model" if e.dead == "not started" else f"engine dead: {e.dead}"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)

    async def render_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------ fault hooks
    def fault_state(self) -> dict[str, Any]:
        f, e = self.engine.faults, self.engine
        return {"slowdown": f.slowdown, "decode_delay_ms": f.decode_delay_ms,
                "stall_after_tokens": f.stall_after_tokens, "stall_ms": f.stall_ms, "hang": f.hang,
                "error_fraction": self.error_fraction, "error_status": self.error_status,
                "error_midstream": self.error_midstream,
                "kv_cache_blocks": e.total_blocks,
                "crash": not e.alive and e.dead != "not started", "unload": e.unloaded,
                "cold_start_ms": f.cold_start_ms}

    def set_faults(self, update: FaultUpdate) -> None:
        f, e = self.engine.faults, self.engine
        given = update.model_fields_set
        for key in ("slowdown", "decode_delay_ms", "stall_ms", "cold_start_ms", "hang"):
            if key in given:
                value = getattr(update, key)
                if value is None:
                    raise ValueError(f"{key} cannot be null")
                setattr(f, key, value)
        if "stall_after_tokens" in given:
            f.stall_after_tokens = update.stall_after_tokens
        for key in ("error_fraction", "error_status", "error_midstream"):
            if key in given:
                value = getattr(update, key)
                if value is None:
                    raise ValueError(f"{key} cannot be null")
                setattr(self, key, value)
        if "kv_cache_blocks" in given:
            e.set_block_budget(update.kv_cache_blocks if update.kv_cache_blocks is not None else self.initial_blocks)
        if update.unload is True:
            e.unload()
        elif update.unload is False and e.unloaded:
            e.load()
        if update.crash is True:
            e.crash()
        elif update.crash is False:
            e.restart()

    def clear_faults(self) -> None:
        self.set_faults(FaultUpdate(slowdown=1.0, decode_delay_ms=0.0, stall_after_tokens=None, stall_ms=5000.0,
                                    hang=False, error_fraction=0.0, error_status=500, error_midstream=False,
                                    kv_cache_blocks=None, crash=False, unload=False))

    async def admin(self, request: Request) -> Response:
        if not self.faults_enabled:
            return JSONResponse({"error": "fault hooks are disabled (start with --enable-faults)"}, 404)
        if request.headers.get("authorization") != f"Bearer {self.faults_token}":
            return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        if request.method == "DELETE":
            self.clear_faults()
            log.info("faults cleared")
        elif request.method == "POST":
            try:
                update = FaultUpdate.model_validate_json(await request.body() or b"{}")
                self.set_faults(update)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
                known = ", ".join(FaultUpdate.model_fields)
                return JSONResponse({"error": f"{problems} (known keys: {known})"}, 400)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            log.info("faults set: %s", update.model_dump(exclude_unset=True))
        return JSONResponse(self.fault_state())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default=env("LLM_HOST", "127.0.0.1"))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=env("LLM_DEVICE", "auto"))
    p.add_argument("--model-name", default=env("LLM_MODEL_NAME", "aichaos-tiny-lm"))
    p.add_argument("--model-size", choices=["tiny", "small", "base"], default=env("LLM_MODEL_SIZE", "small"))
    p.add_argument("--seed", type=int, default=int(env("LLM_SEED", "1234")), help="the weights' seed")
    p.add_argument("--max-model-len", type=int, default=int(env("LLM_MAX_MODEL_LEN", "512")),
                   help="context length: prompt + max_tokens past it answer 400")
    p.add_argument("--max-num-seqs", type=int, default=int(env("LLM_MAX_NUM_SEQS", "32")),
                   help="sequences in the running batch at most (1: one request at a time)")
    p.add_argument("--max-waiting", type=int, default=int(env("LLM_MAX_WAITING", "64")),
                   help="admission queue length; past it requests answer 429")
    p.add_argument("--block-size", type=int, default=int(env("LLM_BLOCK_SIZE", "16")))
    p.add_argument("--kv-cache-blocks", type=int, default=int(env("LLM_KV_CACHE_BLOCKS", "0")) or None,
                   help="KV-cache budget in blocks (default: max-num-seqs full contexts)")
    p.add_argument("--cold-start-ms", type=float, default=float(env("LLM_COLD_START_MS", "2000")))
    p.add_argument("--threads", type=int, default=int(env("LLM_THREADS", "1")), help="torch threads")
    p.add_argument("--enable-faults", action="store_true", default=env("LLM_FAULTS_ENABLED") == "1")
    p.add_argument("--faults-token", default=env("LLM_FAULTS_TOKEN", ""))
    args = p.parse_args(argv)
    if args.enable_faults and not args.faults_token:
        p.error("--enable-faults needs --faults-token (or LLM_FAULTS_TOKEN)")
    if args.max_num_seqs < 1 or args.max_waiting < 1 or args.block_size < 1 or args.max_model_len < 2:
        p.error("--max-num-seqs, --max-waiting and --block-size must be at least 1, --max-model-len at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s llm-server %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    disable_created_metrics()  # the *_created series only clutter a sample server's page
    server = LLMServer(args)
    log.info("serving %s (%s) on %s:%d", args.model_name, args.model_size, args.host, args.port)
    config = uvicorn.Config(server.app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                            log_level="warning", access_log=False, backlog=2048, timeout_keep_alive=30,
                            timeout_graceful_shutdown=2)
    Front(config, server.engine).run()


class Front(uvicorn.Server):
    """uvicorn, stopping the engine first on SIGTERM/SIGINT: the streams in flight end at once with an
    error event instead of holding the shutdown until uvicorn's grace period cancels them."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.engine.request_stop()
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    main()
