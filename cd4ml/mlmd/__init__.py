"""The one ML Metadata layer: connection (`store`), pipeline runs (`runs`), the graph (`graph`),
lineage of pushed versions (`lineage`) and our own decision records (`records`).

Below the command layer and beside the pipelines: the local runner reads its run back through it,
the commands, report and triggers query it. It imports no TensorFlow.
"""

from cd4ml.mlmd.graph import INPUT_EVENTS, OUTPUT_EVENTS, Graph, artifact_dict, execution_dict
from cd4ml.mlmd.lineage import (bucket_objects, decisions_for, format_tree, harvest_line, latest_blessed_model,
                                latest_pushed_model, lineage_edges, models_from_span, provenance, pushed_models,
                                span_files, statistics_for_span)
from cd4ml.mlmd.runs import (Run, Step, get_run, latest_run_id, latest_usage, list_runs, record_usage, run_ids,
                             run_steps, run_usage)
from cd4ml.mlmd.store import STATE_NAMES, connection_config, describe, exists, open_store, prop

__all__ = ["INPUT_EVENTS", "OUTPUT_EVENTS", "Graph", "artifact_dict", "execution_dict", "bucket_objects",
           "decisions_for", "format_tree", "harvest_line", "latest_blessed_model",
           "latest_pushed_model", "lineage_edges", "models_from_span", "provenance", "pushed_models", "span_files",
           "statistics_for_span", "Run", "Step", "get_run", "latest_run_id", "list_runs",
           "latest_usage", "record_usage", "run_ids", "run_steps", "run_usage", "STATE_NAMES", "connection_config",
           "describe", "exists", "open_store", "prop"]
