"""The builtin Toxiproxy-compatible server's lifecycle: its event loop, on a thread or in the foreground.

One asyncio loop carries the proxies' data path (``aichaos.proxy.link``), their state
(``aichaos.proxy.registry``) and the v2 HTTP API (``aichaos.proxy.api``). ``BackgroundProxyServer``
runs it on a thread of its own (tests, benchmarks, embedding); ``serve`` runs it until a signal
(``aichaos proxy serve`` and ``python -m aichaos.proxy``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from aichaos.proxy.api import start_api
from aichaos.proxy.registry import ProxyRegistry


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times fewer µs per loop iteration: connection rate and
    latency depend on it), else asyncio's own loop. Behaviour is the same on both; the tests run
    on both (AICHAOS_PROXY_LOOP=asyncio forces asyncio's)."""
    if os.environ.get("AICHAOS_PROXY_LOOP") == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BackgroundProxyServer:
    """The builtin server on its own thread and loop: for tests, benchmarks and embedding.

    >>> with BackgroundProxyServer() as srv:  # doctest: +SKIP
    ...     srv.url
    'http://127.0.0.1:41234'
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.loop = new_event_loop()
        self.registry = ProxyRegistry()
        self._api: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="aichaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundProxyServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_api(self.registry, self.host, self.port), self.loop)
        self._api = future.result(10)
        self.port = self._api.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self.registry.close_all()
            if self._api is not None:
                self._api.close()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> BackgroundProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM; ``on_ready`` gets the API URL."""
    import signal

    async def main() -> None:
        registry = ProxyRegistry()
        api = await start_api(registry, host, port)
        bound = api.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        on_ready(f"http://{host}:{bound}")
        await stop.wait()
        registry.close_all()
        api.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
