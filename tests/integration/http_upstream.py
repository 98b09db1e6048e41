"""A small HTTP/1.1 server for the HTTP-aware proxy tests: keep-alive, and three kinds of body.

    GET /sse?events=N&gap_ms=G   text/event-stream, chunked: N events ``data: {"i": k}`` G ms apart,
                                 then ``data: [DONE]``
    GET /json                    application/json with Content-Length
    GET /chunked                 text/plain, chunked in three pieces
    POST /echo                   the request body back, with Content-Length
Every answer counts in ``requests``.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import parse_qs, urlsplit

from tests.integration.tcp import TcpServer


def _read_request(conn: socket.socket, buf: bytearray) -> tuple[str, str, bytes] | None:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    del buf[:end]
    method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
    length = 0
    for line in head.split("\r\n")[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    while len(buf) < length:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return method, target, body


class HttpUpstream(TcpServer):
    def __init__(self) -> None:
        self.requests = 0
        super().__init__(self._serve)

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        with conn:
            while (request := _read_request(conn, buf)) is not None:
                _, target, body = request
                self.requests += 1
                url = urlsplit(target)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/sse":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    gap = float(query.get("gap_ms", "0")) / 1000
                    for k in range(int(query.get("events", "10"))):
                        event = b'data: {"i": %d}\n\n' % k
                        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                        if gap:
                            time.sleep(gap)
                    done = b"data: [DONE]\n\n"
                    conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                elif url.path == "/chunked":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n1\r\n \r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n")
                else:
                    payload = body if url.path == "/echo" else b'{"ok": true}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(payload), payload))
