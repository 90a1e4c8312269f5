"""The V2 server's entry point: MLServer, plus what it lacks of the Open Inference Protocol.

`python -m serving.v2_server start SETTINGS` is `mlserver start SETTINGS` with these additions to
MLServer's REST app, made as it is created (before it serves anything):

- the **binary tensor data extension** (Triton's, which tritonclient.http uses by default and
  KServe's Python server speaks; MLServer lacks it: SeldonIO/MLServer#324). A request whose
  `Inference-Header-Content-Length` header gives the length of its JSON part carries each input
  with `parameters.binary_data_size` as raw little-endian bytes after it (BYTES: each element a
  4-byte length, then its bytes). An answer is written the same way when the request asks for it
  (`binary_data` on a requested output, or `binary_data_output` on the request). The server
  metadata lists `binary_tensor_data` among its extensions.
- **health answers in the protocol's format**: `{"live": true}` and `{"ready": ...}` bodies on
  the health probes, where MLServer sends none (kserve's client reads them);
- **refusals in the protocol's error format**: what FastAPI refuses before our code sees it
  (malformed JSON, `NaN`/`Infinity`, a body that is not UTF-8, a field of the wrong type) is a
  400 `{"error": "..."}` naming the field or the input, not a 422 `{"detail": [...]}`.

MLServer builds its app in `mlserver.rest.server.create_app`; `install()` wraps that function.
Seldon Core v2 starts MLServer itself (its server config), so there the extension is absent and
clients send JSON tensors or use gRPC (which carries raw tensors natively).
"""

from __future__ import annotations

import asyncio
import glob
import json
import math
import os
import re
import struct
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from serving.v2_workers import LISTEN_FD_ENV, WORKERS_ENV

HEADER = b"inference-header-content-length"
EXTENSION = "binary_tensor_data"
# The protocol's datatypes as little-endian numpy types (BOOL: one byte each).
NUMPY = {"BOOL": "<u1", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
         "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


class ProtocolError(ValueError):
    """A request the protocol refuses: the message names the input and the rule."""


def decode_bytes_tensor(raw: bytes, name: str) -> List[bytes]:
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ProtocolError(f"input '{name}': binary BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise ProtocolError(f"input '{name}': binary BYTES element of {size} bytes runs past its data")
        out.append(raw[at:at + size])
        at += size
    return out


def _text(value: bytes, name: str, row: int) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"input '{name}': value {row} is not UTF-8 text") from None


def encode_bytes_tensor(values) -> bytes:
    parts = []
    for v in values:
        data = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


def decode_request(body: bytes, header_length: int) -> Tuple[Dict, Optional[set]]:
    """(the JSON request with every binary input as `data`, the outputs to answer in binary: a set
    of names, {"*"} for all, or None)."""
    if not 0 < header_length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {header_length} is not within the body's "
                            f"{len(body)} bytes")
    try:
        request = json.loads(body[:header_length])
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"the JSON part of the request is not JSON: {err}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError("field 'inputs': expected a list of input tensors")
    at = header_length
    for tensor in request["inputs"]:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name, size = tensor.get("name"), parameters.pop("binary_data_size")
        if not isinstance(size, int) or size < 0 or at + size > len(body):
            raise ProtocolError(f"input '{name}': binary_data_size {size!r} does not fit the body")
        raw, at = body[at:at + size], at + size
        datatype = tensor.get("datatype")
        if datatype == "BYTES":  # JSON carries text: the protocol's strings are UTF-8
            tensor["data"] = [_text(v, name, i) for i, v in enumerate(decode_bytes_tensor(raw, name))]
        elif datatype in NUMPY:
            width = np.dtype(NUMPY[datatype]).itemsize
            if size % width:
                raise ProtocolError(f"input '{name}': {size} bytes is not a whole number of {datatype} values")
            values = np.frombuffer(raw, dtype=NUMPY[datatype])
            tensor["data"] = values.astype(bool).tolist() if datatype == "BOOL" else values.tolist()
        else:
            raise ProtocolError(f"input '{name}': datatype {datatype!r} has no binary form")
    if at != len(body):
        raise ProtocolError(f"{len(body) - at} bytes after the last binary input")
    wanted = set()
    if (request.get("parameters") or {}).get("binary_data_output"):
        wanted.add("*")
    for output in request.get("outputs") or []:
        if isinstance(output, dict) and (output.get("parameters") or {}).pop("binary_data", False):
            wanted.add(output.get("name"))
    return request, (wanted or None)


def encode_response(answer: Dict, wanted: set) -> Tuple[bytes, int]:
    """(the answer with the wanted outputs as binary after its JSON, the JSON part's length)."""
    blobs = []
    for output in answer.get("outputs", []):
        if "*" not in wanted and output.get("name") not in wanted:
            continue
        datatype, data = output.get("datatype"), output.pop("data", [])
        blob = encode_bytes_tensor(data) if datatype == "BYTES" else \
            np.asarray(data, dtype=NUMPY[datatype]).tobytes()
        output.setdefault("parameters", {})["binary_data_size"] = len(blob)
        blobs.append(blob)
    header = json.dumps(answer).encode()
    return header + b"".join(blobs), len(header)


class BinaryTensors:
    """ASGI middleware: the binary tensor data extension on `.../infer` (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET" and scope["path"].startswith("/v2/"):
            path = scope["path"]
            key = "live" if path == "/v2/health/live" else "ready" if path.endswith("/ready") else None
            if key:
                return await self.app(scope, receive, _health_body(send, key))
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        if HEADER not in headers or scope.get("method") != "POST" or not scope["path"].endswith("/infer"):
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request, wanted = decode_request(body, int(headers[HEADER]))
        except (ProtocolError, ValueError) as err:
            return await _send_json(send, 400, {"error": str(err)})
        body = json.dumps(request).encode()
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"]
                                     if k not in (HEADER, b"content-length", b"content-type")]
                     + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        if wanted is None:
            return await self.app(scope, replay, send)
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await _answer(send, start, b"".join(chunks), wanted)

        await self.app(scope, replay, capture)


async def _send_json(send, status: int, doc: Dict):
    data = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def _answer(send, start: Dict, body: bytes, wanted: set):
    if start.get("status") != 200:  # a refusal stays JSON
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    data, header_length = encode_response(json.loads(body), wanted)
    headers = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-length", b"content-type")]
    headers += [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(data)).encode()),
                (HEADER, str(header_length).encode())]
    await send(dict(start, headers=headers))
    await send({"type": "http.response.body", "body": data})


def _health_body(send, key: str):
    """MLServer answers the health probes with an empty body; the protocol's is {"live": bool} or
    {"ready": bool} (kserve's client reads it). The status is MLServer's, unchanged."""
    start = {}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] == "http.response.body" and start:
            body = message.get("body", b"")
            if not body and not message.get("more_body"):
                body = json.dumps({key: start["status"] == 200}).encode()
                start["headers"] = [(k, v) for k, v in start.get("headers", [])
                                    if k not in (b"content-length", b"content-type")] + [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                message = {"type": "http.response.body", "body": body}
            await send(dict(start))
            start.clear()
        await send(message)

    return wrapped


# --- refusals in the protocol's format -----------------------------------------------------------

def describe_validation(errors: List[Dict], body) -> str:
    """One sentence naming the field and the rule, from FastAPI's validation errors and the body
    (the raw text when FastAPI could not decode it as JSON)."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as err:
            return f"the body is not UTF-8 text (byte {err.start})"
    if any("not valid UTF-8" in str((e.get("ctx") or {}).get("error", "")) for e in errors):
        return "the body is not UTF-8 text (JSON must be UTF-8)"  # what orjson, MLServer's decoder, found
    if isinstance(body, str) and any(e.get("type") == "json_invalid" for e in errors):
        text = body
        try:
            parsed = json.loads(text)  # Python's json reads NaN and Infinity: find where they are
        except ValueError as err:
            return f"the body is not JSON: {err}"
        found = _non_finite(parsed)
        if found:
            return f"{found}: NaN and Infinity are not JSON numbers (send a finite number)"
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"field '{where or 'body'}': {first.get('msg', 'invalid request')}"


def _non_finite(doc) -> str:
    for tensor in (doc.get("inputs") or []) if isinstance(doc, dict) else []:
        data = tensor.get("data") if isinstance(tensor, dict) else None
        flat = list(_flatten(data)) if isinstance(data, list) else []
        if any(isinstance(v, float) and not math.isfinite(v) for v in flat):
            return f"input '{tensor.get('name')}'"
    return ""


def _flatten(values):
    for v in values:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


async def worker_refused(request, exc):
    """With parallel workers MLServer wraps what a worker raised as "<module>.<class>: message";
    a refusal (4xx) is shown as the message alone, as with one process."""
    from fastapi.responses import JSONResponse

    message = str(exc)
    if exc.status_code < 500:
        message = re.sub(r"^[\w.]+: ", "", message, count=1)
    return JSONResponse({"error": message}, status_code=exc.status_code)


async def validation_refused(request, exc):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": describe_validation(exc.errors(), getattr(exc, "body", None))}, status_code=400)


def install(settings_dir: Optional[str] = None):
    """Wrap MLServer's REST app factory: our middleware and error handler on every app it makes,
    and the extension in the server's metadata. In a worker of several (serving/v2_workers.py),
    also accept on the supervisor's socket, once the models have loaded."""
    from fastapi.exceptions import RequestValidationError
    from mlserver.parallel.errors import WorkerError
    from mlserver.rest import server

    if getattr(server.create_app, "_cd4ml", False):
        return
    original = server.create_app
    shared = os.environ.get(LISTEN_FD_ENV)

    def create_app(settings, *args, **kwargs):
        if EXTENSION not in settings.extensions:  # the server metadata lists it (the same Settings object)
            settings.extensions.append(EXTENSION)
        if shared:  # the supervisor serves the workers' metrics on the real port; this one is unused
            settings.metrics_port = 0
        app = original(settings, *args, **kwargs)
        app.add_exception_handler(RequestValidationError, validation_refused)
        app.add_exception_handler(WorkerError, worker_refused)
        app.add_middleware(BinaryTensors)
        return app

    create_app._cd4ml = True
    server.create_app = create_app
    if shared:
        _accept_when_loaded(int(shared), _model_names(settings_dir))


def _model_names(settings_dir: Optional[str]) -> List[str]:
    names = []
    for path in glob.glob(os.path.join(settings_dir or ".", "**", "model-settings.json"), recursive=True):
        with open(path) as fh:
            names.append(json.load(fh)["name"])
    return names


def _accept_when_loaded(fd: int, names: List[str]):
    """REST accepts on the shared socket and gRPC binds its (shared) port only once every model
    of this worker is ready: MLServer starts both beside the loading, and a worker that took
    connections while loading would answer them "model not found"."""
    import socket

    from mlserver.grpc.server import GRPCServer
    from mlserver.rest import server as rest
    from mlserver.rest.logging import disable_health_access_logs

    async def loaded(data_plane, stopping) -> None:
        while not stopping():
            try:
                if all([await data_plane.model_ready(name) for name in names]):
                    return
            except Exception:  # noqa: BLE001 - not registered yet: MLServer raises ModelNotFound
                pass
            await asyncio.sleep(0.1)

    async def rest_start(self):
        self._server = rest._NoSignalServer(self._get_config())
        if not self._settings.debug:
            disable_health_access_logs()
        await loaded(self._data_plane, lambda: self._server.should_exit)
        await self._server.serve(sockets=[socket.socket(fileno=fd)])

    async def grpc_start(self):
        server = self._create_server()  # first, so that a stop while loading finds it
        stopped = asyncio.Event()
        original_stop = self.stop

        async def stop(*args, **kwargs):
            stopped.set()
            await original_stop(*args, **kwargs)

        self.stop = stop
        await loaded(self._data_plane, stopped.is_set)
        if not stopped.is_set():
            await server.start()
            await server.wait_for_termination()

    rest.RESTServer.start = rest_start
    GRPCServer.start = grpc_start


def main(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    workers = int(os.environ.get(WORKERS_ENV) or 1)
    if workers > 1:  # several complete servers on one port (serving/v2_workers.py)
        from serving.v2_workers import supervise

        sys.exit(supervise(argv, workers))
    from mlserver.cli.main import main as mlserver_main

    install(next((a for a in argv[1:] if not a.startswith("-")), None))
    sys.argv = ["mlserver", *argv]
    mlserver_main()  # click: exits when the server stops


if __name__ == "__main__":
    main()
