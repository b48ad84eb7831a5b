"""The sample service the image build packs: a tiny HTTP server with a health endpoint.

Standard library only, so the runtime image needs nothing but Python.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "dev")
SLOT = os.environ.get("APP_SLOT", "")


class Handler(BaseHTTPRequestHandler):
    server_version = "pouw-sample"

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/":
            self._send(200, {"service": "pouw-sample", "version": VERSION, "slot": SLOT})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("0.0.0.0", port), Handler)


def main() -> None:
    server = serve(int(os.environ.get("PORT", "8080")))
    # Orchestrators stop containers with SIGTERM: finish in-flight requests, then exit.
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    server.serve_forever()


if __name__ == "__main__":
    main()
