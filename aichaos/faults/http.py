"""HTTP- and stream-aware faults on an HTTP edge: http_error, first_byte_delay, stream_stall,
stream_throttle, stream_truncate, stream_corrupt.

Each is one HTTP toxic of the builtin fault proxy (``aichaos.proxy.http``), which follows the
edge's HTTP/1.1 messages once its proxy's protocol is ``http``: set before the load starts, so
that no connection is closed during the run; set at apply too, for a fault injected by hand.
A Toxiproxy works on bytes and has none of these toxics: a run whose fault proxy is one refuses
them right after the proxy starts, before the stack (exit 2). Reverting removes the toxic, and
``aichaos cleanup`` does it through the ``toxic`` undo record of the byte-level faults.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from aichaos import clock
from aichaos.errors import FaultInjectionError, ProxyError, UsageError
from aichaos.experiment.model import (
    FirstByteDelayFault,
    HttpErrorFault,
    StreamCorruptFault,
    StreamStallFault,
    StreamThrottleFault,
    StreamTruncateFault,
)
from aichaos.experiment.stack import Stack
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import Closeable, FaultContext, FaultKind, RunCheck, register_fault, undo_record
from aichaos.proxy.backend import is_builtin
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import proxy_name


def follow_http(client: ToxiproxyClient, proxy: str) -> bool:
    """Make the builtin proxy follow HTTP on ``proxy``; False when the proxy is not the builtin one
    (a fake in tests: a Toxiproxy was refused before the run started)."""
    if not is_builtin(client.version()):
        return False
    if client.protocol(proxy) != "http":
        client.set_protocol(proxy, "http")
    return True


class HttpToxicKind(FaultKind):
    """A fault that is one HTTP toxic on its edge's proxy."""

    target = "edge"

    @abstractmethod
    def toxic(self, fault: Any) -> tuple[str, dict[str, Any], str]:
        """The toxic's type, its own attributes, and how to say it."""

    def check_stack(self, fault: Any, stack: Stack) -> Iterator[tuple[str, str]]:
        problems = list(super().check_stack(fault, stack))
        yield from problems
        if problems:
            return
        dependent, dependency = fault.edge.split("->")
        scheme = stack.services[dependent].depends_on[dependency].scheme
        if scheme != "http":
            yield "edge", (f"{fault.type} acts on HTTP requests, and edge {fault.edge!r} has scheme {scheme!r}: "
                           f"if it speaks HTTP/1.1, declare scheme: http on {dependent}'s depends_on.{dependency} "
                           f"in a stack file, or in the experiment's edges: {{{fault.edge}: {{scheme: http, ...}}}} "
                           "for a Compose stack")

    def check_run(self, fault: Any, run: RunCheck) -> None:
        if run.proxy is None or run.proxy == "fake" or is_builtin(run.proxy_version):
            return
        raise UsageError(f"needs the builtin fault proxy, and this run's is {run.proxy} (version "
                         f"{run.proxy_version or 'unknown'}): Toxiproxy works on bytes and cannot answer, hold or "
                         "cut single HTTP requests or server-sent events",
                         hint="let aichaos serve its builtin proxy: no toxiproxy_url or --toxiproxy-url, and no "
                              "toxiproxy-server on PATH (or give the URL of an `aichaos proxy serve`)")

    def before_load(self, fault: Any, ctx: FaultContext, scrapes: Any) -> Closeable | None:
        try:
            follow_http(ctx.client, proxy_name(fault.edge))
        except ProxyError as exc:
            raise FaultInjectionError(f"could not make the proxy of {fault.edge} follow HTTP: {exc.message}",
                                      hint=exc.hint) from exc
        return None

    def apply(self, fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        client = ctx.client
        proxy = proxy_name(fault.edge)
        kind, attributes, what = self.toxic(fault)
        attributes = {**attributes, "path": fault.path, "method": fault.method}
        name = f"aichaos_{phase}_{index}"
        try:
            follow_http(client, proxy)
            client.add_toxic(proxy, kind, attributes, toxicity=fault.fraction, name=name)
        except ProxyError as exc:
            raise FaultInjectionError(f"could not inject {fault.type} on {fault.edge}: {exc.message}",
                                      hint=exc.hint) from exc
        desc = f"{kind} on {fault.edge}: {what}"
        if fault.path or fault.method:
            desc += f", requests {fault.method or 'any'} {fault.path or '/'}…"
        if fault.fraction < 1:
            desc += f", {fault.fraction:.0%} of requests"
        return AppliedFault(phase, fault.type, fault.edge, desc, fault.model_dump(mode="json", by_alias=True),
                            clock.now(), revert_action=lambda: client.remove_toxic(proxy, name),
                            undo_record=undo_record("toxic", proxy_url=client.url, proxy=proxy, toxic=name))


@register_fault
class HttpError(HttpToxicKind):
    model = HttpErrorFault

    def toxic(self, fault: HttpErrorFault) -> tuple[str, dict[str, Any], str]:
        retry = f" (Retry-After {fault.retry_after_s} s)" if fault.status in (429, 503) and fault.retry_after_s else ""
        return "http_error", {"status": fault.status, "retry_after": fault.retry_after_s}, \
            f"answered {fault.status}{retry} without forwarding"


@register_fault
class FirstByteDelay(HttpToxicKind):
    model = FirstByteDelayFault

    def toxic(self, fault: FirstByteDelayFault) -> tuple[str, dict[str, Any], str]:
        return "first_byte_delay", {"delay": fault.delay_ms}, f"first byte +{fault.delay_ms} ms"


@register_fault
class StreamStall(HttpToxicKind):
    model = StreamStallFault

    def toxic(self, fault: StreamStallFault) -> tuple[str, dict[str, Any], str]:
        return "stream_stall", {"after_events": fault.after_events, "stall": fault.stall_ms}, \
            f"streams held {fault.stall_ms} ms after event {fault.after_events}"


@register_fault
class StreamThrottle(HttpToxicKind):
    model = StreamThrottleFault

    def toxic(self, fault: StreamThrottleFault) -> tuple[str, dict[str, Any], str]:
        return "stream_throttle", {"rate": fault.events_per_s}, f"at most {fault.events_per_s} events/s"


@register_fault
class StreamTruncate(HttpToxicKind):
    model = StreamTruncateFault

    def toxic(self, fault: StreamTruncateFault) -> tuple[str, dict[str, Any], str]:
        how = "connection closed" if fault.mode == "close" else "body ended"
        return "stream_truncate", {"after_events": fault.after_events, "mode": fault.mode}, \
            f"streams cut after event {fault.after_events} ({how})"


@register_fault
class StreamCorrupt(HttpToxicKind):
    model = StreamCorruptFault

    def toxic(self, fault: StreamCorruptFault) -> tuple[str, dict[str, Any], str]:
        how = "malformed" if fault.mode == "malformed" else "an error event before it"
        if fault.mode == "error":
            how = f"an error event ({fault.status}) before it"
        return "stream_corrupt", {"after_events": fault.after_events, "mode": fault.mode, "status": fault.status}, \
            f"event {fault.after_events + 1} {how}"
