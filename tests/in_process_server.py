"""The serving core in the test process, speaking the demo's Server methods (cd4ml.demo.loop).

The loop test drives it instead of a seldon-core-microservice subprocess: same ServingCore as the
Seldon model class, answers in Seldon's response shape, no second environment needed.
"""

from __future__ import annotations

from typing import Dict, List

from cd4ml.contract import PREDICTIONS
from cd4ml.demo.loop import Server


class InProcessServer(Server):
    def __init__(self, registry: str, log_dir: str, poll_seconds: float = 1.0, drift_window: int = 200):
        from serving.core import ServingCore

        self.core = ServingCore(registry, log_dir=log_dir, poll_seconds=poll_seconds, drift_window=drift_window)
        self.url = "in-process"

    def wait_ready(self, timeout: float = 300):
        self.core.load()

    def predict(self, rows: List[Dict]) -> Dict:
        result = self.core.predict({"jsonData": rows})
        return {"data": {"names": [PREDICTIONS], "ndarray": result.predictions},
                "meta": {"tags": {"model_version": result.version, "request_id": result.request_id}}}

    def feedback(self, answer: Dict, truth: List[float]):
        self.core.feedback(truth, request_id=answer["meta"]["tags"]["request_id"])

    def stop(self):
        self.core.close()
