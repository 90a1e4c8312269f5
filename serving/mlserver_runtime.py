"""The Open Inference Protocol (V2) server: our model service as an MLServer runtime.

    mlserver start <settings dir>       (serving.launch writes it; `cd4ml serve` does both)

MLServer (Apache-2.0) is the reference V2 runtime of Seldon Core v2 and KServe: it owns the
protocol (health, model metadata, infer, errors as {"error": ...}), this class owns the model. The
core is the same as behind the Seldon v1 wrapper (serving/service.py): each request is validated
against the feature specification of the version that answers it, scored, given outlier scores,
fed to the drift window and logged; versions hot-load from the registry, pins and shadows are
followed, and feedback joins by request id.

Model name `bike-demand`. Inputs: one tensor per feature, shape [N] or [N, 1] (any numeric
datatype for a numeric feature, BYTES for a string one). Outputs: `predictions` (FP32), and with
detectors `outlier_score` (FP64) and `is_outlier` (BOOL); a request's `outputs` picks some of them
(the detectors run either way). `model_version` names the version that answered,
`parameters.request_id` the id feedback joins on:

    POST /v2/models/bike-demand/feedback  {"request_id": "...", "truth": [31, 12]}
    POST /v2/models/bike-demand/explain   (the infer body: each feature's attribution per row)

The registry is the model's URI (model-settings.json `parameters.uri`: what `cd4ml serve` writes,
and the folder KServe or Seldon Core v2 place the model in), or CD4ML_REGISTRY. The rest comes
from the same CD4ML_* variables as the v1 wrapper (serving/settings.py). Core metrics are exported on MLServer's
metrics port (`/metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Dict, List, Optional

import prometheus_client
from fastapi import Body
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, MetadataTensor

from cd4ml.contract import MODEL_NAME, PREDICTIONS
from components import features
from serving.metrics import PrometheusMetrics
from serving.request import RequestError, v2_batch
from serving.settings import CoreSettings

OUTLIER_SCORE, IS_OUTLIER = "outlier_score", "is_outlier"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by MLServer in each parallel worker
OUTPUTS = (PREDICTIONS, OUTLIER_SCORE, IS_OUTLIER)  # what infer answers, and a request's `outputs` may ask for


class RequestRefused(MLServerError):
    """A request the core refused: its status (400, 413) and a message naming the input and rule."""

    def __init__(self, err: RequestError):
        super().__init__(err.message, status_code=err.status)


class BikeDemandRuntime(MLModel):
    async def load(self) -> bool:
        from serving.service import ModelService

        # The model's URI is the registry (model-settings.json `parameters.uri`, or the folder KServe
        # or Seldon Core v2 placed the model in); without one, CD4ML_REGISTRY.
        uri = self.settings.parameters.uri if self.settings.parameters else None
        try:
            settings = CoreSettings.resolve(registry=uri)
        except ValueError as err:
            raise MLServerError(str(err), status_code=500) from None
        self.exported = PrometheusMetrics()
        self.core = ModelService(**settings.core_kwargs(), metrics=self.exported).load()
        logging.getLogger("mlserver.parallel").addFilter(_not_a_refusal)
        if not os.environ.get(MULTIPROC_DIR):
            # One process: MLServer's /metrics shows prometheus_client's registry, while this
            # runtime is loaded. With parallel workers (MLServer sets PROMETHEUS_MULTIPROC_DIR in
            # each worker before loading) every value is written to the worker's own files, which
            # the main process's /metrics adds up.
            prometheus_client.REGISTRY.register(self.exported)
        return True

    async def unload(self) -> bool:
        if not os.environ.get(MULTIPROC_DIR):
            prometheus_client.REGISTRY.unregister(self.exported)
        self.core.close()
        return True

    async def metadata(self) -> MetadataModelResponse:
        core = getattr(self, "core", None)  # None until load() ran
        spec = core.current.features if core else features.FEATURES
        return MetadataModelResponse(
            name=self.name, platform="tensorflow", versions=[core.version] if core else [],
            inputs=[MetadataTensor(name=f.name, datatype=f.types.v2, shape=[-1]) for f in spec],
            outputs=[MetadataTensor(name=PREDICTIONS, datatype="FP32", shape=[-1]),
                     MetadataTensor(name=OUTLIER_SCORE, datatype="FP64", shape=[-1]),
                     MetadataTensor(name=IS_OUTLIER, datatype="BOOL", shape=[-1])])

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = [_plain_input(i) for i in payload.inputs]
        try:
            requested = _requested_outputs(payload.outputs, self.core.current.detectors is not None)
        except RequestError as err:
            self.core.reject(err)
            raise RequestRefused(err) from None
        try:
            # What the answer does not need runs on this loop right after it is written (serving/inference.py).
            result = self.core.predict(inputs, reader=v2_batch, defer=asyncio.get_running_loop().call_soon)
        except RequestError as err:
            raise RequestRefused(err) from None
        n = len(result.predictions)
        outputs = [{"name": PREDICTIONS, "datatype": "FP32", "shape": [n], "data": result.predictions}]
        if result.outlier_scores is not None:
            outputs += [{"name": OUTLIER_SCORE, "datatype": "FP64", "shape": [n], "data": result.outlier_scores},
                        {"name": IS_OUTLIER, "datatype": "BOOL", "shape": [n], "data": result.is_outlier}]
        if requested is not None:  # the protocol's `outputs`: those asked for, in the order asked
            by_name = {o["name"]: o for o in outputs}
            outputs = [by_name[name] for name in requested if name in by_name]
        # One validation of the whole answer: a quarter cheaper than building each output's model.
        return InferenceResponse.model_validate(
            {"id": payload.id or result.request_id, "model_name": self.name, "model_version": result.version,
             "outputs": outputs, "parameters": {"request_id": result.request_id}})

    # The custom handlers take the body as FastAPI decodes it, not the Request: with parallel
    # workers MLServer pickles a handler's arguments to the worker that runs it. A body that is not
    # a JSON object is refused by FastAPI, in the protocol's format (serving/v2_server.py).
    @custom_handler(rest_path=f"/v2/models/{MODEL_NAME}/feedback")
    async def feedback(self, body: Dict[str, Any] = Body(...)) -> Dict:
        """Ground truth for an answered request: {"request_id", "truth": [one per row]}; or, for a
        request an experiment routed, a client's own {"request_id", "reward": 0..1}."""
        try:
            return self.core.feedback(body.get("truth"), request_id=body.get("request_id"),
                                      predictions=body.get("predictions"), version=body.get("version"),
                                      reward=body.get("reward"))
        except RequestError as err:
            raise RequestRefused(err) from None

    @custom_handler(rest_path=f"/v2/models/{MODEL_NAME}/explain")
    async def explain(self, body: Dict[str, Any] = Body(...)) -> Dict:
        """The infer request's body in, each raw feature's additive attribution out, per row:
        {"model_name", "model_version", "explanation": {"base_value", "rows": [{"prediction",
        "attributions": {feature: value}}]}} (scoring/explain.py)."""
        try:
            explained = self.core.explain(body.get("inputs"), reader=v2_batch)
        except RequestError as err:
            raise RequestRefused(err) from None
        return {"model_name": self.name, "model_version": explained.version,
                "explanation": explained.explanation.to_json()}

    @custom_handler(rest_path=f"/v2/models/{MODEL_NAME}/experiment", rest_method="GET")
    async def experiment(self) -> Dict:
        """The running experiment's arms and counts as this server routes on them ({} when none)."""
        return self.core.experiment_status() or {}


def _not_a_refusal(record: logging.LogRecord) -> bool:
    """A parallel worker logs every exception of a request with its traceback; a refused request
    is not an error of the server (the core has logged it in one line, and counted it)."""
    return not (record.exc_info and isinstance(record.exc_info[1], RequestRefused))


def _requested_outputs(requested, detectors: bool) -> Optional[List[str]]:
    """The names of the request's `outputs` (None: all of them), refused when one is not an
    output of this model, or needs detectors the answering version was pushed without. The
    detectors still score, log and feed the drift window when their outputs are not asked for."""
    if not requested:
        return None
    names = [o.name for o in requested]
    for name in names:
        if name not in OUTPUTS:
            raise RequestError(f"output {name!r}: not an output of {MODEL_NAME} (outputs: {', '.join(OUTPUTS)})",
                               rule="unknown_output")
        if name != PREDICTIONS and not detectors:
            raise RequestError(f"output {name!r}: the version answering has no detectors", rule="no_detectors")
    if len(set(names)) != len(names):
        raise RequestError("field 'outputs': an output is requested twice", rule="duplicate_output")
    return names


def _plain_input(tensor) -> Dict:
    """A request input as the plain dict v2_batch reads (model_dump costs 2 us a field)."""
    datatype, data = tensor.datatype, tensor.data
    return {"name": tensor.name, "datatype": getattr(datatype, "value", datatype), "shape": tensor.shape,
            "data": getattr(data, "root", data)}
