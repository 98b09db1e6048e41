"""Faults through a model service's fault hooks, and the probe that measures a model swap.

The hook protocol (what the sample model server implements, and any model service can): ``GET
<path>`` answers the current faults as a JSON object; ``POST <path>`` with a JSON object sets the
faults it names; both need ``Authorization: Bearer <token>``. Keys: ``slowdown`` (factor ≥ 1),
``error_fraction`` (0..1) and ``error_status``, ``hang`` (bool), ``oom_next_batch`` (bool),
``version`` (the model version served). aichaos reads the current values before it sets any, and
reverts by posting those values back, so two faults on one service revert independently.

The sample LLM server (sample_stack/llm_server.py) speaks the same protocol: ``slowdown``,
``error_fraction``/``error_status`` and ``hang`` as above (so the faults here work on it), and
``decode_delay_ms``, ``stall_after_tokens``/``stall_ms``, ``error_midstream``, ``kv_cache_blocks``,
``crash`` (the engine loop dies, the HTTP front stays up; false restarts it), ``unload`` (the next
request waits for a cold start of ``cold_start_ms``); its docstring says what each does. The engine
faults ``kv_cache_pressure``, ``engine_crash`` and ``model_unload`` set the last three.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from abc import abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aichaos import clock
from aichaos.errors import FaultInjectionError, FaultRevertError
from aichaos.experiment.model import (
    EngineCrashFault,
    InferenceErrorsFault,
    InferenceHangFault,
    InferenceSlowdownFault,
    KvCachePressureFault,
    ModelSwapFault,
    ModelUnloadFault,
    OomNextBatchFault,
    Probe,
)
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import (
    Closeable,
    FaultContext,
    FaultKind,
    UndoContext,
    kind_of,
    register_fault,
    register_undo,
    undo_record,
)
from aichaos.metrics.scrape import ScrapeStore

log = logging.getLogger(__name__)

HookFault = (InferenceSlowdownFault | InferenceErrorsFault | InferenceHangFault | OomNextBatchFault | ModelSwapFault
             | KvCachePressureFault | EngineCrashFault | ModelUnloadFault)
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


class HookKind(FaultKind):
    """A fault set through the service's fault hooks: ``body`` says which hook keys it sets."""

    target = "service"

    @abstractmethod
    def body(self, fault: Any) -> tuple[dict[str, Any], str]:
        """The hook keys the fault sets, and how to say it."""

    def restore(self, body: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        """What the revert posts: by default, the values the keys had before."""
        return {k: before[k] for k in body}

    def describe(self, fault: Any, what: str, before: dict[str, Any]) -> str:
        return what

    def check_stack(self, fault: Any, stack: Stack) -> Iterator[tuple[str, str]]:
        problems = list(super().check_stack(fault, stack))
        yield from problems
        if not problems and stack.services[fault.service].hooks is None:
            yield "service", (f"{fault.type} needs the fault hooks of {fault.service!r}: declare them in the stack "
                              "file (hooks: {path: /admin/faults, token_env: ...})")

    def apply(self, fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        return apply_hook_fault(fault, phase, hook_client(ctx, fault.service))


@register_fault
class InferenceSlowdown(HookKind):
    model = InferenceSlowdownFault

    def body(self, fault: InferenceSlowdownFault) -> tuple[dict[str, Any], str]:
        return {"slowdown": fault.factor}, f"inference {fault.factor:g}x slower"


@register_fault
class InferenceErrors(HookKind):
    model = InferenceErrorsFault

    def body(self, fault: InferenceErrorsFault) -> tuple[dict[str, Any], str]:
        return ({"error_fraction": fault.fraction, "error_status": fault.status},
                f"{fault.fraction:.0%} of inferences answer {fault.status}")


@register_fault
class InferenceHang(HookKind):
    model = InferenceHangFault

    def body(self, fault: InferenceHangFault) -> tuple[dict[str, Any], str]:
        return {"hang": True}, "inference hangs"


@register_fault
class OomNextBatch(HookKind):
    model = OomNextBatchFault

    def body(self, fault: OomNextBatchFault) -> tuple[dict[str, Any], str]:
        return {"oom_next_batch": True}, "next batch out of memory"

    def restore(self, body: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        return {"oom_next_batch": False}  # one-shot: whatever it read, the revert disarms it


@register_fault
class ModelSwap(HookKind):
    model = ModelSwapFault

    def body(self, fault: ModelSwapFault) -> tuple[dict[str, Any], str]:
        return {"version": fault.version}, f"model version swapped to {fault.version}"

    def describe(self, fault: ModelSwapFault, what: str, before: dict[str, Any]) -> str:
        return f"model version {before['version']} → {fault.version}"

    def before_load(self, fault: ModelSwapFault, ctx: FaultContext, scrapes: Any) -> Closeable | None:
        """A model swap is measured against the answers given before any fault: take them now."""
        running = ctx.handle.services[fault.service]
        prober = Prober(fault.service, f"http://{running.host}:{running.port}", fault.probe, scrapes)
        prober.start()
        return prober


@register_fault
class KvCachePressure(HookKind):
    model = KvCachePressureFault

    def body(self, fault: KvCachePressureFault) -> tuple[dict[str, Any], str]:
        return {"kv_cache_blocks": fault.blocks}, f"KV cache cut to {fault.blocks} blocks"

    def describe(self, fault: KvCachePressureFault, what: str, before: dict[str, Any]) -> str:
        return f"KV cache {before['kv_cache_blocks']} → {fault.blocks} blocks"


@register_fault
class ModelUnload(HookKind):
    model = ModelUnloadFault

    def body(self, fault: ModelUnloadFault) -> tuple[dict[str, Any], str]:
        return {"unload": True, "cold_start_ms": fault.cold_start_ms}, \
            f"model unloaded (cold start {fault.cold_start_ms} ms)"

    def apply(self, fault: ModelUnloadFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        """The revert loads the model and waits until it is loaded: its detail says how long that took
        (``reload_s``, the cold start as the service paid it)."""
        client = hook_client(ctx, fault.service)
        applied = apply_hook_fault(fault, phase, client)
        post_restore = applied.revert_action

        def reload() -> None:
            started = time.monotonic()
            post_restore()
            deadline = started + 60 + fault.cold_start_ms / 1000
            while True:
                try:
                    if not client.get().get("unload"):
                        break
                except OSError:
                    pass  # a service busy loading may not answer at once
                if time.monotonic() > deadline:
                    raise FaultRevertError(f"{fault.service} did not load its model again within "
                                           f"{deadline - started:.0f}s of the revert")
                time.sleep(0.05)
            applied.detail["reload_s"] = round(time.monotonic() - started, 3)

        applied.revert_action = reload
        return applied


@register_fault
class EngineCrash(HookKind):
    """The engine dies, the front stays up; ``/health`` is polled meanwhile, and the fault's detail
    says how long it took to admit it (``health_unhealthy_after_s``, None when it never did)."""

    model = EngineCrashFault

    def body(self, fault: EngineCrashFault) -> tuple[dict[str, Any], str]:
        return {"crash": True}, "engine crashed (the HTTP front stays up)"

    def restore(self, body: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        return {"crash": False}  # whatever it read: the revert starts the engine again

    def apply(self, fault: EngineCrashFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        running = ctx.handle.services[fault.service]
        watch = HealthWatch(f"http://{running.host}:{running.port}{fault.health_path}")
        applied = apply_hook_fault(fault, phase, hook_client(ctx, fault.service))
        watch.start()
        revert = applied.revert_action

        def stop_watch_then_revert() -> None:
            applied.detail.update(watch.stop())
            revert()

        applied.revert_action = stop_watch_then_revert
        return applied


class HealthWatch:
    """Polls a health URL from the fault's start until it answers anything but 2xx (or stops)."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.started = 0.0
        self.unhealthy_after: float | None = None
        self.answer: str | None = None
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aichaos-health-watch", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _check(self) -> str | None:
        """What the health check said when it was not healthy, or None while it was."""
        try:
            with urllib.request.urlopen(self.url, timeout=1.0) as response:
                response.read(1000)
                return None if 200 <= response.status < 300 else str(response.status)
        except urllib.error.HTTPError as exc:
            return str(exc.code)
        except OSError as exc:
            return f"no answer ({exc})"

    def _loop(self) -> None:
        while not self._stop.is_set():
            said = self._check()
            self.checks += 1
            if said is not None:
                self.unhealthy_after, self.answer = time.monotonic() - self.started, said
                return
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        """Stop polling; the "health honesty" figures for the fault's detail."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(3)
        after = None if self.unhealthy_after is None else round(self.unhealthy_after, 3)
        return {"health_url": self.url, "health_unhealthy_after_s": after, "health_answer": self.answer,
                "health_checks": self.checks}


def hook_client(ctx: FaultContext, service: str) -> HookClient:
    spec = ctx.stack.services[service]
    hooks = spec.hooks
    assert hooks is not None  # the loader refuses a hook fault on a service without hooks
    token = None
    if hooks.token_env:
        token = spec.env.get(hooks.token_env) or os.environ.get(hooks.token_env)
    running = ctx.handle.services[service]
    return HookClient(f"http://{running.host}:{running.port}{hooks.path}", token)


def apply_hook_fault(fault: HookFault, phase: str, client: HookClient) -> AppliedFault:
    kind = kind_of(fault)
    assert isinstance(kind, HookKind)
    body, what = kind.body(fault)
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
    restore = kind.restore(body, before)
    what = kind.describe(fault, what, before)

    def revert() -> None:
        try:
            client.post(restore)
        except OSError as exc:
            raise FaultRevertError(f"could not revert {fault.type} on {fault.service}: {exc}") from exc

    return AppliedFault(phase, fault.type, fault.service, f"{fault.service}: {what}",
                        fault.model_dump(mode="json", by_alias=True), clock.now(), revert_action=revert,
                        undo_record=undo_record("hooks", hooks_url=client.url, token=client.token, restore=restore))


@register_undo("hooks")
def _restore_hooks(record: dict[str, Any], ctx: UndoContext) -> str:
    try:
        HookClient(record["hooks_url"], record.get("token"), timeout=3.0).post(record["restore"])
    except OSError as exc:
        return f"could not restore {', '.join(record['restore'])} through {record['hooks_url']}: {exc}"
    return f"restored {', '.join(record['restore'])} through {record['hooks_url']}"


class Prober(Closeable):
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
