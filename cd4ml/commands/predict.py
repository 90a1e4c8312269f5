"""Score a file, a span or a bucket prefix with a model version, in batch, on Beam.

    cd4ml predict rows.csv out/                        the version the server would serve now
    cd4ml predict --version 1796286880 span:2 out/     a span of the data root
    cd4ml predict gs://BUCKET/incoming/ gs://BUCKET/scored/ --beam-args "--runner=DataflowRunner ..."

Beam's RunInference with the version's SavedModel (pipelines/batch.py). Each row is checked
against the version's own feature specification, as the server checks a request; a bad row goes
to OUTPUT/rejects-*.jsonl with the field and the rule. OUTPUT/predictions-*.jsonl holds one line a
row: where it came from (file:line), its features, the prediction and the version that made it.
"""

import shlex
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from, quiet_libraries

HELP = "score a file, span or bucket prefix with a version, in batch (Beam RunInference)"


def register(parser):
    add_config_flags(parser)
    add_registry_flag(parser)
    parser.add_argument("input", metavar="INPUT", help="a .csv or .jsonl file, a folder or gs:// prefix of them, "
                                                       "or span:N of the data root")
    parser.add_argument("output", metavar="OUTPUT", help="a folder or gs:// prefix for the sharded results")
    parser.add_argument("--version", help="the model version (default: the one the server would serve)")
    parser.add_argument("--explain", action="store_true",
                        help="add each feature's attribution to each prediction (exact Shapley values, as "
                             "the servers' explain endpoints answer; some 30 ms a row)")
    parser.add_argument("--beam-args", default="", help="Beam pipeline options (default: the DirectRunner here; "
                                                         "for Dataflow, those `cd4ml compile --dataflow` uses)")


def main(args) -> int:
    quiet_libraries()
    config = config_from(args, registry=args.registry)
    from pipelines import batch

    try:
        result = batch.predict(config.registry, args.input, args.output, version=args.version,
                               data_root=config.data_root, beam_args=shlex.split(args.beam_args),
                               explain=args.explain)
    except ValueError as exc:
        print(f"cd4ml predict: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0
