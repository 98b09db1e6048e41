"""The builtin proxy's API refuses bad input with 4xx JSON and keeps serving; no leaks under churn."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aichaos.proxy.backend import ProxyBackend, start_proxy_backend
from tests.integration.tcp import TcpServer, echo


@pytest.fixture(scope="module")
def builtin(tmp_path_factory) -> Iterator[ProxyBackend]:
    b = start_proxy_backend(tmp_path_factory.mktemp("proxy"), kind="builtin")
    yield b
    b.close()


def assert_json_error(response: requests.Response, low: int = 400, high: int = 499) -> None:
    assert low <= response.status_code <= high, (response.status_code, response.text)
    body = response.json()
    assert set(body) >= {"error", "status"} and body["status"] == response.status_code


def still_serving(url: str) -> None:
    assert requests.get(url + "/version", timeout=5).status_code == 200


@pytest.mark.parametrize("body", [
    b"{not json", b"[1, 2", b'"just a string"', b"\xff\xfe", b'{"name": 5, "upstream": "127.0.0.1:1"}',
    b'{"name": "x", "upstream": "127.0.0.1:1", "enabled": "yes"}',
    b'{"name": "x", "upstream": "127.0.0.1:1", "colour": "red"}',
    b'{"name": "x", "upstream": "nowhere"}', b'{"name": "x", "upstream": "127.0.0.1:99999"}',
])
def test_bad_proxy_bodies_get_400(builtin, body):
    r = requests.post(builtin.url + "/proxies", data=body, timeout=5)
    assert_json_error(r)
    still_serving(builtin.url)


@pytest.mark.parametrize("body", [
    {"type": "latency", "attributes": {"latency": "slow"}}, {"type": "latency", "attributes": {"latency": -5}},
    {"type": "latency", "attributes": {"lag": 5}}, {"type": "latency", "toxicity": 2},
    {"type": "latency", "attributes": [1]}, {"type": 7}, {"type": "latency", "surprise": 1},
    {"type": "latency", "attributes": {"latency": 1.5}}, {"type": "latency", "attributes": {"latency": 10**30}},
])
def test_bad_toxic_bodies_get_400(builtin, body):
    requests.post(builtin.url + "/proxies", json={"name": "t", "upstream": "127.0.0.1:1"}, timeout=5)
    r = requests.post(builtin.url + "/proxies/t/toxics", json=body, timeout=5)
    assert_json_error(r)
    assert requests.get(builtin.url + "/proxies/t/toxics", timeout=5).json() == []
    still_serving(builtin.url)


def test_huge_body_is_refused(builtin):
    r = requests.post(builtin.url + "/proxies", data=b"x" * (2 * 1024 * 1024), timeout=10)
    assert_json_error(r, 413, 413)
    still_serving(builtin.url)


def test_garbage_on_the_socket(builtin):
    _host, port = builtin.url.rsplit(":", 1)
    for garbage in (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"):
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as sock:
            sock.sendall(garbage)
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 400")
    still_serving(builtin.url)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
names = st.sampled_from(["a", "b", "zz"]) | st.text(alphabet="abc_-", min_size=1, max_size=8)
toxic_body = st.fixed_dictionaries({}, optional={
    "name": names, "type": st.sampled_from(["latency", "bandwidth", "timeout", "slicer", "bogus"]),
    "stream": st.sampled_from(["upstream", "downstream", "sideways"]),
    "toxicity": st.floats(-1, 2) | st.text(max_size=3),
    "attributes": st.dictionaries(st.sampled_from(["latency", "jitter", "rate", "x"]),
                                  st.integers(-5, 10**6) | st.text(max_size=3), max_size=3),
})
proxy_body = st.fixed_dictionaries({}, optional={
    "name": names, "upstream": st.sampled_from(["127.0.0.1:1", "bad", "127.0.0.1:70000", ""]),
    "listen": st.sampled_from(["127.0.0.1:0", "nonsense", "127.0.0.1:99999"]),
    "enabled": st.booleans() | st.text(max_size=2),
})
calls = st.tuples(
    st.sampled_from(["GET", "POST", "DELETE", "PATCH", "PUT"]),
    st.sampled_from(["/proxies", "/proxies/{p}", "/proxies/{p}/toxics", "/proxies/{p}/toxics/{t}", "/reset",
                     "/populate", "/version", "/nowhere"]),
    names, names,
    st.one_of(toxic_body, proxy_body, json_values, st.lists(proxy_body, max_size=3)),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(call=calls)
def test_random_api_calls_never_break_the_server(builtin, call):
    method, path, p, t, body = call
    url = builtin.url + path.format(p=p, t=t)
    r = requests.request(method, url, data=json.dumps(body), timeout=5)
    if r.status_code >= 400:
        payload = r.json()
        assert payload["status"] == r.status_code
        # the only 5xx Toxiproxy has for input is a listen address that cannot be bound
        assert r.status_code < 500 or payload["error"].startswith("listen tcp"), payload
    assert requests.get(builtin.url + "/version", timeout=5).status_code == 200


def _fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _churn(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"hi")
            assert sock.recv(2) == b"hi"


def test_no_fd_or_memory_growth_after_ten_thousand_connections(builtin):
    requests.post(builtin.url + "/reset", timeout=5)
    upstream = TcpServer(echo)
    try:
        r = requests.post(builtin.url + "/proxies", json={"name": "churn", "upstream": upstream.address}, timeout=5)
        port = int(r.json()["listen"].rsplit(":", 1)[1])
        pid = builtin.pid
        assert pid is not None
        _churn(port, 1000)  # warm up allocator and caches
        time.sleep(0.5)
        fds, rss = _fds(pid), _rss_kb(pid)
        _churn(port, 10_000)
        time.sleep(0.5)
        assert _fds(pid) - fds <= 5
        assert _rss_kb(pid) - rss < 20_000  # KiB
    finally:
        requests.delete(builtin.url + "/proxies/churn", timeout=5)
        upstream.close()
