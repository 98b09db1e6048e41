"""Conformance of the fault proxy with Toxiproxy v2's API and toxic behaviour.

Runs against the builtin server (always) and against a real ``toxiproxy-server`` when one is on
PATH, through toxiproxy-python (aichaos's client) and through raw HTTP. The behaviours mirror
those Toxiproxy's own Go tests assert (api_test.go, toxics/*_test.go). Timing tolerances are
stated per test; they hold on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from aichaos.errors import ProxyError
from aichaos.proxy.backend import ProxyBackend, start_proxy_backend
from aichaos.proxy.client import ToxiproxyClient
from tests.integration.tcp import TcpServer, echo, recv_all, recv_exactly, send_and_close

# the builtin server on uvloop (its default) and on asyncio's own loop (its fallback)
BACKENDS = ["builtin", "builtin-asyncio"] + (["toxiproxy-server"] if shutil.which("toxiproxy-server") else [])


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory) -> Iterator[ProxyBackend]:
    kind = request.param
    if kind == "builtin-asyncio":
        os.environ["AICHAOS_PROXY_LOOP"] = "asyncio"  # read by the server process at start
        kind = "builtin"
    try:
        b = start_proxy_backend(tmp_path_factory.mktemp("proxy"), kind=kind)
    finally:
        os.environ.pop("AICHAOS_PROXY_LOOP", None)
    yield b
    b.close()


@pytest.fixture
def api(backend) -> Iterator[str]:
    yield backend.url
    # leave the server empty for the next test
    for name in list(requests.get(backend.url + "/proxies", timeout=5).json()):
        requests.delete(f"{backend.url}/proxies/{name}", timeout=5)


@pytest.fixture(scope="module")
def upstream() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.close()


@pytest.fixture
def client(api) -> ToxiproxyClient:
    return ToxiproxyClient(api)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def rtt(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - started


# ------------------------------------------------------------------ API shapes and status codes
def test_version(api):
    response = requests.get(api + "/version", timeout=5)
    assert response.status_code == 200
    assert response.json()["version"]


def test_create_proxy_shape_and_listen_resolved(api, upstream):
    r = requests.post(api + "/proxies", json={"name": "p1", "upstream": upstream.address,
                                              "listen": "127.0.0.1:0"}, timeout=5)
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "p1" and body["upstream"] == upstream.address and body["enabled"] is True
    assert body["toxics"] == []
    host, port = body["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert requests.get(api + "/proxies/p1", timeout=5).json()["listen"] == body["listen"]
    assert set(requests.get(api + "/proxies", timeout=5).json()) == {"p1"}


def test_proxy_errors(api, upstream):
    requests.post(api + "/proxies", json={"name": "p1", "upstream": upstream.address}, timeout=5)
    r = requests.post(api + "/proxies", json={"name": "p1", "upstream": upstream.address}, timeout=5)
    assert r.status_code == 409 and r.json() == {"error": "proxy already exists", "status": 409}
    r = requests.post(api + "/proxies", json={"upstream": upstream.address}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "missing required field: name"
    r = requests.post(api + "/proxies", json={"name": "x"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "missing required field: upstream"
    r = requests.get(api + "/proxies/nope", timeout=5)
    assert r.status_code == 404 and r.json() == {"error": "proxy not found", "status": 404}
    assert requests.delete(api + "/proxies/p1", timeout=5).status_code == 204
    assert requests.delete(api + "/proxies/p1", timeout=5).status_code == 404


def test_toxic_crud_defaults_and_errors(api, upstream):
    requests.post(api + "/proxies", json={"name": "p1", "upstream": upstream.address}, timeout=5)
    r = requests.post(api + "/proxies/p1/toxics", json={"type": "latency", "attributes": {"latency": 10}},
                      timeout=5)
    assert r.status_code == 200
    assert r.json() == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                        "toxicity": 1.0, "attributes": {"latency": 10, "jitter": 0}}
    r = requests.post(api + "/proxies/p1/toxics", json={"type": "latency"}, timeout=5)
    assert r.status_code == 409 and r.json()["error"] == "toxic already exists"
    r = requests.post(api + "/proxies/p1/toxics", json={"type": "nonsense"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "invalid toxic type"
    r = requests.post(api + "/proxies/p1/toxics", json={"type": "latency", "stream": "sideways"}, timeout=5)
    assert r.status_code == 400 and "stream" in r.json()["error"]
    r = requests.post(api + "/proxies/p1/toxics/latency_downstream",
                      json={"attributes": {"jitter": 5}, "toxicity": 0.5}, timeout=5)
    assert r.status_code == 200
    assert r.json()["attributes"] == {"latency": 10, "jitter": 5} and r.json()["toxicity"] == 0.5
    assert requests.get(api + "/proxies/p1/toxics", timeout=5).json()[0]["attributes"]["jitter"] == 5
    assert requests.get(api + "/proxies/p1", timeout=5).json()["toxics"][0]["name"] == "latency_downstream"
    r = requests.get(api + "/proxies/p1/toxics/nope", timeout=5)
    assert r.status_code == 404 and r.json() == {"error": "toxic not found", "status": 404}
    assert requests.delete(api + "/proxies/p1/toxics/latency_downstream", timeout=5).status_code == 204
    assert requests.delete(api + "/proxies/p1/toxics/latency_downstream", timeout=5).status_code == 404
    r = requests.post(api + "/proxies/nope/toxics", json={"type": "latency"}, timeout=5)
    assert r.status_code == 404 and r.json()["error"] == "proxy not found"


def test_populate_and_reset(api, upstream):
    r = requests.post(api + "/populate", json=[{"name": "a", "upstream": upstream.address},
                                                {"name": "b", "upstream": upstream.address, "enabled": False}],
                      timeout=5)
    assert r.status_code == 201
    proxies = {p["name"]: p for p in r.json()["proxies"]}
    assert proxies["a"]["enabled"] is True and proxies["b"]["enabled"] is False
    r = requests.post(api + "/populate", json=[{"upstream": upstream.address}], timeout=5)
    assert r.status_code == 400 and "name" in r.json()["error"]
    requests.post(api + "/proxies/a/toxics", json={"type": "timeout"}, timeout=5)
    assert requests.post(api + "/reset", timeout=5).status_code == 204
    state = requests.get(api + "/proxies", timeout=5).json()
    assert state["a"]["toxics"] == [] and state["b"]["enabled"] is True


# ------------------------------------------------------------------ the client wrapper
def test_client_drives_the_server(client, upstream):
    info = client.create_proxy("c1", upstream.address)
    assert info.port > 0
    name = client.add_toxic("c1", "latency", {"latency": 5}, name="slow")
    assert [t["name"] for t in client.toxics("c1")] == [name]
    client.update_toxic("c1", "slow", {"latency": 7})
    assert client.toxics("c1")[0]["attributes"]["latency"] == 7
    client.set_enabled("c1", False)
    assert client.proxies()["c1"]["enabled"] is False
    client.set_enabled("c1", True)
    client.remove_toxic("c1", "slow")
    assert client.toxics("c1") == []
    with pytest.raises(ProxyError, match="already exists"):
        client.create_proxy("c1", upstream.address)
    with pytest.raises(ProxyError, match="does not exist"):
        client.add_toxic("nope", "latency", {"latency": 1})
    with pytest.raises(ProxyError, match=r"refused|400"):
        client.add_toxic("c1", "latency", {"latency": -1})
    client.delete_proxy("c1")


def test_client_errors_when_no_server_answers():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ProxyError, match="cannot reach"):
        ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=1).create_proxy("x", "127.0.0.1:1")


def test_client_times_out_on_a_silent_server():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections, never answers
    port = silent.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ProxyError, match="did not answer within"):
        ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=0.5).version()
    assert time.monotonic() - started < 3
    silent.close()


# ------------------------------------------------------------------ the data path
def test_bytes_are_exact_for_one_mebibyte(client, upstream):
    info = client.create_proxy("data", upstream.address)
    payload = os.urandom(1024 * 1024)
    with connect(info.port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        sender.join()


def test_fifty_parallel_connections_are_exact(client, upstream):
    info = client.create_proxy("par", upstream.address)

    def one(i: int) -> bool:
        payload = os.urandom(64 * 1024 + i)
        with connect(info.port) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            ok = recv_exactly(sock, len(payload)) == payload
            sender.join()
            return ok

    with ThreadPoolExecutor(50) as pool:
        assert all(pool.map(one, range(50)))


def test_latency_toxic_timing_and_live_update(client, upstream):
    info = client.create_proxy("lat", upstream.address)
    with connect(info.port) as sock:
        base = min(rtt(sock) for _ in range(20))
        assert base < 0.02
        client.add_toxic("lat", "latency", {"latency": 100}, name="lat")  # on an open connection
        times = [rtt(sock) for _ in range(5)]
        assert all(0.095 <= t <= 0.16 for t in times), times  # 100 ms, +60 ms for a loaded machine
        client.update_toxic("lat", "lat", {"latency": 200})
        assert 0.195 <= rtt(sock) <= 0.28
        client.add_toxic("lat", "latency", {"latency": 50}, stream="upstream", name="up")
        assert 0.245 <= rtt(sock) <= 0.34  # both directions add up
        client.remove_toxic("lat", "lat")
        client.remove_toxic("lat", "up")
        assert rtt(sock) < 0.05


def test_latency_jitter_stays_within_bounds(client, upstream):
    info = client.create_proxy("jit", upstream.address)
    client.add_toxic("jit", "latency", {"latency": 100, "jitter": 40})
    with connect(info.port) as sock:
        times = [rtt(sock) for _ in range(20)]
    assert all(0.058 <= t <= 0.2 for t in times), times
    assert max(times) - min(times) > 0.02  # it does vary


def test_latency_is_pipelined_not_serialised(client, upstream):
    """Chunks sent 20 ms apart under 200 ms latency arrive ~20 ms apart, not 200 ms apart."""
    info = client.create_proxy("pipe", upstream.address)
    client.add_toxic("pipe", "latency", {"latency": 200}, stream="upstream")
    with connect(info.port) as sock:
        started = time.perf_counter()
        for _ in range(5):
            sock.sendall(b"x")
            time.sleep(0.02)
        assert recv_exactly(sock, 5) == b"xxxxx"
        elapsed = time.perf_counter() - started
    assert 0.28 <= elapsed <= 0.45, elapsed


def test_toxicity_zero_never_applies(client, upstream):
    info = client.create_proxy("tox0", upstream.address)
    client.add_toxic("tox0", "latency", {"latency": 300}, toxicity=0.0)
    with connect(info.port) as sock:
        assert max(rtt(sock) for _ in range(5)) < 0.1


def test_disable_closes_connections_and_refuses_new_ones(client, upstream):
    info = client.create_proxy("down", upstream.address)
    sock = connect(info.port)
    assert rtt(sock) < 0.1
    client.set_enabled("down", False)
    sock.settimeout(2)
    try:
        assert sock.recv(10) == b""  # closed by the proxy
    except ConnectionResetError:
        pass
    sock.close()
    with pytest.raises(OSError):
        connect(info.port, timeout=1)
    client.set_enabled("down", True)
    with connect(info.port) as again:  # same port again
        assert rtt(again) < 0.1


def test_timeout_toxic_holds_data_then_releases_when_removed(client, upstream):
    info = client.create_proxy("hold", upstream.address)
    client.add_toxic("hold", "timeout", {"timeout": 0}, name="t")
    with connect(info.port) as sock:
        sock.settimeout(0.5)
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        client.remove_toxic("hold", "t")
        sock.settimeout(2)
        assert rtt(sock, b"after") < 0.5  # data sent while held is dropped, new data flows


def test_timeout_toxic_closes_after_its_timeout(client, upstream):
    info = client.create_proxy("tclose", upstream.address)
    client.add_toxic("tclose", "timeout", {"timeout": 200})
    with connect(info.port) as sock:
        started = time.perf_counter()
        sock.sendall(b"x")
        sock.settimeout(3)
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
        assert 0.18 <= time.perf_counter() - started <= 0.6


def test_reset_peer_sends_rst(client, upstream):
    info = client.create_proxy("rst", upstream.address)
    client.add_toxic("rst", "reset_peer", {"timeout": 100})
    with connect(info.port) as sock:
        started = time.perf_counter()
        sock.sendall(b"x")
        sock.settimeout(3)
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
            sock.recv(10)
        assert 0.09 <= time.perf_counter() - started <= 0.5


def test_bandwidth_limits_throughput(client, upstream):
    info = client.create_proxy("bw", upstream.address)
    client.add_toxic("bw", "bandwidth", {"rate": 100})  # 100 KB/s downstream
    payload = os.urandom(50_000)
    with connect(info.port) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        elapsed = time.perf_counter() - started
    assert 0.45 <= elapsed <= 0.8, elapsed


def test_slicer_slices_with_delay(client, upstream):
    info = client.create_proxy("slice", upstream.address)
    client.add_toxic("slice", "slicer", {"average_size": 100, "size_variation": 10, "delay": 10_000})
    payload = os.urandom(1000)
    with connect(info.port) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        reads = []
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            reads.append(len(chunk))
            got += chunk
        elapsed = time.perf_counter() - started
    assert got == payload
    assert len(reads) >= 5  # arrived in slices
    assert elapsed >= 0.06  # at least ~8 gaps of 10 ms


def test_limit_data_closes_after_the_limit(client, upstream):
    info = client.create_proxy("limit", upstream.address)
    client.add_toxic("limit", "limit_data", {"bytes": 1000})
    with connect(info.port) as sock:
        sock.sendall(os.urandom(5000))
        sock.settimeout(3)
        try:
            got = recv_all(sock)
        except ConnectionResetError:
            got = b""
    assert len(got) == 1000


def test_slow_close_delays_the_close(client):
    closer = TcpServer(send_and_close(b"bye"))
    try:
        info = client.create_proxy("slowclose", closer.address)
        client.add_toxic("slowclose", "slow_close", {"delay": 300})
        with connect(info.port) as sock:
            started = time.perf_counter()
            assert recv_all(sock) == b"bye"
            assert time.perf_counter() - started >= 0.28
    finally:
        closer.close()


def test_unreachable_upstream_closes_the_client(client):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = sock.getsockname()[1]
    sock.close()
    info = client.create_proxy("dead", f"127.0.0.1:{dead}")
    with connect(info.port) as conn:
        conn.settimeout(3)
        try:
            assert conn.recv(10) == b""
        except ConnectionResetError:
            pass
