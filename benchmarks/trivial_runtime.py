"""The floor for the V2 serving benchmark: an MLServer runtime that answers zeros, one per row,
through the same protocol handling as ours (no validation, model, detectors or logs)."""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class TrivialRuntime(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        n = payload.inputs[0].shape[0]
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="predictions", datatype="FP32", shape=[n], data=[0.0] * n)])
