"""Stop a run at data validation: no anomalies, or no training.

ExampleValidator records anomalies but lets the pipeline go on (TFX 1.16). This component sits
between it and Transform: it passes the curated schema through only when every split is clean,
and otherwise fails with a report that names each feature and rule, so Transform, Trainer and
Pusher never run on bad data and the serving model stays as it was. The ExampleAnomalies
artifact (kept in ML Metadata with the run) is the durable report; `anomaly_report` reads it.
"""

import os
from typing import Dict, List

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from cd4ml.contract import SCHEMA_FILE

ANOMALIES_FILE = "SchemaDiff.pb"


class DataValidationError(RuntimeError):
    """Raised when a span breaks the schema; the message is the readable report."""

    def __init__(self, problems: List[Dict[str, str]]):
        self.problems = problems
        super().__init__(format_report(problems))


def anomaly_report(anomalies_uri: str, split_names: List[str]) -> List[Dict[str, str]]:
    """Every anomaly of every split as {split, feature, rule, description}."""
    from tensorflow_data_validation.utils import anomalies_util

    problems = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        if not fileio.exists(path):
            continue
        anomalies = anomalies_util.load_anomalies_binary(path)
        for feature, info in sorted(anomalies.anomaly_info.items()):
            rules = ", ".join(sorted({r.short_description for r in info.reason})) or info.short_description
            details = " ".join(r.description for r in info.reason) or info.description
            problems.append({"split": split, "feature": feature, "rule": rules, "description": details})
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            problems.append({"split": split, "feature": "(dataset)",
                             "rule": ", ".join(r.short_description for r in info.reason),
                             "description": " ".join(r.description for r in info.reason)})
    return problems


def format_report(problems: List[Dict[str, str]]) -> str:
    if not problems:
        return "data validation: no anomalies"
    lines = [f"data validation failed: {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}"]
    for p in problems:
        lines.append(f"  [{p['split']}] feature '{p['feature']}': {p['rule']}: {p['description']}")
    return "\n".join(lines)


def report_for(anomalies: types.Artifact) -> List[Dict[str, str]]:
    return anomaly_report(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))


@component
def DataValidationGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    validated_schema: OutputArtifact[standard_artifacts.Schema],
):
    problems = report_for(anomalies)
    if problems:
        raise DataValidationError(problems)
    # Artifact URIs are gs:// in a Kubeflow pod: through TFX's filesystem layer, never shutil.
    fileio.copy(io_utils.get_only_uri_in_dir(schema.uri), os.path.join(validated_schema.uri, SCHEMA_FILE),
                overwrite=True)
