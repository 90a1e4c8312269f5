"""Alerts: tell people when the loop needs them, where they already look.

An action that matters (a run failed, data was refused, a model was not blessed, drift was seen,
a canary was rolled back...) raises an event; every configured sink gets it:
- `slack`: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, Teams' connector):
  POST {"text": ...};
- `webhook`: a generic JSON webhook, the event as JSON, signed with HMAC-SHA256 over the body
  (`X-Cd4ml-Signature-256: sha256=<hex>`, GitHub's convention) when a secret is set;
- `email`: a message over SMTP (STARTTLS and login when configured).

Delivery never blocks or fails the action that raised the event: it runs on a background thread,
retried with exponential backoff, and what still fails is recorded in `<home>/alerts/missed.jsonl`
(`cd4ml alerts` lists it); the process waits at most `flush_seconds` at exit for deliveries in
flight. The same event (kind and subject) is sent once per `dedup_seconds`, across processes
(`<home>/alerts/sent.jsonl`). Secrets (webhook URLs carry tokens, HMAC keys, SMTP passwords) are
read from the environment when the configuration names a variable (`*_env`), and are replaced
by `***` in anything printed or logged.

Configuration (`CD4ML_ALERTS`): a JSON or YAML file, or these variables:
  CD4ML_ALERT_SLACK_URL; CD4ML_ALERT_WEBHOOK_URL, CD4ML_ALERT_WEBHOOK_SECRET;
  CD4ML_ALERT_SMTP (host:port), CD4ML_ALERT_EMAIL_FROM, CD4ML_ALERT_EMAIL_TO (comma-separated),
  CD4ML_ALERT_SMTP_USER, CD4ML_ALERT_SMTP_PASSWORD, CD4ML_ALERT_SMTP_STARTTLS=1.
The file: {"sinks": [{"type": "slack", "url_env": "SLACK_URL"}, {"type": "webhook", "url": ...,
"secret_env": ...}, {"type": "email", "host": ..., "port": 25, "from": ..., "to": [...]}],
"dedup_seconds": 900, "retries": 3, "events": [kinds to send; default all]}.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import datetime
import email.message
import fcntl
import hashlib
import hmac
import json
import logging
import os
import smtplib
import threading
import time
from typing import Dict, List, Optional, Sequence

import requests

log = logging.getLogger(__name__)

# Every event kind, with how loud it is and what it means.
EVENTS: Dict[str, tuple] = {
    "run_failed": ("critical", "a pipeline run failed"),
    "data_refused": ("warning", "a data drop or span was refused and quarantined, with its report"),
    "not_blessed": ("warning", "a trained model was not blessed: a bound was not met"),
    "explainability_failed": ("warning", "a trained model failed the explainability check"),
    "drift_detected": ("warning", "the servers saw drift in production traffic"),
    "retrain_requested": ("info", "a retrain was requested (drift, a data drop, a schedule)"),
    "harvest_quarantined": ("warning", "harvested production traffic was quarantined, with its report"),
    "canary_started": ("info", "a blessed version started as a canary on a share of traffic"),
    "promoted": ("info", "a version was promoted to all traffic"),
    "rolled_back": ("critical", "a version was rolled back (by a guard, or by a person)"),
    "approval_pending": ("info", "a blessed version waits for a person's approval"),
    "experiment_concluded": ("info", "a bandit experiment reached its verdict"),
    "test": ("info", "a test alert (`cd4ml alerts test`)"),
}
ALERTS_DIR = "alerts"
SENT, MISSED = "sent.jsonl", "missed.jsonl"


class AlertConfigError(ValueError):
    """The alert configuration is wrong; the message names the field and the rule."""


@dataclasses.dataclass
class Event:
    kind: str
    subject: str   # what it is about (a run id, a version, a span): with the kind, the dedup key
    summary: str
    details: Dict[str, object] = dataclasses.field(default_factory=dict)
    at: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    @property
    def severity(self) -> str:
        return EVENTS[self.kind][0]

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def as_dict(self) -> Dict[str, object]:
        return {"source": "cd4ml", **dataclasses.asdict(self), "severity": self.severity}

    def title(self) -> str:
        return f"[cd4ml {self.severity}] {self.kind.replace('_', ' ')}: {self.subject}"

    def text(self) -> str:
        lines = [self.title(), self.summary]
        lines += [f"{k}: {v}" for k, v in sorted(self.details.items())]
        return "\n".join(lines)


# --- sinks ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Sink:
    name: str
    secrets: Sequence[str] = ()

    def send(self, event: Event, timeout: float):  # pragma: no cover - each sink defines it
        raise NotImplementedError

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def describe(self) -> str:  # pragma: no cover - each sink defines it
        raise NotImplementedError


def _host_of(url: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}{':' + str(parsed.port) if parsed.port else ''}/***"


def _post(url: str, body: bytes, headers: Dict[str, str], timeout: float):
    answer = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers},
                           timeout=timeout, allow_redirects=False)
    if answer.status_code >= 300:
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")


@dataclasses.dataclass
class SlackSink(Sink):
    url: str = ""

    def send(self, event: Event, timeout: float):
        _post(self.url, json.dumps({"text": event.text()}).encode(), {}, timeout)

    def describe(self) -> str:
        return f"slack webhook {_host_of(self.url)}"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclasses.dataclass
class WebhookSink(Sink):
    url: str = ""
    secret: str = ""

    def send(self, event: Event, timeout: float):
        body = json.dumps(event.as_dict(), sort_keys=True).encode()
        headers = {"X-Cd4ml-Event": event.kind}
        if self.secret:
            headers["X-Cd4ml-Signature-256"] = signature(self.secret, body)
        _post(self.url, body, headers, timeout)

    def describe(self) -> str:
        return f"JSON webhook {_host_of(self.url)}" + (" (HMAC-signed)" if self.secret else " (unsigned)")


@dataclasses.dataclass
class EmailSink(Sink):
    host: str = ""
    port: int = 25
    sender: str = ""
    to: Sequence[str] = ()
    user: str = ""
    password: str = ""
    starttls: bool = False

    def send(self, event: Event, timeout: float):
        message = email.message.EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, ", ".join(self.to), event.title()
        message.set_content(event.text() + "\n")
        with smtplib.SMTP(self.host, self.port, timeout=timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(message)

    def describe(self) -> str:
        return f"e-mail via {self.host}:{self.port} to {', '.join(self.to)}"


def _secret(entry: Dict, field: str, environ) -> str:
    """A field's value, from the variable `<field>_env` names when given (so the file holds none)."""
    if f"{field}_env" in entry:
        name = entry[f"{field}_env"]
        if name not in environ:
            raise AlertConfigError(f"alert sink {entry.get('name', entry.get('type'))!r}: {field}_env names "
                                   f"{name}, which is not set")
        return environ[name]
    return str(entry.get(field, ""))


def _url_secrets(url: str) -> tuple:
    """A URL and its path with query (an error message may quote only those): both are secrets."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    rest = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    return (url, rest) if len(rest) > 1 else (url,)


def make_sink(entry: Dict, environ) -> Sink:
    kind = entry.get("type")
    name = str(entry.get("name", kind))
    if kind in ("slack", "webhook"):
        url = _secret(entry, "url", environ)
        if not url.startswith(("http://", "https://")):
            raise AlertConfigError(f"alert sink {name!r}: url must start with http:// or https://")
        if kind == "slack":
            return SlackSink(name, _url_secrets(url), url=url)
        secret = _secret(entry, "secret", environ)
        return WebhookSink(name, (*_url_secrets(url), secret), url=url, secret=secret)
    if kind == "email":
        to = entry.get("to") or []
        to = [t.strip() for t in (to.split(",") if isinstance(to, str) else to) if t.strip()]
        if not entry.get("host") or not to or not entry.get("from"):
            raise AlertConfigError(f"alert sink {name!r}: e-mail needs host, from and to")
        password = _secret(entry, "password", environ)
        return EmailSink(name, (password,), host=str(entry["host"]), port=int(entry.get("port", 25)),
                         sender=str(entry["from"]), to=to, user=str(entry.get("user", "")), password=password,
                         starttls=bool(entry.get("starttls", False)))
    raise AlertConfigError(f"alert sink {name!r}: type {kind!r} is not one of slack, webhook, email")


def _from_variables(environ) -> Dict:
    sinks = []
    if environ.get("CD4ML_ALERT_SLACK_URL"):
        sinks.append({"type": "slack", "url_env": "CD4ML_ALERT_SLACK_URL"})
    if environ.get("CD4ML_ALERT_WEBHOOK_URL"):
        signed = {"secret_env": "CD4ML_ALERT_WEBHOOK_SECRET"} if environ.get("CD4ML_ALERT_WEBHOOK_SECRET") else {}
        sinks.append({"type": "webhook", "url_env": "CD4ML_ALERT_WEBHOOK_URL", **signed})
    if environ.get("CD4ML_ALERT_SMTP"):
        host, _, port = environ["CD4ML_ALERT_SMTP"].partition(":")
        password = {"password_env": "CD4ML_ALERT_SMTP_PASSWORD"} if environ.get("CD4ML_ALERT_SMTP_PASSWORD") else {}
        sinks.append({"type": "email", "host": host, "port": int(port or 25),
                      "from": environ.get("CD4ML_ALERT_EMAIL_FROM", "cd4ml@localhost"),
                      "to": environ.get("CD4ML_ALERT_EMAIL_TO", ""), "user": environ.get("CD4ML_ALERT_SMTP_USER", ""),
                      "starttls": environ.get("CD4ML_ALERT_SMTP_STARTTLS", "") in ("1", "true", "yes"), **password})
    return {"sinks": sinks}


def load_config(environ=None) -> Dict:
    """The alert configuration: CD4ML_ALERTS (a JSON or YAML file) or the CD4ML_ALERT_* variables."""
    environ = os.environ if environ is None else environ
    path = environ.get("CD4ML_ALERTS", "")
    if not path:
        return _from_variables(environ)
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as err:
        raise AlertConfigError(f"CD4ML_ALERTS={path}: cannot read it ({err.strerror})") from err
    if path.endswith((".yaml", ".yml")):
        import yaml

        body = yaml.safe_load(text)
    else:
        try:
            body = json.loads(text)
        except ValueError as err:
            raise AlertConfigError(f"CD4ML_ALERTS={path}: not JSON ({err})") from err
    if not isinstance(body, dict) or not isinstance(body.get("sinks", []), list):
        raise AlertConfigError(f"CD4ML_ALERTS={path}: expected an object with a list of sinks")
    unknown = sorted(set(body.get("events") or []) - set(EVENTS))
    if unknown:
        raise AlertConfigError(f"CD4ML_ALERTS={path}: events {', '.join(unknown)} are not event kinds "
                               f"({', '.join(EVENTS)})")
    return body


# --- delivery ---------------------------------------------------------------------------------

def _append(path: str, record: Dict):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(path: str) -> List[Dict]:
    try:
        with open(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except OSError:
        return []


class Alerter:
    """Sends events to the sinks in the background; see the module's docstring."""

    def __init__(self, sinks: Sequence[Sink], state_dir: str, dedup_seconds: float = 900, retries: int = 3,
                 backoff: float = 0.5, timeout: float = 5.0, flush_seconds: float = 20.0,
                 events: Optional[Sequence[str]] = None):
        self.sinks, self.state_dir = list(sinks), state_dir
        self.dedup_seconds, self.retries, self.backoff, self.timeout = dedup_seconds, retries, backoff, timeout
        self.flush_seconds = flush_seconds
        self.events = set(events or EVENTS)
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, len(self.sinks)), thread_name_prefix="cd4ml-alert")
        self._pending: List[concurrent.futures.Future] = []
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def raise_event(self, kind: str, subject: str, summary: str, **details) -> Optional[Event]:
        """Queue the event for every sink and return at once; None when it is not sent (no sink,
        a kind not configured, or the same event within the dedup window)."""
        if kind not in EVENTS:
            raise ValueError(f"alert kind {kind!r}: expected one of {', '.join(EVENTS)}")
        event = Event(kind, str(subject), summary, {k: v for k, v in details.items() if v is not None})
        if not self.sinks or kind not in self.events or self._seen(event):
            return None
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending += [self._pool.submit(self._deliver, sink, event) for sink in self.sinks]
        return event

    def _seen(self, event: Event) -> bool:
        """Whether the event was sent within the dedup window (any process); records it if not."""
        path = os.path.join(self.state_dir, SENT)
        os.makedirs(self.state_dir, exist_ok=True)
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # check and record under one lock: two processes send once
            fh.seek(0)
            now = time.time()
            for line in fh:
                try:
                    sent = json.loads(line)
                except ValueError:
                    continue
                if sent.get("key") == event.key and now - sent.get("epoch", 0) < self.dedup_seconds:
                    return True
            fh.write(json.dumps({"key": event.key, "epoch": now, "at": event.at}) + "\n")
        return False

    def _deliver(self, sink: Sink, event: Event) -> str:
        """'' once delivered, else the last error (redacted), recorded as missed."""
        error = ""
        for attempt in range(self.retries):
            try:
                sink.send(event, self.timeout)
                return ""
            except Exception as err:  # noqa: BLE001 - any failure is retried, then recorded
                error = sink.redact(f"{type(err).__name__}: {err}")
                log.warning("cd4ml alerts: %s to %s failed (attempt %d of %d): %s", event.kind, sink.name,
                            attempt + 1, self.retries, error)
                if attempt + 1 < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
        self._missed(sink, event, error)
        return error

    def _missed(self, sink: Sink, event: Event, error: str):
        _append(os.path.join(self.state_dir, MISSED), {"sink": sink.name, "error": error, "event": event.as_dict()})

    def flush(self, timeout: Optional[float] = None) -> Dict[str, int]:
        """Wait for deliveries in flight (at most `timeout`); those still running are recorded as missed."""
        with self._lock:
            pending = list(self._pending)
        done, late = concurrent.futures.wait(pending, timeout=self.flush_seconds if timeout is None else timeout)
        return {"delivered": sum(1 for f in done if not f.result()), "failed": sum(1 for f in done if f.result()),
                "in_flight": len(late)}

    def send_now(self, event: Event) -> Dict[str, str]:
        """Send one event to each sink in the foreground: {sink: "sent" | the error} (alerts test)."""
        return {sink.name: self._deliver(sink, event) or "sent" for sink in self.sinks}


_alerters: Dict[str, Alerter] = {}


def alerter(home: str, environ=None) -> Alerter:
    """The alerter for a project home and its configuration, built once per process."""
    environ = os.environ if environ is None else environ
    body = load_config(environ)
    sinks = []
    for number, entry in enumerate(body.get("sinks", [])):
        sink = make_sink(entry, environ)
        if any(s.name == sink.name for s in sinks):
            sink.name = f"{sink.name}-{number + 1}"
        sinks.append(sink)
    key = hashlib.sha256(json.dumps([home, body, [dataclasses.asdict(s) for s in sinks]], sort_keys=True,
                                    default=str).encode()).hexdigest()
    if key not in _alerters:
        _alerters[key] = Alerter(sinks, os.path.join(home, ALERTS_DIR),
                                 dedup_seconds=float(body.get("dedup_seconds", 900)),
                                 retries=int(body.get("retries", 3)), backoff=float(body.get("backoff", 0.5)),
                                 timeout=float(body.get("timeout", 5)), events=body.get("events"))
    return _alerters[key]


def notify(home: str, kind: str, subject: str, summary: str, **details) -> Optional[Event]:
    """Raise an event from any command: never raises (a broken alert configuration is logged)."""
    try:
        return alerter(home).raise_event(kind, subject, summary, **details)
    except Exception as err:  # noqa: BLE001 - an alert must never fail the action that raised it
        log.error("cd4ml alerts: %s about %s not sent: %s", kind, subject, err)
        return None
