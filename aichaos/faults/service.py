"""Faults on a stack service's processes and on every edge into it: a paused pipeline, a cold
start, an unreachable dependency, and a co-tenant that takes the model's device memory."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aichaos.errors import AichaosError, FaultInjectionError, FaultRevertError, ProxyError
from aichaos.experiment.model import ColdStartFault, DependencyDownFault, DeviceMemoryPressureFault, PipelineStallFault
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.interrupts import deferred
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import Runtime, StackHandle, proxy_name


def _spec(fault: Any) -> dict[str, Any]:
    return dict(fault.model_dump(mode="json", by_alias=True))


def pause(fault: PipelineStallFault, phase: str, runtime: Runtime, handle: StackHandle) -> AppliedFault:
    try:
        runtime.pause_service(fault.service)
    except (OSError, KeyError) as exc:
        raise FaultInjectionError(f"could not pause {fault.service}: {exc}") from exc
    from aichaos.faults.container import pause_undo

    return AppliedFault(phase, fault.type, fault.service, f"{fault.service} paused (its processes stopped)",
                        _spec(fault), time.time(), revert_action=lambda: runtime.resume_service(fault.service),
                        undo_record=pause_undo(runtime, handle, fault.service))


def cold_start(fault: ColdStartFault, phase: str, runtime: Runtime, handle: StackHandle, stack: Stack,
               on_restarted: Callable[[], None]) -> AppliedFault:
    """Kill the service and start it again at once; it becomes ready in the background while the
    phase goes on, and the revert waits for it (up to its readiness timeout)."""
    service = stack.services[fault.service]
    killed_at = time.time()
    try:
        running = runtime.restart_service(fault.service)
    except AichaosError as exc:
        raise FaultInjectionError(f"could not restart {fault.service}: {exc.message}", hint=exc.hint) from exc
    handle.services[fault.service] = running
    on_restarted()
    detail: dict[str, Any] = {}
    done = threading.Event()

    def wait() -> None:
        try:
            runtime.wait_ready(running, service)
            detail["ready_after_s"] = round(time.time() - killed_at, 3)
        except AichaosError as exc:
            detail["error"] = exc.message
        finally:
            done.set()

    threading.Thread(target=wait, name=f"aichaos-cold-start-{fault.service}", daemon=True).start()
    applied = AppliedFault(phase, fault.type, fault.service, f"{fault.service} killed and started again",
                           _spec(fault), killed_at, revert_action=lambda: None, detail=detail)

    def revert() -> None:
        if not done.wait(service.ready.timeout + 5):
            raise FaultRevertError(f"{fault.service} was not ready again after {service.ready.timeout:g}s")
        if "error" in detail:
            raise FaultRevertError(f"{fault.service} did not come back: {detail['error']}")
        applied.description = f"{fault.service} killed and started again, ready after {detail['ready_after_s']:.1f}s"

    applied.revert_action = revert
    return applied


def dependency_down(fault: DependencyDownFault, phase: str, stack: Stack, client: ToxiproxyClient) -> AppliedFault:
    edges = stack.edges_into(fault.service)
    proxies = [proxy_name(e) for e in edges]
    done: list[str] = []
    try:
        for proxy in proxies:
            client.set_enabled(proxy, False)
            done.append(proxy)
    except ProxyError as exc:
        for proxy in done:  # all or nothing: a half-cut dependency is not what the file asked for
            try:
                client.set_enabled(proxy, True)
            except ProxyError:
                pass
        raise FaultInjectionError(f"could not cut off {fault.service}: {exc.message}", hint=exc.hint) from exc

    def revert() -> None:
        for proxy in proxies:
            client.set_enabled(proxy, True)

    return AppliedFault(phase, fault.type, fault.service, f"{fault.service} unreachable ({', '.join(edges)} down)",
                        _spec(fault), time.time(), revert_action=revert,
                        undo_record={"proxy_url": client.url, "proxies": proxies, "enable": True})


def memory_pressure(fault: DeviceMemoryPressureFault, phase: str, log_dir: Path,
                    on_started: Callable[[int | None], None], timeout: float = 60.0) -> AppliedFault:
    """Start the co-tenant (``aichaos.faults.cotenant``) and wait until it holds its memory."""
    amount = ["--mb", str(fault.mb)] if fault.mb is not None else ["--share", str(fault.share)]
    log_path = log_dir / f"cotenant-{phase}.log"
    with open(log_path, "ab") as log, deferred():
        try:
            process = subprocess.Popen([sys.executable, "-m", "aichaos.faults.cotenant", *amount],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                       start_new_session=True)
        except OSError as exc:
            raise FaultInjectionError(f"could not start the memory co-tenant: {exc}") from exc
        on_started(process.pid)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        on_started(None)

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    line = process.stdout.readline() if selector.select(timeout) else b""
    selector.close()
    try:
        held = json.loads(line)
    except ValueError:
        held = {"error": f"no answer within {timeout:g}s" if not line else line.decode(errors="replace")}
    if "error" in held:
        stop()
        raise FaultInjectionError(f"the memory co-tenant could not take its memory: {held['error']}",
                                  hint=f"see {log_path}")
    where = f"GPU memory ({held['device']})" if held["device"] != "host" else "host memory (no CUDA device)"
    return AppliedFault(phase, fault.type, fault.service,
                        f"{fault.service}: co-tenant holds {held['mb']} MiB of {where}", _spec(fault), time.time(),
                        revert_action=stop, detail={"device": held["device"], "mb": held["mb"]})
