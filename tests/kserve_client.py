"""KServe's own Python client against a V2 server, run in .venv-kserve (kserve cannot live beside
any other lock here): `python tests/kserve_client.py URL MODEL < job.json`, one JSON answer out.

The job gives `datatypes` ({input: V2 datatype}), `rows` (the holdout's features) and `bad`
(overrides that must be refused). The client is used with its defaults: RESTConfig(protocol="v2")
(its default protocol is v1) and InferInput.set_data_from_numpy, which sends binary tensors; then
once more with binary_data=False, as JSON tensors. Runs none of the project's code.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


def inputs(rows, datatypes, binary: bool):
    tensors = []
    for name, datatype in datatypes.items():
        tensor = InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(np.array([r[name] for r in rows], dtype=NUMPY[datatype]), binary_data=binary)
        tensors.append(tensor)
    return tensors


async def main(url: str, model: str, job: dict) -> dict:
    rows, datatypes = job["rows"], job["datatypes"]
    out = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        out["live"] = await client.is_server_live(url)
        out["ready"] = await client.is_server_ready(url)
        out["model_ready"] = await client.is_model_ready(url, model)
        for mode, binary in (("binary", True), ("json", False)):
            request = InferRequest(model, inputs(rows, datatypes, binary))
            answer = await client.infer(url, data=request, model_name=model)
            by_name = {o.name: o for o in answer.outputs}
            # kserve's InferResponse.from_bytes keeps `parameters` but drops `model_version`.
            out[mode] = {"request_id": (answer.parameters or {}).get("request_id"),
                         "predictions": by_name["predictions"].as_numpy().astype(float).tolist(),
                         "is_outlier": by_name["is_outlier"].as_numpy().astype(bool).tolist()}
        out["refused"] = []
        for overrides in job["bad"]:
            try:
                await client.infer(url, data=InferRequest(model, inputs([dict(rows[0], **overrides)], datatypes, True)),
                                   model_name=model)
                out["refused"].append({"status": 200})
            except httpx.HTTPStatusError as err:
                out["refused"].append({"status": err.response.status_code, "error": err.response.json()["error"],
                                       "message": str(err)})
    async with httpx.AsyncClient() as plain:  # the kserve client has no metadata call
        out["metadata"] = (await plain.get(f"{url}/v2/models/{model}")).json()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.load(sys.stdin)))))
