"""A pipeline process imports the TFX components it uses, not all of TFX (components/lazy_tfx.py).

`tfx.v1` or `tfx/components/__init__.py` would pull in the Vertex AI SDK, the Kubernetes client and
keras_tuner: seconds on every `cd4ml run` for components this pipeline never builds.
"""

import json
import subprocess
import sys

HEAVY = ["google.cloud.aiplatform", "kubernetes", "keras_tuner", "tfx.v1",
         "tfx.components.bulk_inferrer.component", "tfx.components.infra_validator.component",
         "tfx.components.tuner.component"]

BUILD = """
import json, sys, tempfile
from pipelines.config import PipelineConfig
from pipelines.pipeline import create_pipeline
from tfx.dsl.compiler import compiler
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
p = create_pipeline(PipelineConfig(home=tempfile.mkdtemp()))
ir = compiler.Compiler().compile(p)
heavy = [m for m in %r if m in sys.modules]
import tfx.components
fallback = tfx.components.Tuner.__name__  # any other name still resolves, via the real __init__
print(json.dumps({"nodes": len(ir.nodes), "heavy": heavy, "fallback": fallback,
                  "now_loaded": "keras_tuner" in sys.modules}))
"""


def test_building_and_compiling_the_pipeline_imports_no_unused_component():
    out = subprocess.run([sys.executable, "-c", BUILD % HEAVY], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # 13 components and our three that find the window, the latest tuning and the baseline
    assert result["nodes"] == 16
    assert result["heavy"] == []
    assert result["fallback"] == "Tuner" and result["now_loaded"]
