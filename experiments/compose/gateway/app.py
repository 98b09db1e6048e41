"""A stand-in gateway: /predict calls the model at MODEL_URL (a kept-alive connection per thread)."""

import http.client
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

LOCAL = threading.local()


def model():
    conn = getattr(LOCAL, "conn", None)
    if conn is None:
        url = urlsplit(os.environ["MODEL_URL"])
        conn = LOCAL.conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
    return conn


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, '{"ok": true}')
            return
        try:
            conn = model()
            conn.request("GET", "/predict")
            response = conn.getresponse()
            self._send(response.status, json.dumps({"model": json.loads(response.read())}))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            LOCAL.conn = None
            self._send(502, json.dumps({"error": str(exc)}))


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Gateway).serve_forever()
