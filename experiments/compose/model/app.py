"""A stand-in model service: /predict answers after MODEL_DELAY_MS; Prometheus metrics on a port of
their own (METRICS_PORT); /health for the Compose healthcheck."""

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = [0]
LOCK = threading.Lock()


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

    def log_message(self, *args):
        pass

    def _send(self, status, body, kind="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, '{"ok": true}')
        elif self.path.startswith("/predict"):
            time.sleep(float(os.environ.get("MODEL_DELAY_MS", "5")) / 1000)
            with LOCK:
                COUNT[0] += 1
            self._send(200, json.dumps({"label": "positive", "version": os.environ.get("MODEL_VERSION", "v1")}))
        else:
            self._send(404, '{"error": "not found"}')


class Metrics(Api):
    def do_GET(self):
        with LOCK:
            n = COUNT[0]
        self._send(200, f"# TYPE model_predictions_total counter\nmodel_predictions_total {n}\n", "text/plain")


def main():
    metrics = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("METRICS_PORT", "9100"))), Metrics)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    with open(os.path.join(os.environ.get("STATE_DIR", "/tmp"), "model.started"), "a") as marker:
        marker.write(f"{time.time()}\n")  # a file on the named volume: mounts work
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Api).serve_forever()


if __name__ == "__main__":
    main()
