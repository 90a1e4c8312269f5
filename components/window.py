"""Which spans a run trains on: a window of the latest spans, not only the newest one.

TFX ingests one span per ExampleGen execution and leaves windows to input resolution
(SpanRangeStrategy over the `span` property). This strategy is that rolling range with two
changes a continuous-delivery loop needs:

- the window ends at the span this run ingested (`current`), not at the highest span ever seen,
  so `cd4ml run --span 1` trains on span 1 and its predecessors even after span 2 exists;
- only trusted spans join: this run's span (which passed the validation gate before this resolver
  runs) and spans a completed Transform already consumed. A quarantined drop or harvest was
  ingested by ExampleGen but stopped at the gate, so it never enters a later window.

Each span counts once: its newest ExampleGen artifact. KubeflowV2DagRunner cannot compile a custom
strategy; the Kubeflow target trains on the ingested span alone (docs/loop.md).
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

SPAN = "span"


def span_of(artifact: types.Artifact) -> int:
    text = artifact.get_string_custom_property(SPAN)  # older TFX wrote it as a string
    return int(text) if text else artifact.get_int_custom_property(SPAN)


def window_spans(current: int, available: List[int], num_spans: int) -> List[int]:
    """The spans of a window of `num_spans` ending at `current`, newest first."""
    return sorted((s for s in set(available) if current - num_spans < s <= current), reverse=True)


class SpanWindowStrategy(resolver.ResolverStrategy):
    """Inputs: current (this run's Examples), examples (every Examples artifact). Config: num_spans."""

    def __init__(self, num_spans: int = 1):
        if num_spans < 1:
            raise ValueError(f"num_spans: a window holds at least one span, got {num_spans}")
        self.num_spans = num_spans

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        current = list(input_dict.get("current", []))
        if not current:
            return None
        newest: Dict[int, types.Artifact] = {}
        for artifact in _trusted_ingested(store, input_dict.get("examples", [])):
            span = span_of(artifact)
            if span not in newest or artifact.id > newest[span].id:
                newest[span] = artifact
        newest[span_of(current[0])] = current[0]
        spans = window_spans(span_of(current[0]), list(newest), self.num_spans)
        return {"current": current, "examples": [newest[s] for s in spans]}


def _trusted_ingested(store, artifacts: List[types.Artifact]) -> List[types.Artifact]:
    """The artifacts an ExampleGen wrote (Transform writes Examples too) that a completed or
    cached Transform execution then took as input."""
    if not artifacts:
        return []
    from ml_metadata.proto import metadata_store_pb2 as pb

    events = store.get_events_by_artifact_ids([a.id for a in artifacts])
    executions = store.get_executions_by_id(list({e.execution_id for e in events}))
    type_names = {t.id: t.name for t in store.get_execution_types_by_id(list({e.type_id for e in executions}))}
    kind = {e.id: type_names.get(e.type_id, "") for e in executions}
    done = {e.id for e in executions if e.last_known_state in (pb.Execution.COMPLETE, pb.Execution.CACHED)}
    ingested = {e.artifact_id for e in events if e.type == pb.Event.OUTPUT and "ExampleGen" in kind[e.execution_id]}
    consumed = {e.artifact_id for e in events if e.type == pb.Event.INPUT and e.execution_id in done
                and kind[e.execution_id].endswith("Transform")}
    return [a for a in artifacts if a.id in ingested and a.id in consumed]
