"""Faults through a model service's fault hooks, and the probe that measures a model swap.

The hook protocol (what the sample model server implements, and any model service can): ``GET
<path>`` answers the current faults as a JSON object; ``POST <path>`` with a JSON object sets the
faults it names; both need ``Authorization: Bearer <token>``. Keys: ``slowdown`` (factor ≥ 1),
``error_fraction`` (0..1) and ``error_status``, ``hang`` (bool), ``oom_next_batch`` (bool),
``version`` (the model version served). aichaos reads the current values before it sets any, and
reverts by posting those values back, so two faults on one service revert independently.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aichaos.errors import FaultInjectionError, FaultRevertError
from aichaos.experiment.model import (
    InferenceErrorsFault,
    InferenceHangFault,
    InferenceSlowdownFault,
    ModelSwapFault,
    OomNextBatchFault,
    Probe,
)
from aichaos.faults.base import AppliedFault
from aichaos.metrics.scrape import ScrapeStore

log = logging.getLogger(__name__)

HookFault = InferenceSlowdownFault | InferenceErrorsFault | InferenceHangFault | OomNextBatchFault | ModelSwapFault
DISAGREEMENT = "aichaos_probe_disagreement"  # the probe's series, next to the service's scraped ones


class HookClient:
    def __init__(self, url: str, token: str | None, timeout: float = 5.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode(errors="replace")
            raise OSError(f"{method} {self.url} answered {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise OSError(f"{method} {self.url} failed: {exc}") from exc
        if not isinstance(answer, dict):
            raise OSError(f"{method} {self.url} did not answer a JSON object")
        return answer

    def get(self) -> dict[str, Any]:
        return self._call("GET")

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", body)


def hook_body(fault: HookFault) -> tuple[dict[str, Any], str]:
    """The hook keys a fault sets, and how to say it."""
    if isinstance(fault, InferenceSlowdownFault):
        return {"slowdown": fault.factor}, f"inference {fault.factor:g}x slower"
    if isinstance(fault, InferenceErrorsFault):
        return ({"error_fraction": fault.fraction, "error_status": fault.status},
                f"{fault.fraction:.0%} of inferences answer {fault.status}")
    if isinstance(fault, InferenceHangFault):
        return {"hang": True}, "inference hangs"
    if isinstance(fault, OomNextBatchFault):
        return {"oom_next_batch": True}, "next batch out of memory"
    if isinstance(fault, ModelSwapFault):
        return {"version": fault.version}, f"model version swapped to {fault.version}"
    raise TypeError(fault)  # pragma: no cover


def apply_hook_fault(fault: HookFault, phase: str, client: HookClient) -> AppliedFault:
    body, what = hook_body(fault)
    try:
        before = client.get()
        missing = [k for k in body if k not in before]
        if missing:
            raise OSError(f"the hooks do not report {', '.join(missing)}: cannot restore it afterwards")
        client.post(body)
    except OSError as exc:
        raise FaultInjectionError(f"could not inject {fault.type} on {fault.service}: {exc}",
                                  hint="check the service's hooks in the stack file and that it was started "
                                       "with its fault hooks enabled") from exc
    restore = {k: before[k] for k in body}
    if isinstance(fault, ModelSwapFault):
        what = f"model version {before['version']} → {fault.version}"
    if isinstance(fault, OomNextBatchFault):
        restore = {"oom_next_batch": False}

    def revert() -> None:
        try:
            client.post(restore)
        except OSError as exc:
            raise FaultRevertError(f"could not revert {fault.type} on {fault.service}: {exc}") from exc

    return AppliedFault(phase, fault.type, fault.service, f"{fault.service}: {what}",
                        fault.model_dump(mode="json", by_alias=True), time.time(), revert_action=revert,
                        undo_record={"hooks_url": client.url, "token": client.token, "restore": restore})


class Prober:
    """Sends a fixed probe set straight to a service once a second and records the share of answers
    that differ from the reference, the answers before any fault (a shadow of the old version)."""

    def __init__(self, service: str, base_url: str, probe: Probe, store: ScrapeStore, seed: int = 7) -> None:
        from aichaos.load.templates import compile_template

        draw = compile_template(probe.json_body)
        rng = random.Random(seed)
        self.bodies = [json.dumps(draw(rng)).encode() for _ in range(probe.count)]
        self.url = base_url + probe.path
        self.answer_field = probe.answer
        self.service = service
        self.store = store
        self.reference: list[Any] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="aichaos-probe")
        self._thread = threading.Thread(target=self._loop, name="aichaos-prober", daemon=True)

    def _ask(self, body: bytes) -> Any:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:
                return json.loads(response.read()).get(self.answer_field)
        except (OSError, ValueError, AttributeError):
            return None  # no answer is not a disagreement: it shows in errors, not here

    def answers(self) -> list[Any]:
        return list(self._pool.map(self._ask, self.bodies))

    def start(self) -> None:
        self.reference = self.answers()
        if all(a is None for a in self.reference):
            raise FaultInjectionError(f"the probe of {self.service} got no answer at {self.url}",
                                      hint="check the model_swap fault's probe (path, json, answer)")
        self._thread.start()

    def disagreement(self, answers: list[Any]) -> float | None:
        pairs = [(a, r) for a, r in zip(answers, self.reference, strict=True) if a is not None and r is not None]
        return None if not pairs else sum(a != r for a, r in pairs) / len(pairs)

    def _loop(self) -> None:
        while not self._stop.wait(1.02 - (time.time() % 1.0)):
            second = int(time.time())
            value = self.disagreement(self.answers())
            if value is not None:
                self.store.add(second, self.service, {DISAGREEMENT: value}, {DISAGREEMENT: "gauge"}, scraped=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
