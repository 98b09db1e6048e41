"""The sample stack's threaded HTTP server: a client that hangs up is a debug line, not a traceback."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

from sample_stack.httpserve import JsonHandler, Server


class SlowHandler(JsonHandler):
    answered = threading.Event()

    def do_GET(self) -> None:
        time.sleep(0.2)  # the client resets the connection meanwhile
        try:
            for _ in range(64):  # writes past the socket buffer, so one of them meets the reset
                self.send_json(200, {"pad": "x" * 65536})
        finally:
            SlowHandler.answered.set()


def test_client_that_hangs_up_leaves_no_traceback(capsys, caplog):
    server = Server(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="sample_stack.httpserve"):
            client = socket.create_connection(server.server_address[:2])
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            client.close()
            assert SlowHandler.answered.wait(5)
            deadline = time.monotonic() + 5
            while "hung up" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    assert "hung up before its answer" in caplog.text
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "ConnectionResetError" not in err


def test_other_handler_errors_are_still_reported(capsys):
    class Broken(JsonHandler):
        def do_GET(self) -> None:
            raise RuntimeError("a real bug")

    server = Server(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address[:2]) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            client.settimeout(5)
            while client.recv(4096):
                pass
    finally:
        server.shutdown()
        server.server_close()
    assert "RuntimeError: a real bug" in capsys.readouterr().err
