"""Network faults on a stack edge, as Toxiproxy toxics (latency, bandwidth, timeout, reset_peer) or
by disabling the edge's proxy (down: new connections are refused and open ones are closed)."""

from __future__ import annotations

import time

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
from aichaos.proxy.client import ToxiproxyClient
from aichaos.runtime.base import proxy_name

NetworkFault = LatencyFault | BandwidthFault | TimeoutFault | ResetPeerFault | DownFault | RetryStormFault


def _toxic(fault: NetworkFault) -> tuple[str, dict[str, int], str]:
    if isinstance(fault, LatencyFault):
        return "latency", {"latency": fault.latency_ms, "jitter": fault.jitter_ms}, \
            f"+{fault.latency_ms} ms (±{fault.jitter_ms})"
    if isinstance(fault, RetryStormFault):
        return "latency", {"latency": fault.latency_ms, "jitter": 0}, \
            f"+{fault.latency_ms} ms (past the caller's timeout: a retry storm)"
    if isinstance(fault, BandwidthFault):
        return "bandwidth", {"rate": fault.rate_kbps}, f"{fault.rate_kbps} KB/s"
    if isinstance(fault, TimeoutFault):
        return "timeout", {"timeout": fault.timeout_ms}, \
            f"data held, closed after {fault.timeout_ms} ms" if fault.timeout_ms else "data held forever"
    if isinstance(fault, ResetPeerFault):
        return "reset_peer", {"timeout": fault.timeout_ms}, f"RST after {fault.timeout_ms} ms"
    raise TypeError(fault)  # pragma: no cover


def apply_network_fault(fault: NetworkFault, phase: str, index: int, client: ToxiproxyClient) -> AppliedFault:
    proxy = proxy_name(fault.edge)
    spec = fault.model_dump(mode="json", by_alias=True)
    try:
        if isinstance(fault, DownFault):
            client.set_enabled(proxy, False)
            return AppliedFault(phase, "down", fault.edge, f"{fault.edge} down", spec, time.time(),
                                revert_action=lambda: client.set_enabled(proxy, True),
                                undo_record={"proxy_url": client.url, "proxy": proxy, "enable": True})
        kind, attributes, what = _toxic(fault)
        name = f"aichaos_{phase}_{index}"
        stream, toxicity = getattr(fault, "stream", "downstream"), getattr(fault, "toxicity", 1.0)
        client.add_toxic(proxy, kind, attributes, stream=stream, toxicity=toxicity, name=name)
        desc = f"{kind} on {fault.edge} {stream}: {what}"
        if toxicity < 1:
            desc += f", toxicity {toxicity:g}"
        return AppliedFault(phase, fault.type, fault.edge, desc, spec, time.time(),
                            revert_action=lambda: client.remove_toxic(proxy, name),
                            undo_record={"proxy_url": client.url, "proxy": proxy, "toxic": name})
    except ProxyError as exc:
        raise FaultInjectionError(f"could not inject {fault.type} on {fault.edge}: {exc.message}",
                                  hint=exc.hint) from exc
