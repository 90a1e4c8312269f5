"""ModelExplainer: the explainer a version ships, its global importances, and the explainability gate.

After the Trainer, on this run's span: the background is an even sample of the training rows
(what the explanations' base value averages over), the importances are mean |attribution| over
an even sample of the eval rows, for the candidate and for the baseline model on the same rows
(the report's "what changed in how the model decides"). The check (scoring/explain.py rules)
becomes an InfraBlessing: TFX's Pusher refuses a model whose infra blessing is not blessed, so a
violation stops the push the way a failed evaluation does, with the reason in the run summary.
"""

import json
import os

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from cd4ml.contract import EXPLANATION_ARTIFACT
from components import detector_fit, features
from scoring import detector_core, explain
from components.baseline import has_baseline
from components.files import write_text

# The blessing's custom properties, as TFX's InfraValidator sets them (Pusher reads `blessed`).
BLESSED, REASON = "blessed", "reason"


class ModelExplanation(types.Artifact):
    """background.json and importances.json (scoring/explain.py) for one trained model."""

    TYPE_NAME = EXPLANATION_ARTIFACT


def _explainer(model: types.Artifact, background):
    from tfx.utils import path_utils

    from scoring.raw_signature import RawSignature

    signature = RawSignature(path_utils.serving_model_path(model.uri))
    signature.agrees_with_signature(background[:8])
    return explain.Explainer(signature.predict_encoded, background)


def explain_models(examples_uri: str, model: types.Artifact, baseline: types.Artifact = None,
                   background_rows: int = explain.BACKGROUND_ROWS, importance_rows: int = explain.IMPORTANCE_ROWS):
    """(background, candidate importances, baseline importances or None or {"error": ...})."""
    background = detector_core.encode(
        detector_fit.read_examples(os.path.join(examples_uri, "Split-train"), sample=background_rows))
    rows = detector_core.encode(
        detector_fit.read_examples(os.path.join(examples_uri, "Split-eval"), sample=importance_rows))
    candidate = explain.importances(_explainer(model, background).explain(rows))
    before = None
    if has_baseline(baseline):
        try:
            before = explain.importances(_explainer(baseline, background).explain(rows))
        except Exception as err:  # noqa: BLE001 - an older baseline (other inputs) has no comparison
            before = {"error": f"the baseline model cannot be explained on today's features: "
                               f"{str(err).splitlines()[0][:200]}"}
    return background, candidate, before


@component
def ModelExplainer(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    explanation: OutputArtifact[ModelExplanation],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    baseline_model: InputArtifact[standard_artifacts.Model] = None,
    rules: Parameter[str] = "{}",
):
    checked = explain.ExplainabilityRules.from_json(rules)
    background, candidate, before = explain_models(examples.uri, model, baseline_model)
    problems = explain.check(candidate, checked)
    explain.save(explanation.uri, background, candidate, write_text, extra={
        "baseline": before, "rules": json.loads(checked.to_json()), "violations": problems,
        "passed": not problems, "features": features.FEATURE_NAMES})
    top = max(candidate["share"].items(), key=lambda kv: kv[1])
    explanation.set_string_custom_property("top_feature", top[0])
    explanation.set_float_custom_property("top_share", top[1])
    explanation.set_int_custom_property("passed", int(not problems))
    blessing.set_int_custom_property(BLESSED, int(not problems))
    blessing.set_string_custom_property(
        REASON, "; ".join(problems) if problems else "explainability check passed")
