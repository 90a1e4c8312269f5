"""A local stand-in for Vertex AI's schedules REST API (v1 projects.locations.schedules): create,
list, patch and delete, as the documented resource. Bound to 127.0.0.1; records every request."""

from __future__ import annotations

import json
import uuid
from typing import Dict, List
from urllib.parse import parse_qs

from cd4ml.demo.json_server import LocalJsonServer


class FakeVertex(LocalJsonServer):
    def __init__(self):
        super().__init__()
        self.schedules: Dict[str, Dict] = {}

    def record(self, method, url, body, headers) -> Dict:
        return {"method": method, "path": url.path, "query": parse_qs(url.query),
                "body": json.loads(body) if body else None}

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: bytes, headers=None):
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
