"""Network faults on a stack edge, as Toxiproxy toxics (latency, bandwidth, timeout, reset_peer, and
retry_storm: latency past the dependent's timeout) or by disabling the edge's proxy (down: new
connections are refused and open ones are closed)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from aichaos import clock
from aichaos.errors import FaultInjectionError, ProxyError
from aichaos.experiment.model import (
    BandwidthFault,
    DownFault,
    LatencyFault,
    ResetPeerFault,
    RetryStormFault,
    TimeoutFault,
)
from aichaos.faults.base import AppliedFault
from aichaos.faults.registry import FaultContext, FaultKind, UndoContext, register_fault, register_undo, undo_record
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import proxy_name


class ToxicKind(FaultKind):
    """A fault that is one toxic on its edge's proxy."""

    target = "edge"

    @abstractmethod
    def toxic(self, fault: Any) -> tuple[str, dict[str, int], str]:
        """The toxic's type, its attributes, and how to say it."""

    def apply(self, fault: Any, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        client = ctx.client
        proxy = proxy_name(fault.edge)
        kind, attributes, what = self.toxic(fault)
        name = f"aichaos_{phase}_{index}"
        stream, toxicity = getattr(fault, "stream", "downstream"), getattr(fault, "toxicity", 1.0)
        try:
            client.add_toxic(proxy, kind, attributes, stream=stream, toxicity=toxicity, name=name)
        except ProxyError as exc:
            raise FaultInjectionError(f"could not inject {fault.type} on {fault.edge}: {exc.message}",
                                      hint=exc.hint) from exc
        desc = f"{kind} on {fault.edge} {stream}: {what}"
        if toxicity < 1:
            desc += f", toxicity {toxicity:g}"
        return AppliedFault(phase, fault.type, fault.edge, desc, fault.model_dump(mode="json", by_alias=True),
                            clock.now(), revert_action=lambda: client.remove_toxic(proxy, name),
                            undo_record=undo_record("toxic", proxy_url=client.url, proxy=proxy, toxic=name))


@register_fault
class Latency(ToxicKind):
    model = LatencyFault

    def toxic(self, fault: LatencyFault) -> tuple[str, dict[str, int], str]:
        return "latency", {"latency": fault.latency_ms, "jitter": fault.jitter_ms}, \
            f"+{fault.latency_ms} ms (±{fault.jitter_ms})"


@register_fault
class RetryStorm(ToxicKind):
    model = RetryStormFault

    def toxic(self, fault: RetryStormFault) -> tuple[str, dict[str, int], str]:
        return "latency", {"latency": fault.latency_ms, "jitter": 0}, \
            f"+{fault.latency_ms} ms (past the caller's timeout: a retry storm)"


@register_fault
class Bandwidth(ToxicKind):
    model = BandwidthFault

    def toxic(self, fault: BandwidthFault) -> tuple[str, dict[str, int], str]:
        return "bandwidth", {"rate": fault.rate_kbps}, f"{fault.rate_kbps} KB/s"


@register_fault
class Timeout(ToxicKind):
    model = TimeoutFault

    def toxic(self, fault: TimeoutFault) -> tuple[str, dict[str, int], str]:
        return "timeout", {"timeout": fault.timeout_ms}, \
            f"data held, closed after {fault.timeout_ms} ms" if fault.timeout_ms else "data held forever"


@register_fault
class ResetPeer(ToxicKind):
    model = ResetPeerFault

    def toxic(self, fault: ResetPeerFault) -> tuple[str, dict[str, int], str]:
        return "reset_peer", {"timeout": fault.timeout_ms}, f"RST after {fault.timeout_ms} ms"


def disable_proxies(client: ToxiproxyClient, proxies: list[str]) -> None:
    """Disable every proxy, or none: a half-cut dependency is not what the file asked for."""
    done: list[str] = []
    try:
        for proxy in proxies:
            client.set_enabled(proxy, False)
            done.append(proxy)
    except ProxyError:
        for proxy in done:
            try:
                client.set_enabled(proxy, True)
            except ProxyError:
                pass
        raise


def proxies_down(fault: Any, phase: str, ctx: FaultContext, target: str, edges: list[str],
                 what: str) -> AppliedFault:
    """Take the proxies of ``edges`` down until the revert."""
    client = ctx.client
    proxies = [proxy_name(e) for e in edges]
    try:
        disable_proxies(client, proxies)
    except ProxyError as exc:
        raise FaultInjectionError(f"could not inject {fault.type} on {target}: {exc.message}", hint=exc.hint) from exc

    def revert() -> None:
        for proxy in proxies:
            client.set_enabled(proxy, True)

    return AppliedFault(phase, fault.type, target, what, fault.model_dump(mode="json", by_alias=True), clock.now(),
                        revert_action=revert, undo_record=undo_record("proxy_enable", proxy_url=client.url,
                                                                      proxies=proxies))


@register_fault
class Down(FaultKind):
    model = DownFault
    target = "edge"

    def apply(self, fault: DownFault, phase: str, index: int, ctx: FaultContext) -> AppliedFault:
        return proxies_down(fault, phase, ctx, fault.edge, [fault.edge], f"{fault.edge} down")


@register_undo("toxic")
def _remove_toxic(record: dict[str, Any], ctx: UndoContext) -> str:
    try:
        ToxiproxyClient(record["proxy_url"], timeout=3.0).remove_toxic(record["proxy"], record["toxic"])
    except ProxyError as exc:
        return f"could not remove toxic {record['toxic']} from {record['proxy']}: {exc.message}"
    return f"removed toxic {record['toxic']} from {record['proxy']}"


@register_undo("proxy_enable")
def _enable_proxies(record: dict[str, Any], ctx: UndoContext) -> str:
    client = ToxiproxyClient(record["proxy_url"], timeout=3.0)
    try:
        for proxy in record["proxies"]:
            client.set_enabled(proxy, True)
    except ProxyError as exc:
        return f"could not re-enable proxy {', '.join(record['proxies'])}: {exc.message}"
    return f"re-enabled proxy {', '.join(record['proxies'])}"
