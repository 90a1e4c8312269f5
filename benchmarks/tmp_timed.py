import time, uuid, os, json
from serving.mlserver_runtime import BikeDemandRuntime, _plain_input, ResponseOutput, InferenceResponse, Parameters, PREDICTIONS, OUTLIER_SCORE, IS_OUTLIER
from serving.request import parse_v2, split_event_times
from serving.core import Remembered, Prediction, now
from components import detector_core
ACC = {}
N = [0]
def add(k, dt): ACC[k] = ACC.get(k, 0.0) + dt
class Timed(BikeDemandRuntime):
    async def predict(self, payload):
        pc = time.perf_counter
        t0 = pc()
        inputs = [_plain_input(i) for i in payload.inputs]
        t1 = pc(); add("plain", t1 - t0)
        core = self.core
        model, experiment = core._route()
        rows = parse_v2(inputs, core.max_rows, model.features)
        t2 = pc(); add("parse", t2 - t1)
        event_times = split_event_times(rows)
        encoded = detector_core.encode(rows, model.features)
        t3 = pc(); add("encode", t3 - t2)
        predictions = model.predict_encoded(encoded)
        t4 = pc(); add("model", t4 - t3)
        score_array = model.detectors.outlier_scores(encoded)
        flags = (score_array > model.detectors.threshold).tolist()
        scores = score_array.tolist()
        t5 = pc(); add("outlier", t5 - t4)
        request_id = uuid.uuid4().hex
        values = predictions.tolist()
        with core._lock:
            m = core._metrics
            m.add("cd4ml_requests_total", version=model.version)
            m.add("cd4ml_rows_total", len(rows), version=model.version)
            m.observe("cd4ml_request_duration_seconds", 1.0, version=model.version)
            if flags:
                m.add("cd4ml_outliers_total", sum(flags), version=model.version)
            core._remember(request_id, Remembered(model.version, values, None, None))
            core._feed_window(model, encoded)
        t6 = pc(); add("bookkeeping", t6 - t5)
        record = {"ts": now(), "request_id": request_id, "version": model.version,
                  "rows": rows, "predictions": values, "outlier_scores": scores}
        core.predictions_log.write(record)
        t7 = pc(); add("log", t7 - t6)
        n = len(values)
        outputs = [ResponseOutput(name=PREDICTIONS, datatype="FP32", shape=[n], data=values),
                   ResponseOutput(name=OUTLIER_SCORE, datatype="FP64", shape=[n], data=scores),
                   ResponseOutput(name=IS_OUTLIER, datatype="BOOL", shape=[n], data=flags)]
        r = InferenceResponse(id=payload.id or request_id, model_name=self.name, model_version=model.version,
                              outputs=outputs, parameters=Parameters(request_id=request_id))
        t8 = pc(); add("response", t8 - t7)
        if n == 1:
            N[0] += 1
        else:
            for k in list(ACC): ACC[k] -= t8 - t0 if False else 0
        if N[0] == 400 and n == 1:
            with open(os.environ.get("TIMED_OUT", "/tmp/p12/timed.txt"), "a") as fh:
                tot = sum(ACC.values())
                fh.write(" ".join(f"{k}={v/400*1e6:.1f}" for k, v in ACC.items()) + f" total={tot/400*1e6:.1f}\n")
        return r
