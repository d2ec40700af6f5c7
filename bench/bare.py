"""The bare server that ``python -m bench`` holds MOAI against, written here for the bench.

It has the shape of the single-process servers Concrete-ML users deploy first: one
process, every model's ``FHEModelServer`` loaded at start, each client's evaluation keys
kept in memory as the bytes it uploaded, and ``FHEModelServer.run`` called inside the
request, which deserializes those bytes on every call. No authentication, no queue, no
database, no limits: the floor MOAI's own costs are measured from.

``python -m bench.bare DEMO_DIR PORT`` serves, for each model folder in DEMO_DIR:
``POST /<model>/add_key`` (body: evaluation keys) -> ``{"uid": ...}``, and
``POST /<model>/compute?uid=UID`` (body: one ciphertext) -> the output bytes.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def serve(demo_dir: Path, port: int) -> None:
    from concrete.ml.deployment import FHEModelServer

    servers = {
        folder.name: FHEModelServer(str(folder))
        for folder in sorted(demo_dir.iterdir())
        if (folder / "server.zip").exists()
    }
    keys: dict[str, bytes] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service's clients get
        # Headers and body go out as two writes: with Nagle's algorithm on, the body waits for
        # the client's delayed ACK of the headers (~40 ms on Linux). gunicorn sets TCP_NODELAY.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            model, _, action = parts.path.strip("/").partition("/")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if model not in servers:
                self._answer(404, b"no such model", "text/plain")
            elif action == "add_key":
                uid = str(uuid.uuid4())
                with lock:
                    keys[uid] = body
                self._answer(200, json.dumps({"uid": uid}).encode(), "application/json")
            elif action == "compute":
                uid = parse_qs(parts.query).get("uid", [""])[0]
                output = servers[model].run(body, keys[uid])
                self._answer(200, output, "application/octet-stream")
            else:
                self._answer(404, b"no such action", "text/plain")

        def _answer(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a log line per request would be a cost MOAI's side does not pay either

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    from base import exit_status

    exit_status.install()
    serve(Path(sys.argv[1]), int(sys.argv[2]))
