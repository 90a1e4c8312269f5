"""A local JSON HTTP server: threaded, on 127.0.0.1, recording every request and answering what
`handle` returns. The demo's alert receiver is one; the tests' stand-ins for the KFP and Vertex AI
APIs and their webhook receiver are others (tests/kfp_fake.py, vertex_fake.py, alert_receivers.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple
from urllib.parse import parse_qs, urlparse


class LocalJsonServer:
    def __init__(self):
        self.requests: List[Dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stand_in.requests.append(stand_in.record(method, url, body, self.headers))
                status, payload = stand_in.handle(method, url.path, parse_qs(url.query), body, self.headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's names
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_PATCH(self):  # noqa: N802
                self._serve("PATCH")

            def do_DELETE(self):  # noqa: N802
                self._serve("DELETE")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    @property
    def changes(self) -> List[Dict]:
        """The requests that changed something (not the reads)."""
        return [r for r in self.requests if r["method"] != "GET"]

    def record(self, method: str, url, body: bytes, headers) -> Dict:
        return {"method": method, "path": url.path, "query": url.query}

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: bytes, headers) -> Tuple[int, Dict]:
        raise NotImplementedError
