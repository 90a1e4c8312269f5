"""The serving core in the test process, speaking the demo's Server methods (cd4ml.demo.loop).

The loop test drives it instead of a seldon-core-microservice subprocess: same ModelService as the
server runtimes, the Open Inference Protocol's inputs, answers in the demo's normalised shape, no
second environment needed.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from cd4ml.demo.loop import Server
from serving.request import v2_batch, v2_inputs


class InProcessServer(Server):
    def __init__(self, registry: str, log_dir: str, protocol: str = "v2", poll_seconds: float = 1.0,
                 drift_window: int = 200):
        from serving.service import ModelService

        self.core = ModelService(registry, log_dir=log_dir, poll_seconds=poll_seconds, drift_window=drift_window)
        self.url, self.protocol = "in-process", protocol

    def wait_ready(self, timeout: float = 300):
        self.core.load()

    def predict(self, rows: List[Dict], event_times: Optional[List[str]] = None) -> Dict:
        result = self.core.predict(v2_inputs(rows, event_times=event_times), reader=v2_batch)
        return {"version": result.version, "request_id": result.request_id, "predictions": result.predictions}

    def feedback(self, answer: Dict, truth: List[float]):
        self.core.feedback(truth, request_id=answer["request_id"])

    def stop(self):
        self.core.close()
