"""The data path of the builtin proxy: one ``Link`` per accepted connection, two ``Direction``s each.

With no toxic active in a direction, bytes go straight from one transport to the other inside the
event loop's read callback (no queue, no task, no copy beyond the kernel's), with flow control
through pause/resume of the reading side. When a toxic is active, chunks are timestamped on arrival
and queued, and one pump task per direction takes each chunk through the toxics in the order they
were added; sleeps are measured from each chunk's own arrival, so a latency toxic delays a stream
without serialising it. A toxic added, updated or removed takes effect on open connections: sleeping
chunks are released at once when their toxic goes, as Toxiproxy does ("don't drop data on the floor").
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import struct
from typing import Protocol, cast

from aichaos.proxy.toxics import Toxic

log = logging.getLogger(__name__)

HIGH_WATER = 4 * 1024 * 1024  # bytes queued in a toxic direction before the source is paused
CONNECT_TIMEOUT = 10.0


class ProxyView(Protocol):
    """What a connection needs of its proxy (``aichaos.proxy.registry.Proxy``), named here so that
    this module does not import the registry, which imports this one."""

    name: str
    links: set[Link]
    stats: dict[str, int]  # connections accepted, bytes each way (aichaos's /proxies/{name}/stats)

    def toxics_for(self, stream: str) -> list[Toxic]: ...

    def upstream_address(self) -> tuple[str, int]: ...


class _Rolled:
    """A toxic as one direction of one connection sees it: toxicity rolled once per version."""

    __slots__ = ("enabled", "state", "timer", "toxic", "version")

    def __init__(self, toxic: Toxic) -> None:
        self.toxic = toxic
        self.version = toxic.version
        self.enabled = toxic.toxicity >= 1.0 or random.random() < toxic.toxicity
        self.state: dict[str, float] = {}
        self.timer: asyncio.TimerHandle | None = None


class Direction:
    def __init__(self, link: Link, stream: str) -> None:
        self.link = link
        self.stream = stream
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued_bytes = 0
        self.rolled: dict[str, _Rolled] = {}
        self.chain: list[_Rolled] = []  # enabled toxics in order
        self.pump: asyncio.Task[None] | None = None
        self.busy = False
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        self.eof_delivered = False
        self.src_paused = False

    # ------------------------------------------------------------ toxics
    def refresh(self, toxics: list[Toxic]) -> None:
        """Take the proxy's current toxics for this stream (called on every change)."""
        loop = asyncio.get_running_loop()
        fresh: dict[str, _Rolled] = {}
        for toxic in toxics:
            old = self.rolled.get(toxic.name)
            if old is not None and old.toxic is toxic and old.version == toxic.version:
                fresh[toxic.name] = old
                continue
            if old is not None and old.timer:
                old.timer.cancel()
            rolled = _Rolled(toxic)
            if old is not None and old.toxic.type == toxic.type:
                rolled.state = old.state  # e.g. limit_data keeps counting across updates
            if rolled.enabled and toxic.type == "timeout" and toxic.attributes["timeout"] > 0:
                rolled.timer = loop.call_later(toxic.attributes["timeout"] / 1000, self.link.close)
            fresh[toxic.name] = rolled
        for name, old in self.rolled.items():
            if name not in fresh and old.timer:
                old.timer.cancel()
        self.rolled = fresh
        self.chain = [r for r in fresh.values() if r.enabled]
        self.changed.set()
        self.changed = asyncio.Event()
        if self.queue:
            self._ensure_pump()

    # ------------------------------------------------------------ input
    def feed(self, data: bytes) -> None:
        dst = self.dst
        if dst is not None and not self.chain and not self.queue and not self.busy:
            if not dst.is_closing():
                dst.write(data)
            return
        self.queue.append((asyncio.get_running_loop().time(), data))
        self.queued_bytes += len(data)
        if self.queued_bytes > HIGH_WATER and self.src is not None and not self.src_paused:
            self.src_paused = True
            self.src.pause_reading()
        if dst is not None:  # else the data waits until the upstream connection is up
            self._ensure_pump()

    def feed_eof(self) -> None:
        if self.dst is not None and not self.chain and not self.queue and not self.busy:
            self._deliver_eof()
            return
        self.queue.append((asyncio.get_running_loop().time(), None))
        if self.dst is not None:
            self._ensure_pump()

    def _ensure_pump(self) -> None:
        self.wake.set()
        if self.pump is None or self.pump.done():
            self.pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        try:
            while self.queue:
                ts, data = self.queue.popleft()
                if data is not None:
                    self.queued_bytes -= len(data)
                if self.src_paused and self.queued_bytes < HIGH_WATER // 2 and self.src is not None:
                    self.src_paused = False
                    self.src.resume_reading()
                self.busy = True
                try:
                    await self._stage(list(self.chain), 0, ts, data)
                finally:
                    self.busy = False
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not kill the proxy server, only this connection
            log.exception("proxy link failed; closing the connection")
            self.link.close()

    # ------------------------------------------------------------ toxic stages
    async def _sleep(self, seconds: float, rolled: _Rolled) -> None:
        """Sleep, but return early when the toxic is removed or changed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.rolled.get(rolled.toxic.name) is not rolled or not rolled.enabled:
                return
            changed = self.changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    def _live(self, rolled: _Rolled) -> bool:
        return self.rolled.get(rolled.toxic.name) is rolled

    async def _stage(self, chain: list[_Rolled], index: int, ts: float, data: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        while index < len(chain) and not self._live(chain[index]):
            index += 1
        if index == len(chain):
            if data is None:
                self._deliver_eof()
            else:
                self._deliver(data)
            return
        rolled = chain[index]
        toxic = rolled.toxic
        attrs = toxic.attributes
        kind = toxic.type
        nxt = index + 1
        if kind == "latency":
            delay = attrs["latency"]
            jitter = attrs["jitter"]
            if jitter > 0:
                delay += random.randrange(-jitter, jitter)
            wait = ts + delay / 1000 - loop.time()
            if wait > 0:
                await self._sleep(wait, rolled)
                ts = loop.time()
            await self._stage(chain, nxt, ts, data)
        elif kind == "bandwidth":
            rate = attrs["rate"] * 1000  # bytes per second
            if data is None or rate <= 0:
                await self._stage(chain, nxt, ts, data)
                return
            piece = max(1, rate // 10)
            for start in range(0, len(data), piece):
                part = data[start : start + piece]
                due = max(loop.time(), rolled.state.get("due", 0.0)) + len(part) / rate
                rolled.state["due"] = due
                await self._sleep(due - loop.time(), rolled)
                await self._stage(chain, nxt, ts, part)
        elif kind == "slicer":
            if data is None:
                await self._stage(chain, nxt, ts, data)
                return
            bounds = _slices(0, len(data), attrs["average_size"], attrs["size_variation"])
            for i in range(0, len(bounds), 2):
                await self._stage(chain, nxt, ts, data[bounds[i] : bounds[i + 1]])
                if i + 2 < len(bounds) and attrs["delay"] > 0:
                    await self._sleep(attrs["delay"] / 1_000_000, rolled)
        elif kind == "limit_data":
            if data is None:
                await self._stage(chain, nxt, ts, data)
                return
            sent = rolled.state.get("sent", 0.0)
            remaining = max(0, attrs["bytes"] - int(sent))
            part = data[:remaining]
            if part:
                rolled.state["sent"] = sent + len(part)
                await self._stage(chain, nxt, ts, part)
            if rolled.state.get("sent", 0.0) >= attrs["bytes"]:
                self.link.close()
        elif kind == "timeout":
            if data is None:
                await self._stage(chain, nxt, ts, data)
            # data is swallowed while the toxic is active, as in Toxiproxy
        elif kind == "reset_peer":
            if data is None:
                await self._stage(chain, nxt, ts, data)
                return
            if "armed" not in rolled.state:
                rolled.state["armed"] = 1.0
                await self._sleep(attrs["timeout"] / 1000, rolled)
                if self._live(rolled):
                    self.link.reset()
        elif kind == "slow_close":
            if data is None:
                await self._sleep(attrs["delay"] / 1000, rolled)
            await self._stage(chain, nxt, ts, data)
        else:  # pragma: no cover - types are checked at the API
            await self._stage(chain, nxt, ts, data)

    # ------------------------------------------------------------ output
    def _deliver(self, data: bytes) -> None:
        dst = self.dst
        if dst is not None and not dst.is_closing() and not self.eof_delivered:
            dst.write(data)

    def _deliver_eof(self) -> None:
        if self.eof_delivered:
            return
        self.eof_delivered = True
        dst = self.dst
        if dst is not None and not dst.is_closing():
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()
        self.link.maybe_finished()

    def pending(self) -> bool:
        """Whether data is still on its way through this direction (then a close waits for it)."""
        return bool(self.queue) or self.busy

    def cancel(self) -> None:
        for rolled in self.rolled.values():
            if rolled.timer:
                rolled.timer.cancel()
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()


def _slices(start: int, end: int, average: int, variation: int) -> list[int]:
    """Toxiproxy's slicer: halve recursively until pieces are about ``average`` bytes."""
    out: list[int] = []
    stack = [(start, end)]
    while stack:
        lo, hi = stack.pop()
        if average <= 0 or (hi - lo) - average <= variation:
            out.extend((lo, hi))
            continue
        mid = lo + (hi - lo) // 2
        if variation > 0:
            mid += random.randrange(-variation, variation)
            mid = min(max(mid, lo + 1), hi - 1)
        stack.append((mid, hi))
        stack.append((lo, mid))
    return out


class Link:
    """One proxied connection: client ⇄ proxy ⇄ upstream."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy
        self.upstream = Direction(self, "upstream")  # client → upstream server
        self.downstream = Direction(self, "downstream")  # upstream server → client
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.closed = False
        self.connect_task: asyncio.Task[None] | None = None

    def direction(self, stream: str) -> Direction:
        return self.upstream if stream == "upstream" else self.downstream

    def refresh(self) -> None:
        for d in (self.upstream, self.downstream):
            d.refresh(self.proxy.toxics_for(d.stream))

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.proxy.upstream_address()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _ServerSide(self), host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("proxy %s: upstream %s:%s unreachable: %s", self.proxy.name, host, port, exc)
            self.close()
            return
        if self.closed:
            transport.close()
            return
        self.server = transport
        self.upstream.dst = self.downstream.src = transport
        self.refresh()
        if self.client is not None and not self.client.is_closing():
            self.client.resume_reading()

    def maybe_finished(self) -> None:
        if self.upstream.eof_delivered and self.downstream.eof_delivered:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for d in (self.upstream, self.downstream):
            d.cancel()
        for t in (self.client, self.server):
            if t is not None:
                t.close()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.proxy.links.discard(self)

    def reset(self) -> None:
        """Close both sides with a TCP RST (SO_LINGER 0), as reset_peer does."""
        for t in (self.client, self.server):
            if t is None:
                continue
            sock = t.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            t.abort()
        self.close()


class _Side(asyncio.Protocol):
    """Shared flow control: when our peer's outgoing buffer is full, stop reading from the other side."""

    link: Link
    incoming: Direction  # the direction whose source is this side
    outgoing: Direction  # the direction whose destination is this side

    def data_received(self, data: bytes) -> None:
        self.link.proxy.stats[self.incoming.stream] += len(data)
        self.incoming.feed(data)

    def eof_received(self) -> bool:
        self.incoming.feed_eof()
        return True  # keep the write side open: a half-close passes through

    def pause_writing(self) -> None:
        src = self.outgoing.src
        if src is not None and not src.is_closing():
            src.pause_reading()

    def resume_writing(self) -> None:
        src = self.outgoing.src
        if src is not None and not src.is_closing() and not self.outgoing.src_paused:
            src.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        link = self.link
        # let queued data reach the other side before closing it
        other = self.incoming
        if other.pending():
            other.feed_eof()
            return
        link.close()


class _ClientSide(_Side):
    def __init__(self, proxy: ProxyView) -> None:
        self.link = Link(proxy)
        self.incoming = self.link.upstream
        self.outgoing = self.link.downstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        link = self.link
        link.client = transport
        link.upstream.src = link.downstream.dst = transport
        link.proxy.links.add(link)
        link.proxy.stats["connections"] += 1
        # the toxics hold from the accept, as in Toxiproxy: an upstream that answers and closes at
        # once may be read before connect() resumes, and must not slip past them
        link.refresh()
        transport.pause_reading()
        link.connect_task = asyncio.get_running_loop().create_task(link.connect())


class _ServerSide(_Side):
    def __init__(self, link: Link) -> None:
        self.link = link
        self.incoming = link.downstream
        self.outgoing = link.upstream


def client_protocol_factory(proxy: ProxyView) -> asyncio.Protocol:
    return _ClientSide(proxy)
