"""Correctness under chaos: golden answers from a probe set, and every second's answers against them.

The experiment's ``correctness:`` block names an OpenAI-compatible service and a probe set. After
the stack is up and before the load starts, the ``GoldenProber`` sends every probe with
deterministic decoding (temperature 0 and a seed), twice: the first answers are the golden ones,
and a second round that differs from them means the server is not deterministic, which stops the run
(exit 3) rather than blaming later differences on the faults. Then, once per ``every``, it sends the
probes again and records the share of each problem (``aichaos.metrics.golden``) in the run's
``ScrapeStore`` under the service, beside its scraped series, so that SLOs, stop conditions and
degradation gates read them as ``<service>/aichaos_golden_<problem>``.

Plain HTTP through ``requests`` (streamed answers read line by line), one thread per probe in
flight; only the service's OpenAI API is used, so any server that honours temperature 0 will do.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from aichaos.errors import EnvironmentFailure
from aichaos.experiment.model import Correctness
from aichaos.metrics.golden import SERIES, Answer, compare, read_body, read_events, round_metrics
from aichaos.metrics.scrape import ScrapeStore

log = logging.getLogger(__name__)

MAX_ANSWER = 1024 * 1024  # bytes of one answer read at most


def probe_bodies(spec: Correctness) -> list[dict[str, Any]]:
    """The request bodies of the probe set: the given prompts, or ``count`` drawn from ``prompt``
    with the probe's seed (the same set in every run)."""
    from aichaos.load.templates import compile_template

    if spec.prompts:
        prompts = list(spec.prompts)
    else:
        draw = compile_template(spec.prompt)
        rng = random.Random(spec.seed)
        prompts = [str(draw(rng)) for _ in range(spec.count)]
    bodies = []
    for prompt in prompts:
        body: dict[str, Any] = {**spec.extra, "model": spec.model, "max_tokens": spec.max_tokens,
                                "temperature": spec.temperature, "seed": spec.seed, "stream": spec.stream}
        if spec.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if spec.stream:
            body["stream_options"] = {"include_usage": True}
        bodies.append(body)
    return bodies


def ask(url: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None) -> Answer:
    """Send one probe and read its answer; a failure is an ``Answer`` with ``error``, never raised."""
    try:
        with requests.post(url, json=body, timeout=timeout, stream=True, headers=headers) as response:
            if response.status_code != 200:
                return Answer(error=f"HTTP {response.status_code}")
            if not body.get("stream"):
                return read_body(response.raw.read(MAX_ANSWER, decode_content=True))
            payloads: list[str] = []
            try:
                for line in response.iter_lines(decode_unicode=False):
                    if line.startswith(b"data:"):
                        payloads.append(line[5:].decode("utf-8", "replace"))
            except requests.RequestException:
                pass  # a stream broken midway is an answer without its end: truncated, not failed
            return read_events(payloads)
    except requests.RequestException as exc:
        return Answer(error=type(exc).__name__)


class GoldenProber:
    """Records the golden answers of ``service`` at ``base_url``, then compares every round with them."""

    def __init__(self, service: str, base_url: str, spec: Correctness, store: ScrapeStore) -> None:
        self.service = service
        self.spec = spec
        self.url = base_url.rstrip("/") + ("/v1/chat/completions" if spec.api == "chat" else "/v1/completions")
        self.bodies = probe_bodies(spec)
        self.store = store
        self.golden: list[Answer | None] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=min(16, len(self.bodies)), thread_name_prefix="aichaos-golden")
        self._thread = threading.Thread(target=self._loop, name="aichaos-golden-prober", daemon=True)

    def answers(self) -> list[Answer]:
        """One round: every probe, at once."""
        return list(self._pool.map(lambda body: ask(self.url, body, self.spec.timeout), self.bodies))

    def record_golden(self) -> str:
        """Take the golden answers (and check them with a second round); returns what was recorded."""
        first = self.answers()
        usable = [a for a in first if not a.failed and a.complete and a.finish_reason is not None]
        if not usable:
            errors = sorted({a.error or "no finish_reason" for a in first})
            raise EnvironmentFailure(f"the golden-answer probes of {self.service} got no complete answer at "
                                     f"{self.url} ({', '.join(errors)})",
                                     hint="check correctness: (model, api, stream) against the service's API")
        self.golden = [a if not a.failed and a.complete and a.finish_reason is not None else None for a in first]
        again = self.answers()
        differ = [i for i, (g, a) in enumerate(zip(self.golden, again, strict=True))
                  if g is not None and not a.failed and compare(g, a)]
        if differ:
            raise EnvironmentFailure(
                f"{self.service} gave other answers to {len(differ)} of {len(self.bodies)} golden-answer probes "
                f"the second time, before any fault (temperature {self.spec.temperature:g}, seed {self.spec.seed})",
                hint="the server does not decode deterministically: golden answers cannot be judged on it")
        kept = sum(g is not None for g in self.golden)
        return (f"golden answers: {kept} of {len(self.bodies)} probes of {self.service} recorded "
                f"(temperature {self.spec.temperature:g}, seed {self.spec.seed}), compared every {self.spec.every:g}s")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        kinds = dict.fromkeys(SERIES, "gauge")
        while not self._stop.wait(self.spec.every - (time.time() % self.spec.every) + 0.02):
            second = int(time.time())
            values = round_metrics(self.golden, self.answers())
            if values:
                self.store.add(second, self.service, values, kinds, scraped=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.spec.timeout + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)

