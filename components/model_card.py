"""A model card for every version: what it is for, what it was trained on, how good it is, how it
decides, what watches it, its known limits, and every decision taken on it since.

Written by ReleaseBundle into the version (`MODEL_CARD.json` and the same as a self-contained
page, `model_card.html`), from the files the version itself carries, so the card says what was
shipped. The sections follow Model Card Toolkit's schema (model details, considerations, data,
quantitative analysis); the toolkit itself does not install beside TFX 1.16's pins
(model-card-toolkit 2.0.0, its last release, requires tensorflow-model-analysis < 0.42, absl-py
< 1.1 and jsonschema < 4; we pin 0.47.1, 1.4.0 and 4.x), so the same fields are written here.
Decisions (approval, promotion, rollback, pins, experiments) are appended as they happen
(`append_decision`, called by cd4ml/promotion.py and cd4ml/experiment.py), and the page is
rewritten with them; so is what making the version used, once its run has ended.
"""

import datetime
import json
import os
from typing import Callable, Dict, List, Optional

from cd4ml.contract import (DETECTORS_DIR, EVALUATION_FILE, EXPLAINER_DIR, FEATURES_FILE, MAE, MODEL_CARD,
                            MODEL_CARD_PAGE, MODEL_NAME, OVERALL_SLICE)
from components import registry as reg

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

PURPOSE = ("Predicts the number of bikes rented in an hour (Capital Bikeshare, Washington DC) from the "
           "calendar and the weather, for planning the fleet hour by hour.")
NOT_FOR = ["decisions about individual people: it knows no one, only hours",
           "other cities or systems without retraining on their data",
           "hours whose weather or calendar lies outside the domains below (the server refuses them)"]
LIMITS = ["Trained on 2011's hourly data: trends after it (fleet growth, new stations) are unknown to it.",
          "Errors are largest at the commuting peaks (see the error by hour); the overall MAE hides them.",
          "Heavy rain and snow hours are rare in the data: their predictions rest on few examples.",
          "Drift and outlier detectors watch its inputs; a drifted window is a reason to retrain, not a verdict."]


def _read_json(path: str, default=None):
    """Through the registry's readers (local, or gs:// without TensorFlow: `cd4ml approve` is quick)."""
    if not reg.exists(path):
        return default
    return json.loads(reg.read_text(path))


def build(version_dir: str, manifest: Dict[str, object], window: List[int], bounds: Dict[str, float],
          data_root: str = "") -> Dict[str, object]:
    """The card of the version in `version_dir`, from its own files and its manifest (written
    after the card: a complete version has its card); `window`: the spans it was trained on,
    newest first; `bounds`: the blessing's {"mae_bound", "mae_regression_tolerance"}."""
    from cd4ml.contract import HARVEST_PROVENANCE

    evaluation = _read_json(os.path.join(version_dir, EVALUATION_FILE), {})
    importances = _read_json(os.path.join(version_dir, EXPLAINER_DIR, "importances.json"), {})
    detectors = _read_json(os.path.join(version_dir, DETECTORS_DIR, "meta.json"), {})
    features = _read_json(os.path.join(version_dir, FEATURES_FILE), [])
    spans = []
    for span in window:
        provenance = _read_json(os.path.join(data_root, f"span-{span}", HARVEST_PROVENANCE)) if data_root else None
        spans.append({"span": span, "source": "harvested from serving logs" if provenance else "data drop",
                      "harvest": provenance})
    overall = evaluation.get("slices", {}).get(OVERALL_SLICE, {})
    baseline = manifest.get("baseline")
    change = evaluation.get("diff", {}).get(OVERALL_SLICE, {}).get(MAE)
    return {
        "model_details": {"name": MODEL_NAME, "version": manifest.get("version", os.path.basename(version_dir)),
                          "created": manifest.get("created"), "pipeline": manifest.get("pipeline"),
                          "approval": manifest.get("approval", "not needed")},
        "considerations": {"purpose": PURPOSE, "not_for": NOT_FOR, "limitations": LIMITS},
        "data": {"window": spans, "span": manifest.get("span"),
                 "eval_rows": overall.get("example_count"),
                 "features": [{"name": f["name"], "kind": f["kind"], "dtype": f["dtype"],
                               "domain": f.get("vocabulary") or [f.get("low"), f.get("high")]} for f in features]},
        "quantitative_analysis": {
            "overall": overall,
            "slices": {k: v for k, v in evaluation.get("slices", {}).items() if k != OVERALL_SLICE},
            "baseline": {"version": baseline, "mae_change": change} if baseline else None,
            "bounds": bounds, "blessed": evaluation.get("blessed"), "failures": evaluation.get("failures", [])},
        "explainability": {"share": importances.get("share", {}), "passed": importances.get("passed"),
                           "rules": importances.get("rules", {}), "violations": importances.get("violations", []),
                           "baseline_share": (importances.get("baseline") or {}).get("share")},
        "detectors": {"drift": detectors.get("drift"), "p_value": detectors.get("p_val"),
                      "outlier": detectors.get("outlier"), "reference_rows": detectors.get("n_reference")},
        "decisions": [],
    }


def render(card: Dict[str, object]) -> str:
    """The card as one self-contained HTML page (no script, no external file)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, d=2: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    return env.get_template("model_card.html.j2").render(card=card)


def write(version_dir: str, card: Dict[str, object], write_text: Callable[[str, str], None]):
    """Both files, through the caller's atomic writer (the pipeline's gfile one, the CLI's)."""
    write_text(os.path.join(version_dir, MODEL_CARD), json.dumps(card, indent=2, sort_keys=True, default=str))
    write_text(os.path.join(version_dir, MODEL_CARD_PAGE), render(card))


def read(version_dir: str) -> Optional[Dict[str, object]]:
    return _read_json(os.path.join(version_dir, MODEL_CARD))


def append_decision(version_dir: str, decision: Dict[str, object], write_text: Callable[[str, str], None]) -> bool:
    """Add a decision taken on the version (what, who, why, when) to its card; False when the
    version has no card (pushed by an older cd4ml)."""
    card = read(version_dir)
    if card is None:
        return False
    entry = dict(decision)
    entry.setdefault("at", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    card.setdefault("decisions", []).append(entry)
    write(version_dir, card, write_text)
    return True


def record_usage(version_dir: str, run_id: str, usage: Dict[str, object], write_text: Callable[[str, str], None]):
    """What making the version used: every execution that led to it, in its run and earlier ones
    (cd4ml/mlmd/lineage.py version_usage), known only once the pushing run ended."""
    card = read(version_dir)
    if card is not None and usage:
        card["usage"] = dict(usage, run_id=run_id)
        write(version_dir, card, write_text)


def summary(card: Dict[str, object]) -> str:
    """The card in a few lines, as `cd4ml approve` prints it before recording an approval."""
    details, quant, data = card["model_details"], card["quantitative_analysis"], card["data"]
    overall = quant.get("overall") or {}
    lines = [f"model card: {details['name']} version {details['version']} ({details.get('created')})",
             f"  for: {card['considerations']['purpose']}",
             "  trained on spans " + ", ".join(f"{s['span']} ({s['source']})" for s in data["window"]),
             f"  eval: MAE {overall.get(MAE, float('nan')):.2f} over {overall.get('example_count', 0):.0f} rows; "
             f"bound {quant['bounds'].get('mae_bound')}; blessed: {quant.get('blessed')}"]
    if quant.get("baseline"):
        change = quant["baseline"].get("mae_change")
        lines.append(f"  against version {quant['baseline']['version']}: MAE "
                     + (f"{change:+.2f}" if change is not None else "change not recorded"))
    share = card["explainability"].get("share") or {}
    if share:
        top = sorted(share.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  decides mostly on " + ", ".join(f"{k} {v:.0%}" for k, v in top)
                     + f"; explainability check {'passed' if card['explainability'].get('passed') else 'FAILED'}")
    if card.get("usage"):
        used = card["usage"]
        lines.append(f"  making it used {used['cpu_seconds']:.1f} CPU s over {used.get('executions', '?')} "
                     f"executions in {len(used.get('runs', []))} run(s), peak {used['peak_mb']:.0f} MB")
    for decision in card.get("decisions", []):
        lines.append(f"  {decision.get('at')}: {decision.get('action')} by {decision.get('user')}: "
                     f"{decision.get('reason')}")
    return "\n".join(lines)
