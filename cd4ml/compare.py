"""Champion vs challenger on live traffic, from the server's logs.

Two views, both from `<log dir>/predictions*.jsonl` and `feedback*.jsonl` (serving/service.py):
- live: what each version actually answered, joined with ground truth (feedback) -> requests,
  rows, labelled rows, live MAE per version;
- replay (shadow evaluation): the labelled requests replayed through each given version in
  process (serving/version.py, the same loader the server uses) -> MAE and RMSE of every version
  on the *same* live rows, plus how often the challenger beats the champion row by row. Nothing is
  answered to a client, so it is the offline form of a shadow deployment; on Kubernetes the
  shadow SeldonDeployment (k8s/overlays/shadow) logs the challenger's predictions live.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from cd4ml.contract import FEEDBACK_LOG, PREDICTIONS_LOG
from cd4ml.logstore import labelled_requests, read_records


def live(log_dir: str) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for p in read_records(log_dir, PREDICTIONS_LOG):
        v = out.setdefault(str(p.get("version")), {"requests": 0, "rows": 0, "labelled": 0, "abs_error": 0.0})
        v["requests"] += 1
        v["rows"] += len(p.get("predictions") or [])
    for f in read_records(log_dir, FEEDBACK_LOG):
        v = out.setdefault(str(f.get("version")), {"requests": 0, "rows": 0, "labelled": 0, "abs_error": 0.0})
        errors = f.get("abs_errors") or []
        v["labelled"] += len(errors)
        v["abs_error"] += sum(errors)
    for v in out.values():
        v["live_mae"] = v["abs_error"] / v["labelled"] if v["labelled"] else None
        del v["abs_error"]
    return out


def labelled_rows(log_dir: str, limit: Optional[int] = None) -> List[Tuple[Dict, float]]:
    """(features, truth) of every labelled live row, the last `limit` of them when given."""
    rows = [(features, float(label)) for logged, fb in labelled_requests(log_dir)
            for features, label in zip(logged["rows"], fb["truth"])]
    return rows[-limit:] if limit else rows


def replay(registry: str, versions: List[str], log_dir: str, limit: Optional[int] = None) -> Dict:
    from serving.version import LoadedVersion

    rows = labelled_rows(log_dir, limit)
    if not rows:
        raise ValueError(f"no labelled requests in {log_dir} (feedback joined to predictions)")
    features = [r[0] for r in rows]
    truth = [r[1] for r in rows]
    predictions = {}
    for version in versions:
        predictions[version] = [float(x) for x in LoadedVersion(registry, version).predict(features)]
    result = {"rows": len(rows), "versions": {}}
    for version, pred in predictions.items():
        errors = [abs(p - t) for p, t in zip(pred, truth)]
        result["versions"][version] = {
            "mae": sum(errors) / len(errors),
            "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
        }
    if len(versions) == 2:
        champion, challenger = versions
        wins = sum(abs(c - t) < abs(p - t) for p, c, t in zip(predictions[champion], predictions[challenger], truth))
        result["challenger_better_rows"] = wins / len(truth)
    return result


def format_report(live_stats: Dict, replayed: Optional[Dict]) -> str:
    lines = ["live (as answered):"]
    if not live_stats:
        lines.append("  no requests logged")
    for version, s in sorted(live_stats.items()):
        mae = f"{s['live_mae']:.2f}" if s.get("live_mae") is not None else "-"
        lines.append(f"  {version:<12} requests {s['requests']:>6}  rows {s['rows']:>7}  "
                     f"labelled {s['labelled']:>6}  live MAE {mae}")
    if replayed:
        lines.append(f"replay of {replayed['rows']} labelled live rows through each version:")
        for version, s in replayed["versions"].items():
            lines.append(f"  {version:<12} MAE {s['mae']:.2f}  RMSE {s['rmse']:.2f}")
        if "challenger_better_rows" in replayed:
            lines.append(f"  challenger closer to the truth on {replayed['challenger_better_rows']:.0%} of rows")
    return "\n".join(lines)
