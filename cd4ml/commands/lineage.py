"""Where a pushed model version came from, read from ML Metadata.

  cd4ml lineage                 the latest pushed version, as a tree back to its span files
  cd4ml lineage VERSION         a given version (the directory name under the registry)
  cd4ml lineage --span 2        which models were trained from span 2 (blessed? pushed as?)
  cd4ml lineage --blessed       the latest blessed and the latest pushed model
Add --json for the same answers as JSON (the tree as artifacts, executions and a summary).
"""

from __future__ import annotations

import json
import sys

from cd4ml.commands.common import add_config_flags, config_from, has_store

HELP = "show the provenance of a pushed model version (data, checks, training, evaluation, push)"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("version", nargs="?", help="registry version (default: the latest pushed)")
    parser.add_argument("--span", type=int, help="list the models trained from this span instead")
    parser.add_argument("--blessed", action="store_true",
                        help="show the latest blessed and the latest pushed model instead")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _out(args, data, text: str):
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def main(args) -> int:
    from cd4ml import mlmd

    config = config_from(args)
    if not has_store(config):
        return 1
    store = mlmd.open_store(config.metadata_path)

    if args.span is not None:
        models = mlmd.models_from_span(store, args.span)
        lines = [f"models trained from span {args.span}: {len(models) or 'none'}"]
        for m in models:
            blessed = {True: "blessed", False: "not blessed", None: "not evaluated"}[m["blessed"]]
            pushed = f"pushed as {', '.join(m['versions'])}" if m["versions"] else "not pushed"
            lines.append(f"  model #{m['model_id']} trained in run {m['run_id']}: {blessed}, {pushed}\n"
                         f"    {m['uri']}")
        _out(args, {"span": args.span, "models": models}, "\n".join(lines))
        return 0

    if args.blessed:
        blessed, pushed = mlmd.latest_blessed_model(store), mlmd.latest_pushed_model(store)
        lines = [
            "latest blessed model: " + (f"#{blessed['model_id']} {blessed['model_uri']} (run {blessed['run_id']})"
                                        if blessed else "none"),
            "latest pushed model:  " + (f"version {pushed['version']} at {pushed['destination']} "
                                        f"(model #{pushed['model_id']}, run {pushed['run_id']})"
                                        if pushed else "none"),
        ]
        _out(args, {"latest_blessed": blessed, "latest_pushed": pushed}, "\n".join(lines))
        return 0

    doc = mlmd.provenance(store, args.version)
    if doc is None:
        versions = [p["version"] for p in mlmd.pushed_models(store)]
        what = f"version {args.version} was never pushed" if args.version else "no model has been pushed yet"
        print(f"{what} (pushed versions: {', '.join(versions) or 'none'})", file=sys.stderr)
        return 1
    if args.json:
        doc = dict(doc, artifacts=list(doc["artifacts"].values()), executions=list(doc["executions"].values()))
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(mlmd.format_tree(doc))
    print()
    print(format_summary(doc["summary"]))
    return 0


def format_summary(s) -> str:
    from cd4ml.mlmd import harvest_line

    files = ", ".join(f["name"] + (f" (generation {f['generation']})" if f.get("generation") else "")
                      for f in s["span_files"] + s.get("bucket_objects", [])) or "(not recorded)"
    trainer = s["trainer"] or {}
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(s["metrics"].items())) or "(see evaluation)"
    rows = [("span", f"{s['span']}: {files}")]
    for entry in s.get("window", [])[1:]:
        earlier = ", ".join(f["name"] for f in entry["files"] + entry["bucket_objects"]) or "(not recorded)"
        rows.append(("window span", f"{entry['span']}: {earlier}"))
    for entry in s.get("window", []):
        if entry["harvest"]:
            rows.append((f"span {entry['span']}", harvest_line(entry["harvest"])))
    rows += [
        ("schema", s["schema_file"] or ", ".join(s["schema"])),
        ("statistics", ", ".join(s["statistics"])),
        ("anomalies", "; ".join(f"{a['uri']} (clean splits {a['clean_splits']})" for a in s["anomalies"])),
        ("transform graph", ", ".join(s["transform_graph"])),
        ("trainer", f"run {trainer.get('run_id')}, {trainer.get('module_file')}, {trainer.get('custom_config')}"),
        ("evaluation", ", ".join(s["evaluation"]) + f"; {metrics}"),
        ("blessing", f"{'blessed' if s['blessed'] else 'NOT blessed'} ({s['blessing']})"
         + (f"; baseline version {s['baseline_version']}" if s["baseline_model"] else "; no baseline")),
        ("cost", f"{s['usage']['cpu_seconds']:.1f} CPU s, peak {s['usage']['peak_mb']:.0f} MB over "
                 f"{s['usage']['executions']} executions in {len(s['usage']['runs'])} run(s)"
         if s.get("usage") else "not measured"),
        ("detectors", ", ".join(s["detectors"]) or "none recorded"),
        ("pusher", f"version {s['version']} -> {s['destination']} (run {(s['pusher'] or {}).get('run_id')})"),
    ]
    for d in s.get("decisions", []):
        what = f"{d['action']} {d['version'] or '(unpin)'}" + (f" (was {d['previous']})" if d["previous"] else "")
        rows.append(("decision", f"{d['at']} {d['user']}: {what}" + (f": {d['reason']}" if d["reason"] else "")))
    width = max(len(k) for k, _ in rows)
    return "summary\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
