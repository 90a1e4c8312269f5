"""A local stand-in for Vertex AI's schedules REST API (v1 projects.locations.schedules): create,
list, patch and delete, as the documented resource. Bound to 127.0.0.1; records every request."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List
from urllib.parse import parse_qs, urlparse


class FakeVertex:
    def __init__(self):
        self.requests: List[Dict] = []
        self.schedules: Dict[str, Dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query),
                                      "body": json.loads(body) if body else None})
                status, payload = fake.handle(method, url.path, parse_qs(url.query), body)
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
        return [r for r in self.requests if r["method"] != "GET"]

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: bytes):
        parts = path.strip("/").split("/")  # v1 projects P locations L schedules [ID]
        if parts[:1] != ["v1"] or parts[5:6] != ["schedules"]:
            return 404, {"error": {"code": 404, "message": f"no such resource {path}"}}
        parent = "/".join(parts[1:5])
        if len(parts) == 6 and method == "GET":
            found = [s for s in self.schedules.values() if s["name"].startswith(parent + "/")]
            return 200, {"schedules": found} if found else {}
        if len(parts) == 6 and method == "POST":
            data = json.loads(body)
            for field in ("displayName", "cron", "createPipelineJobRequest"):
                if field not in data:
                    return 400, {"error": {"code": 400, "message": f"{field} is required"}}
            name = f"{parent}/schedules/{uuid.uuid4().int % 10**12}"
            self.schedules[name] = dict(data, name=name, state="ACTIVE")
            return 200, self.schedules[name]
        name = "/".join(parts[1:])
        if name not in self.schedules:
            return 404, {"error": {"code": 404, "message": f"schedule {name} not found"}}
        if method == "PATCH":
            data = json.loads(body)
            for field in query.get("updateMask", [""])[0].split(","):
                self.schedules[name][field] = data[field]
            return 200, self.schedules[name]
        if method == "DELETE":
            del self.schedules[name]
            return 200, {}
        return 405, {"error": {"code": 405, "message": f"{method} {path}"}}
