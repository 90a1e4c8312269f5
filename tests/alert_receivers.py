"""Real local receivers for alerts: an HTTP server that records what webhooks POST, and aiosmtpd's
SMTP server that records what is mailed. Both bound to 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from typing import Dict, List

from cd4ml.demo.json_server import LocalJsonServer


class HttpReceiver(LocalJsonServer):
    """Records each POST (path, headers, body); answers 500 to the first `fail_first` of them, and
    holds each answer until `release` is set (to show a sender does not wait for it)."""

    def __init__(self, fail_first: int = 0):
        super().__init__()
        self.posts: List[Dict] = []
        self.fail_first = fail_first
        self.release = threading.Event()
        self.release.set()
        self.__enter__()

    def handle(self, method, path, query, body, headers):
        self.release.wait(30)
        failing = self.fail_first > 0
        self.fail_first -= 1
        if failing:
            return 500, {"error": "busy"}
        self.posts.append({"path": path, "headers": dict(headers), "body": body})
        return 200, {}

    def url(self, path: str = "/hook") -> str:  # noqa: D401 - the receiver's address for a path
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def json(self, path: str) -> List[Dict]:
        return [json.loads(p["body"]) for p in self.posts if p["path"] == path]

    def close(self):
        self.__exit__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd's SMTP server; `messages` holds each message received (email.message objects)."""

    def __init__(self):
        import email
        import email.policy

        from aiosmtpd.controller import Controller

        self.messages = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def subjects(self) -> List[str]:
        return [m["Subject"] for m in self.messages]

    def close(self):
        self._controller.stop()


def alert_env(http: HttpReceiver, smtp: SmtpReceiver, webhook_url: str = "", secret: str = "s3cret-hmac-key"):
    """The CD4ML_ALERT_* variables for a Slack-style hook, a signed JSON hook and e-mail."""
    return {"CD4ML_ALERT_SLACK_URL": http.url("/slack/T000/B000/tok3n"),
            "CD4ML_ALERT_WEBHOOK_URL": webhook_url or http.url("/json"),
            "CD4ML_ALERT_WEBHOOK_SECRET": secret,
            "CD4ML_ALERT_SMTP": f"127.0.0.1:{smtp.port}", "CD4ML_ALERT_EMAIL_TO": "oncall@example.org",
            "CD4ML_ALERT_EMAIL_FROM": "cd4ml@example.org"}
