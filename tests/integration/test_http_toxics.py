"""The builtin proxy's HTTP toxics, for real on 127.0.0.1: a proxy with ``protocol: http`` in front
of a small HTTP/1.1 server (tests/integration/http_upstream.py), measured by a client of our own."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from aichaos.errors import ProxyError
from aichaos.proxy.client import ToxiproxyClient
from aichaos.proxy.server import BackgroundProxyServer
from tests.integration.http_upstream import HttpUpstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[HttpUpstream]:
    server = HttpUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundProxyServer]:
    with BackgroundProxyServer() as srv:
        yield srv


@pytest.fixture
def edge(server: BackgroundProxyServer, upstream: HttpUpstream) -> Iterator[tuple[ToxiproxyClient, str]]:
    client = ToxiproxyClient(server.url)
    info = client.create_proxy("llm", upstream.address)
    client.set_protocol("llm", "http")
    yield client, f"http://127.0.0.1:{info.port}"
    client.delete_proxy("llm")


def stream_events(http: httpx.Client, url: str) -> tuple[list[str], list[float], bool]:
    """The events of one SSE response, the time each arrived, and whether the body ended well."""
    events: list[str] = []
    times: list[float] = []
    complete = True
    try:
        with http.stream("GET", url) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    times.append(time.perf_counter())
                    events.append(line[6:])
    except httpx.TransportError:
        complete = False
    return events, times, complete


def test_plain_messages_pass_unchanged_on_one_keep_alive_connection(edge) -> None:
    _, base = edge
    with httpx.Client(base_url=base, timeout=5) as http:
        for _ in range(3):
            assert http.get("/json").json() == {"ok": True}
            assert http.get("/chunked").text == "hello world"
            assert http.post("/echo", content=b"x" * 100_000).content == b"x" * 100_000
            events, _, complete = stream_events(http, "/sse?events=5")
            assert complete and events == [f'{{"i": {k}}}' for k in range(5)] + ["[DONE]"]


def test_stream_stall_shows_as_a_gap_at_its_event(edge) -> None:
    client, base = edge
    k, stall_ms = 7, 200
    client.add_toxic("llm", "stream_stall", {"after_events": k, "stall": stall_ms}, name="stall")
    with httpx.Client(base_url=base, timeout=5) as http:
        for _ in range(3):
            events, times, complete = stream_events(http, "/sse?events=20&gap_ms=5")
            assert complete and len(events) == 21
            gaps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
            # gaps[k - 1] is between event k and event k + 1
            assert abs(gaps[k - 1] - stall_ms) <= 5, gaps
            assert max(g for i, g in enumerate(gaps) if i != k - 1) < stall_ms / 2, gaps


def test_http_error_answers_its_share_of_requests(edge, upstream: HttpUpstream) -> None:
    client, base = edge
    client.add_toxic("llm", "http_error", {"status": 429, "retry_after": 2}, toxicity=0.2, name="errors")
    before = upstream.requests
    statuses: list[int] = []
    with httpx.Client(base_url=base, timeout=5) as http:
        for _ in range(2000):
            response = http.get("/json")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["retry-after"] == "2"
                assert response.json()["error"]["code"] == 429
    share = statuses.count(429) / len(statuses)
    assert 0.17 <= share <= 0.23, share
    assert set(statuses) == {200, 429}
    assert upstream.requests - before == statuses.count(200)  # an error answer is not forwarded


def test_http_error_matches_path_and_method(edge) -> None:
    client, base = edge
    client.add_toxic("llm", "http_error", {"status": 500, "path": "/echo", "method": "POST"}, name="errors")
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.get("/json").status_code == 200
        assert http.post("/echo", content=b"abc").status_code == 500
        assert http.get("/echo").status_code == 200
        assert http.get("/json").status_code == 200  # the swallowed body did not derail the connection


def test_truncation_ends_the_stream_without_its_final_event(edge) -> None:
    client, base = edge
    client.add_toxic("llm", "stream_truncate", {"after_events": 3, "mode": "close"}, name="cut")
    with httpx.Client(base_url=base, timeout=5) as http:
        events, _, complete = stream_events(http, "/sse?events=10")
        assert events == [f'{{"i": {k}}}' for k in range(3)]
        assert not complete  # the connection closed inside the body
    client.remove_toxic("llm", "cut")
    client.add_toxic("llm", "stream_truncate", {"after_events": 3, "mode": "end"}, name="cut")
    with httpx.Client(base_url=base, timeout=5) as http:
        events, _, complete = stream_events(http, "/sse?events=10")
        assert complete and events == [f'{{"i": {k}}}' for k in range(3)]  # a 200 well framed, no [DONE]
        assert "[DONE]" not in events
        assert http.get("/json").json() == {"ok": True}  # and the connection goes on


def test_stream_corrupt_replaces_or_inserts(edge) -> None:
    client, base = edge
    client.add_toxic("llm", "stream_corrupt", {"after_events": 2, "mode": "malformed"}, name="bad")
    with httpx.Client(base_url=base, timeout=5) as http:
        events, _, complete = stream_events(http, "/sse?events=5")
        assert complete and len(events) == 6
        assert events[:2] == ['{"i": 0}', '{"i": 1}'] and events[2].startswith('{"id": "aichaos-corrupt"')
    client.update_toxic("llm", "bad", {"mode": "error"})
    with httpx.Client(base_url=base, timeout=5) as http:
        events, _, complete = stream_events(http, "/sse?events=5")
        assert complete and len(events) == 7 and '"error"' in events[2] and events[3] == '{"i": 2}'


def test_first_byte_delay_and_throttle(edge) -> None:
    client, base = edge
    client.add_toxic("llm", "first_byte_delay", {"delay": 150}, name="ttfb")
    with httpx.Client(base_url=base, timeout=5) as http:
        started = time.perf_counter()
        events, times, _ = stream_events(http, "/sse?events=10")
        assert times[0] - started >= 0.15
        assert times[-1] - times[0] < 0.05  # the rest of the stream untouched
    client.remove_toxic("llm", "ttfb")
    client.add_toxic("llm", "stream_throttle", {"rate": 50}, name="slow")
    with httpx.Client(base_url=base, timeout=5) as http:
        events, times, _ = stream_events(http, "/sse?events=10")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.015 and len(events) == 11


def test_removing_a_stall_releases_the_held_stream(edge, server: BackgroundProxyServer) -> None:
    client, base = edge
    client.add_toxic("llm", "stream_stall", {"after_events": 1, "stall": 60_000}, name="stall")
    with httpx.Client(base_url=base, timeout=10) as http, http.stream("GET", "/sse?events=5") as response:
        lines = response.iter_lines()
        assert next(lines) == 'data: {"i": 0}'
        started = time.perf_counter()
        ToxiproxyClient(server.url).remove_toxic("llm", "stall")
        rest = [line for line in lines if line.startswith("data: ")]
        assert len(rest) == 5 and time.perf_counter() - started < 2


def test_http_toxics_need_an_http_proxy(server: BackgroundProxyServer, upstream: HttpUpstream) -> None:
    client = ToxiproxyClient(server.url)
    client.create_proxy("plain", upstream.address)
    try:
        with pytest.raises(ProxyError, match="protocol"):
            client.add_toxic("plain", "http_error", {"status": 503})
    finally:
        client.delete_proxy("plain")


def test_bytes_that_are_not_http_are_relayed(edge, upstream: HttpUpstream) -> None:
    _, base = edge
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\x01 not http\r\n\r\n" + b"x" * 70_000)  # a bad head, then more than MAX_HEAD
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while b'{"ok": true}' not in answer:  # relayed as bytes: the upstream still finds the request
            data = sock.recv(65536)
            assert data, answer
            answer += data
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.get("/json").status_code == 200


def test_the_fault_kind_applies_reverts_and_cleanup_removes_it(server: BackgroundProxyServer,
                                                               upstream: HttpUpstream) -> None:
    """The http_error fault through its kind (before_load switches the edge to HTTP, apply adds the
    toxic, the revert removes it), and again as after a kill -9: cleanup's undoer removes it."""
    from types import SimpleNamespace

    from aichaos.experiment.model import HttpErrorFault
    from aichaos.faults.registry import UndoContext, kind_of, revert_undo

    client = ToxiproxyClient(server.url)
    info = client.create_proxy("frontend__backend", upstream.address)
    try:
        fault = HttpErrorFault(type="http_error", edge="frontend->backend", status=503)
        kind = kind_of(fault)
        ctx = SimpleNamespace(client=client)
        kind.before_load(fault, ctx, None)  # type: ignore[arg-type]
        assert client.protocol("frontend__backend") == "http"
        with httpx.Client(base_url=f"http://127.0.0.1:{info.port}", timeout=5) as http:
            applied = kind.apply(fault, "fault", 0, ctx)  # type: ignore[arg-type]
            assert http.get("/json").status_code == 503
            applied.revert()
            assert http.get("/json").status_code == 200
            kind.apply(fault, "fault", 1, ctx)  # type: ignore[arg-type]
            assert http.get("/json").status_code == 503
            said = revert_undo(applied.undo_record | {"toxic": "aichaos_fault_1"}, UndoContext(lambda pid: False))
            assert "removed toxic aichaos_fault_1" in said
            assert http.get("/json").status_code == 200 and client.toxics("frontend__backend") == []
    finally:
        client.delete_proxy("frontend__backend")
