"""The sample LLM server's engine: continuous batching over a KV-cache budget, on its own thread.

Every iteration of the engine loop is one step:

1. new requests join the waiting queue, aborted ones (client gone) leave, freeing their blocks;
2. every running sequence gets the KV-cache block its next token needs; when the budget has none
   left, the most recently admitted sequence is preempted: its blocks are freed and it goes back to
   the front of the queue, to be recomputed (its prompt and the tokens it already produced
   prefilled again) when blocks free up, as vLLM does by default;
3. waiting sequences are admitted, first come first served, while a slot and their blocks are free,
   and prefilled together; each one's first token comes out of its prefill;
4. the sequences that were already running decode one token each, in one batched forward pass.

So requests join and leave the running batch at every step. The budget is counted in blocks of
``block_size`` tokens, as in vLLM's paged cache; the storage behind it is a slab with one row per
running sequence (see llm_model), so a block here is a unit of the budget rather than an address.

The engine's faults (``EngineFaults``) are read at every step: a slowdown factor and a delay per
decode step, a stall of each stream after N tokens, a hang (no steps at all), a crash (the loop
raises and stops; every request in flight fails, and ``alive`` turns false until ``restart``) and
an unload (weights and cache freed; the next request waits for a cold start).

Results leave through ``deliver``, called once per step on the engine's thread with every
sequence's new text, so that an asyncio front wakes once per step rather than once per token.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sample_stack.llm_model import ASSISTANT, EOS, PAD, SIZES, SYSTEM, Runner, Tokenizer, build_model

log = logging.getLogger("llm-engine")


class QueueFull(Exception):
    """The admission queue holds ``max_waiting`` requests: refuse at once (the server answers 429)."""


class EngineDead(Exception):
    """The engine loop has stopped (crashed): nothing will be served until it is restarted."""


class EngineCrash(RuntimeError):
    """Raised inside the loop by the ``crash`` fault."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()


@dataclass
class Output:
    """What one step produced for one sequence: new text, and how it ended if it did."""

    seq: Sequence
    text: str
    tokens: int  # new output tokens in ``text``
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    error: str | None = None


_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    params: SamplingParams
    arrival: float = field(default_factory=time.monotonic)
    id: int = field(default_factory=lambda: next(_ids))
    output: list[int] = field(default_factory=list)
    text: str = ""
    cached: int = 0  # tokens whose keys and values are in the cache
    blocks: int = 0
    admitted_at: float = 0.0  # last admission: preemption takes the latest first
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str | None = None
    preemptions: int = 0
    stalled_until: float = 0.0
    stall_done: bool = False
    generator: torch.Generator | None = None
    context: object = None  # the front's handle for this request (its stream)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def last_token(self) -> int:
        return self.output[-1] if self.output else self.prompt[-1]


class StepObserver(Protocol):
    def step(self, batch: int, prefill_tokens: int, decode_tokens: int, seconds: float) -> None:
        """After each step: sequences computed (prefilled or decoded), tokens prefilled and decoded."""


@dataclass
class EngineFaults:
    """Faults the engine applies at each step (set through the server's fault hooks)."""

    slowdown: float = 1.0
    decode_delay_ms: float = 0.0
    stall_after_tokens: int | None = None
    stall_ms: float = 5000.0
    hang: bool = False
    crash: bool = False
    unload: bool = False
    cold_start_ms: float = 2000.0


@dataclass
class EngineConfig:
    model_size: str = "small"
    max_model_len: int = 512
    max_num_seqs: int = 32
    max_waiting: int = 64
    block_size: int = 16
    kv_cache_blocks: int | None = None  # None: enough for max_num_seqs full contexts
    device: str = "cpu"
    seed: int = 1234


Deliver = Callable[[list[Output]], None]


class Engine:
    def __init__(self, config: EngineConfig, deliver: Deliver, observer: StepObserver | None = None,
                 cold_start_ms: float = 2000.0) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.deliver = deliver
        self.observer = observer
        self.full_blocks = -(-config.max_num_seqs * config.max_model_len // config.block_size)
        self.total_blocks = config.kv_cache_blocks or self.full_blocks
        self.used_blocks = 0
        self.faults = EngineFaults(cold_start_ms=cold_start_ms)
        if config.model_size not in SIZES:
            raise ValueError(f"unknown model size {config.model_size!r}; expected one of {', '.join(SIZES)}")
        self.tokenizer = Tokenizer(SIZES[config.model_size].vocab, config.seed)
        self.runner: Runner | None = None
        self.loaded = False
        self._want_loaded = True  # load at start, and again when an unload is reverted
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # index = cache slot
        self._incoming: deque[Sequence] = deque()
        self._aborted: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.dead: str | None = "not started"
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        # counters, read at scrape time
        self.preemptions = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.cold_starts = 0
        self.steps = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the loop (loading the model first, if it is not loaded)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.faults.crash = False
        self._stop = False
        self._thread = threading.Thread(target=self._main, name="llm-engine", daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """After a crash: a fresh loop with the same model (a supervisor restarting the engine)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.start()

    def request_stop(self) -> None:
        """Stop after the current step (what is in flight fails with a shutdown error); returns at once."""
        self._stop = True
        self._wake.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def alive(self) -> bool:
        return self.dead is None and self._thread is not None and self._thread.is_alive()

    def crash(self) -> None:
        self.faults.crash = True
        self._wake.set()

    def wait_started(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive:
                return True
            if self._thread is not None and not self._thread.is_alive():
                return False
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------ requests (any thread)
    def add(self, seq: Sequence) -> None:
        """Queue a request; raises QueueFull at once when the admission queue is full, EngineDead
        when the loop has stopped."""
        with self._lock:  # under the lock that a dying loop takes to fail what it holds: none is left behind
            if not self.alive:
                raise EngineDead(self.dead or "engine stopped")
            if len(self.waiting) + len(self._incoming) >= self.config.max_waiting:
                raise QueueFull(f"{self.config.max_waiting} requests already waiting")
            if seq.params.seed is not None:
                seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed)
            self._incoming.append(seq)
        self._wake.set()

    def abort(self, seq: Sequence) -> None:
        """The client is gone: drop the request at the next step."""
        with self._lock:
            self._aborted.add(seq.id)
        self._wake.set()

    def set_block_budget(self, blocks: int | None) -> None:
        """A new KV-cache budget in blocks (None: the full one); running sequences over it are
        preempted at the next step."""
        if blocks is not None and blocks < 1:
            raise ValueError("kv_cache_blocks must be at least 1")
        self.total_blocks = blocks or self.full_blocks
        self._wake.set()

    def unload(self) -> None:
        """Free the weights and the cache at the next step; the next request waits for a cold start."""
        self.faults.unload = True
        self._want_loaded = False
        self._wake.set()

    def load(self) -> None:
        """Load the model again after an unload (a cold start), without waiting for a request."""
        self.faults.unload = False
        self._want_loaded = True
        self._wake.set()

    @property
    def unloaded(self) -> bool:
        return self.faults.unload or not self.loaded

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self._incoming)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.used_blocks / self.total_blocks) if self.total_blocks else 0.0

    # ------------------------------------------------------------ the loop
    def _main(self) -> None:
        try:
            if not self.loaded:
                self._load(cold=False)
            self.dead = None
            log.info("engine running: %d slots, %d KV blocks of %d tokens", self.config.max_num_seqs,
                     self.total_blocks, self.config.block_size)
            while not self._stop:
                if self.faults.crash:
                    raise EngineCrash("engine crashed (fault injected)")
                if self.faults.hang:
                    self._wake.wait(0.05)
                    self._wake.clear()  # requests arriving meanwhile wait: the next step takes them
                    continue
                if not self._step():
                    self._wake.wait(0.1)
                    self._wake.clear()
        except BaseException as exc:
            self.dead = f"{type(exc).__name__}: {exc}"
            log.error("engine loop died: %s", self.dead, exc_info=not isinstance(exc, EngineCrash))
            self._fail_all(f"the engine died: {exc}")
        else:
            self.dead = "stopped"
            self._fail_all("the server is shutting down")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            seqs = [*self.running, *self.waiting, *self._incoming]
            self.running.clear()
            self.waiting.clear()
            self._incoming.clear()
        self.used_blocks = 0
        now = time.monotonic()
        for seq in seqs:
            seq.finished = now
            seq.finish_reason = "abort"
            seq.blocks = 0
        if seqs:
            self.deliver([Output(s, "", 0, "abort", message) for s in seqs])

    def _load(self, cold: bool) -> None:
        started = time.monotonic()
        model = build_model(self.config.model_size, self.config.max_model_len, self.device, self.config.seed)
        runner = Runner(model, self.config.max_num_seqs, self.device)
        runner.prefill(0, [[ASSISTANT] * 8])  # warm up the kernels before the first request
        runner.decode([ASSISTANT], [8])
        if cold:  # a real model takes seconds to load: its weights are far larger than these
            remaining = self.faults.cold_start_ms / 1000 - (time.monotonic() - started)
            if remaining > 0:
                time.sleep(remaining)
            self.cold_starts += 1
        self.runner = runner
        self.loaded = True
        self.faults.unload = False
        self._want_loaded = True
        log.info("model %s loaded in %.2fs%s", self.config.model_size, time.monotonic() - started,
                 " (cold start)" if cold else "")

    def _unload(self) -> None:
        for seq in list(reversed(self.running)):
            self._preempt(seq, count=False)
        self.runner = None
        self.loaded = False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("model unloaded")

    def _take_arrivals(self) -> list[Output]:
        outputs: list[Output] = []
        with self._lock:
            while self._incoming:
                self.waiting.append(self._incoming.popleft())
            aborted, self._aborted = self._aborted, set()
        if aborted:
            for seq in [s for s in self.running if s.id in aborted]:
                self._remove(seq)
                outputs.append(self._finish(seq, "abort"))
            kept = [s for s in self.waiting if s.id not in aborted]
            for seq in (s for s in self.waiting if s.id in aborted):
                outputs.append(self._finish(seq, "abort"))
            self.waiting = deque(kept)
        return outputs

    def _step(self) -> bool:
        """One step; False when there was nothing to do."""
        outputs = self._take_arrivals()
        if self.faults.unload and self.loaded:
            self._unload()
        if not self.loaded and (self._want_loaded or self.waiting):
            self._load(cold=True)
        if not self.waiting and not self.running:
            if outputs:
                self.deliver(outputs)
            return bool(outputs)
        assert self.runner is not None
        started = time.perf_counter()
        now = time.monotonic()
        self._fit_budget()
        decoding = self._grow(outputs)
        admitted = self._admit(outputs)
        batch = len(decoding) + len(admitted)
        prefill_tokens = 0
        if admitted:
            prompts = [seq.tokens for seq in admitted]
            prefill_tokens = sum(map(len, prompts))
            logits = self.runner.prefill(len(decoding), prompts)
            for seq, prompt in zip(admitted, prompts, strict=True):
                seq.cached = len(prompt)
            self._emit(admitted, logits, outputs, now)
        if decoding:
            logits = self.runner.decode([s.last_token for s in decoding], [s.cached for s in decoding])
            for seq in decoding:
                seq.cached += 1
            live = [i for i, s in enumerate(decoding) if s.stalled_until <= now]
            if len(live) < len(decoding):
                # a stalled stream's step is computed with the batch's but not taken: it feeds the
                # same token at the same position again at its next step
                for seq in decoding:
                    if seq.stalled_until > now:
                        seq.cached -= 1
                logits = logits[live]
                decoding = [decoding[i] for i in live]
            self._emit(decoding, logits, outputs, now)
            if not decoding and not admitted:
                time.sleep(0.005)  # every running stream is stalled: no need to spin at full speed
            if self.faults.decode_delay_ms:
                time.sleep(self.faults.decode_delay_ms / 1000)
        for out in outputs:
            if out.finish_reason is not None and out.seq in self.running:
                self._remove(out.seq)
        elapsed = time.perf_counter() - started
        if self.faults.slowdown > 1:
            time.sleep(elapsed * (self.faults.slowdown - 1))
        self.steps += 1
        if self.observer is not None:
            self.observer.step(batch, prefill_tokens, len(decoding), time.perf_counter() - started)
        if outputs:
            self.deliver(outputs)
        return True

    # ------------------------------------------------------------ scheduling
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def _fit_budget(self) -> None:
        """After the budget shrank: preempt the latest admitted until the rest fits."""
        while self.used_blocks > self.total_blocks and self.running:
            self._preempt(max(self.running, key=lambda s: s.admitted_at))

    def _grow(self, outputs: list[Output]) -> list[Sequence]:
        """Give each running sequence the block its next token needs, preempting the latest admitted
        when none is free; the sequences that will decode this step."""
        for seq in sorted(self.running, key=lambda s: s.admitted_at):
            if seq not in self.running:
                continue  # preempted for an earlier one
            need = self._blocks_for(seq.cached + 1) - seq.blocks
            while need > 0 and self.total_blocks - self.used_blocks < need:
                victim = max(self.running, key=lambda s: s.admitted_at)
                if victim is seq and len(self.running) == 1:
                    self._remove(seq)
                    outputs.append(self._finish(seq, "abort", error=self._too_large(seq)))
                    break
                self._preempt(victim)
                if victim is seq:
                    break
            if seq in self.running and need > 0:
                seq.blocks += need
                self.used_blocks += need
        return list(self.running)

    def _too_large(self, seq: Sequence) -> str:
        return (f"the KV cache budget ({self.total_blocks} blocks of {self.config.block_size} tokens) cannot hold "
                f"this request's {len(seq.prompt)} prompt and {seq.params.max_tokens} output tokens")

    def _admit(self, outputs: list[Output]) -> list[Sequence]:
        admitted: list[Sequence] = []
        now = time.monotonic()
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            need = self._blocks_for(len(seq.tokens) + 1)
            if need > self.total_blocks:
                self.waiting.popleft()
                outputs.append(self._finish(seq, "abort", error=self._too_large(seq)))
                continue
            if self.total_blocks - self.used_blocks < need:
                break
            self.waiting.popleft()
            seq.blocks = need
            self.used_blocks += need
            seq.admitted_at = now
            if seq.first_scheduled is None:
                seq.first_scheduled = now
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _preempt(self, seq: Sequence, count: bool = True) -> None:
        self._remove(seq)
        seq.cached = 0
        self.waiting.appendleft(seq)
        if count:
            seq.preemptions += 1
            self.preemptions += 1

    def _remove(self, seq: Sequence) -> None:
        """Take a sequence out of the running batch, freeing its blocks and its slot."""
        slot = self.running.index(seq)
        last = self.running.pop()
        if last is not seq:
            assert self.runner is not None
            self.runner.cache.move(len(self.running), slot, last.cached)
            self.running[slot] = last
        self.used_blocks -= seq.blocks
        seq.blocks = 0

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> Output:
        seq.finished = time.monotonic()
        seq.finish_reason = reason
        return Output(seq, "", 0, reason, error)

    # ------------------------------------------------------------ sampling
    @torch.inference_mode()
    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        logits[:, PAD] = float("-inf")
        logits[:, SYSTEM : ASSISTANT + 1] = float("-inf")
        no_eos = [i for i, s in enumerate(seqs) if s.params.ignore_eos]
        if no_eos:
            logits[no_eos, EOS] = float("-inf")
        if all(s.params.temperature == 0 for s in seqs):
            return [int(t) for t in logits.argmax(-1).tolist()]
        temperature = torch.tensor([max(s.params.temperature, 1e-5) for s in seqs], device=logits.device)
        probs = torch.softmax(logits / temperature[:, None], dim=-1)
        drawn = torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        greedy = logits.argmax(-1)
        chosen = []
        for i, seq in enumerate(seqs):
            if seq.params.temperature == 0:
                chosen.append(int(greedy[i]))
            elif seq.generator is not None:  # a seeded request draws from its own generator
                chosen.append(int(torch.multinomial(probs[i], 1, generator=seq.generator)))
            else:
                chosen.append(int(drawn[i]))
        return chosen

    def _emit(self, seqs: list[Sequence], logits: torch.Tensor, outputs: list[Output], now: float) -> None:
        if not seqs:
            return
        faults = self.faults
        for seq, token in zip(seqs, self._sample(seqs, logits), strict=True):
            seq.output.append(token)
            self.generation_tokens += 1
            if len(seq.output) == 1:
                seq.first_token = time.monotonic()
                self.prompt_tokens += len(seq.prompt)
            piece = self.tokenizer.decode(token)
            reason = None
            if token == EOS and not seq.params.ignore_eos:
                reason = "stop"
            elif seq.params.stop:
                cut = stop_at(seq.text, piece, seq.params.stop)
                if cut is not None:
                    piece, reason = cut, "stop"
            seq.text += piece
            if reason is None and len(seq.output) >= seq.params.max_tokens:
                reason = "length"
            if reason is not None:
                seq.finished = time.monotonic()
                seq.finish_reason = reason
            elif (faults.stall_after_tokens is not None and not seq.stall_done
                  and len(seq.output) >= faults.stall_after_tokens):
                seq.stall_done = True
                seq.stalled_until = now + faults.stall_ms / 1000
            outputs.append(Output(seq, piece, 1, reason))


def stop_at(text: str, piece: str, stops: tuple[str, ...]) -> str | None:
    """Where ``text + piece`` first contains a stop string that ends in ``piece``: the part of
    ``piece`` before it (the stop string itself is not returned, as in OpenAI's API); None if none."""
    joined = text + piece
    found = [i for s in stops if (i := joined.find(s, max(0, len(text) - len(s) + 1))) >= 0]
    if not found:
        return None
    return joined[len(text) : max(len(text), min(found))]
