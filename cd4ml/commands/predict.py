"""Score a file, a span or a bucket prefix with a model version, in batch, on Beam.

    cd4ml predict rows.csv out/                        the version the server would serve now
    cd4ml predict --version 1796286880 span:2 out/     a span of the data root
    cd4ml predict gs://BUCKET/incoming/ gs://BUCKET/scored/ --beam-args "--runner=DataflowRunner ..."

Beam's RunInference with the version's SavedModel (pipelines/batch.py). Each row is checked
against the version's own feature specification, as the server checks a request; a bad row goes
to OUTPUT/rejects-*.jsonl with the field and the rule. OUTPUT/predictions-*.jsonl holds one line a
row: where it came from (file:line), its features, the prediction and the version that made it.
"""

import dataclasses
import datetime
import json
import os
import shlex
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from, quiet_libraries

HELP = "score a file, span or bucket prefix with a version, in batch (Beam RunInference)"


def register(parser):
    add_config_flags(parser)
    add_registry_flag(parser)
    parser.add_argument("input", metavar="INPUT", help="a .csv or .jsonl file, a folder or gs:// prefix of them, "
                                                       "or span:N of the data root")
    parser.add_argument("output", metavar="OUTPUT", help="a folder or gs:// prefix for the sharded results; "
                                                         "{date} in it becomes today's UTC date (YYYY-MM-DD)")
    parser.add_argument("--version", help="the model version (default: the one the server would serve)")
    parser.add_argument("--explain", action="store_true",
                        help="add each feature's attribution to each prediction (exact Shapley values, as "
                             "the servers' explain endpoints answer; some 30 ms a row)")
    parser.add_argument("--beam-args", default="", help="Beam pipeline options (default: the DirectRunner here; "
                                                         "for Dataflow, those `cd4ml compile --dataflow` uses)")
    parser.add_argument("--summary", metavar="PATH",
                        help="also write the summary as JSON here, with what this command used (CPU and wall "
                             "seconds, peak memory, MB read and written): the Kubeflow batch job's output")


def main(args) -> int:
    quiet_libraries()
    config = config_from(args, registry=args.registry)
    from pipelines import batch, usage

    output = args.output.replace("{date}", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    try:
        with usage.Meter() as meter:
            result = batch.predict(config.registry, args.input, output, version=args.version,
                                   data_root=config.data_root, beam_args=shlex.split(args.beam_args),
                                   explain=args.explain)
    except ValueError as exc:
        print(f"cd4ml predict: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    if args.summary:
        os.makedirs(os.path.dirname(os.path.abspath(args.summary)), exist_ok=True)
        with open(args.summary, "w") as fh:
            json.dump({**dataclasses.asdict(result), "usage": meter.usage.as_dict()}, fh, indent=2, sort_keys=True)
    return 0
