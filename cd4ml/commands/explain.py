"""Explain predictions: how much each raw feature added to or took from each row's prediction.

    cd4ml explain rows.json                    the version the server would serve now
    cd4ml explain --version 1796286880 rows.json
    echo '[{"season": 1, ...}]' | cd4ml explain -

ROWS_FILE is a JSON list of records (like a Seldon request's `jsonData`), validated by the
version's own feature specification, as the server would. The attributions are exact Shapley
values against the background rows the pipeline shipped in the version: per row, base value +
the sum of the attributions = the prediction (scoring/explain.py). `--json` prints
{"version", "base_value", "rows": [{"prediction", "attributions": {feature: value}}]}.
The servers answer the same at POST /api/v1.0/explain (Seldon v1) and
POST /v2/models/bike-demand/explain (Open Inference Protocol).
"""

import json
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from, quiet_libraries

HELP = "explain predictions: each raw feature's additive contribution, per row"


def register(parser):
    add_config_flags(parser)
    add_registry_flag(parser)
    parser.add_argument("--version", help="the model version (default: the one the server would serve)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("rows_file", metavar="ROWS_FILE", help="a JSON list of records, or - for stdin")


def main(args) -> int:
    quiet_libraries()
    config = config_from(args, registry=args.registry)
    try:
        text = sys.stdin.read() if args.rows_file == "-" else open(args.rows_file).read()
    except OSError as exc:
        print(f"cd4ml explain: cannot read ROWS_FILE: {exc}", file=sys.stderr)
        return 2
    try:
        records = json.loads(text)
    except ValueError as exc:
        print(f"cd4ml explain: ROWS_FILE is not JSON: {exc}", file=sys.stderr)
        return 2

    from cd4ml.promotion import serving_target
    from scoring import detector_core
    from serving.request import RequestError, parse, split_event_times
    from serving.version import LoadedVersion, VersionError

    version = args.version or serving_target(config.registry)[0]
    if not version:
        print(f"cd4ml explain: no servable version under {config.registry}; run `cd4ml run` first",
              file=sys.stderr)
        return 2
    try:
        model = LoadedVersion(config.registry, version)
    except (VersionError, OSError) as exc:
        print(f"cd4ml explain: version {version} cannot be loaded: {exc}", file=sys.stderr)
        return 2
    if model.explainer is None:
        print(f"cd4ml explain: version {version} ships no explainer (pushed before versions carried one); "
              f"it still serves predictions", file=sys.stderr)
        return 2
    try:
        rows = parse({"jsonData": records}, spec=model.features)
    except RequestError as exc:
        print(f"cd4ml explain: ROWS_FILE: {exc.message}", file=sys.stderr)
        return 2
    split_event_times(rows)
    explanation = model.explainer.explain(detector_core.encode(rows, model.features))
    if args.json:
        print(json.dumps({"version": version, **explanation.to_json()}, indent=2))
    else:
        print(format_table(version, rows, explanation, len(model.explainer.background)))
    return 0


def format_table(version: str, rows, explanation, background_rows: int) -> str:
    lines = [f"version {version}: base value {explanation.base_value:.1f} bikers/hour "
             f"(the mean prediction over {background_rows} training rows)"]
    for i, (row, prediction, attributions) in enumerate(
            zip(rows, explanation.predictions, explanation.attributions), start=1):
        total = sum(attributions.values())
        lines.append(f"row {i}: prediction {prediction:.1f} = base {explanation.base_value:.1f} "
                     f"{'+' if total >= 0 else '-'} {abs(total):.1f}")
        scale = max((abs(v) for v in attributions.values()), default=0) or 1.0
        for name, value in sorted(attributions.items(), key=lambda kv: -abs(kv[1])):
            bar = ("+" if value >= 0 else "-") * max(0, round(20 * abs(value) / scale))
            shown = f"{row[name]:.4g}" if isinstance(row[name], float) else str(row[name])
            lines.append(f"  {name:<11} = {shown:<16} {value:+9.2f}  {bar}")
    return "\n".join(lines)
