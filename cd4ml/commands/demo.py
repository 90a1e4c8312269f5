"""The demo on one machine: the whole continuous-delivery loop, timed.

Starts a local bucket (gcp-storage-emulator) and a fresh project home, trains on span 1
(January-June), serves it over the Open Inference Protocol (MLServer; --protocol seldon for Seldon
Core v1), sends span-2 (July-December) traffic with feedback until the drift detector fires, then
closes the loop without any file: the drift trigger harvests the labelled traffic into span 2 and
retrains on the window of spans 2 and 1, and the server hot-loads the new version (live MAE on
held-out days before and after). Then the data-drop path: the Jul-Dec file dropped into the bucket
becomes span 3 and retrains; rolls back and forward, and prints a timeline. Everything it starts is
stopped at the end.

--pipeline-only runs the earlier demo: span 1 then span 2 through `cd4ml run`, with both summaries.
"""

import sys

from cd4ml.commands.common import add_config_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "run the end-to-end demo: train, serve, drift, harvest, retrain, drop, hot-load, roll back/forward"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--pipeline-only", action="store_true", help="only train span 1 then span 2")
    parser.add_argument("--keep", action="store_true", help="keep the demo's temporary home")
    parser.add_argument("--protocol", choices=("v2", "seldon"), default="v2",
                        help="the server: v2, the Open Inference Protocol on MLServer (default), or seldon v1")
    parser.add_argument("--json", metavar="FILE", help="also write the timeline as JSON")
    add_verbose_flag(parser)


def main(args) -> int:
    quiet_libraries(args.verbose)
    if args.pipeline_only:
        return pipeline_only(args)
    from serving.launch import ServingEnvMissing, microservice_binary, mlserver_binary

    try:
        (mlserver_binary if args.protocol == "v2" else microservice_binary)()
    except ServingEnvMissing as err:
        print(f"cd4ml demo: {err}; running the pipeline-only demo instead", file=sys.stderr)
        return pipeline_only(args)
    from cd4ml.demo import loop

    try:
        result = loop.run_loop(loop.LoopSettings(home=getattr(args, "home", None), keep=args.keep,
                                                 protocol=args.protocol))
    except RuntimeError as exc:
        print(f"cd4ml demo: {exc}", file=sys.stderr)
        return 1
    print()
    print(result["timeline_text"])
    before, after = result["live_mae"]["before"], result["live_mae"]["after"]
    print(f"live MAE on held-out Jul-Dec days: {before['mae']:.1f} (version {before['version']}) -> "
          f"{after['mae']:.1f} (version {after['version']}, trained on harvested traffic)")
    print(f"drift detected to the retrained version answering: {result['drift_to_answer_s']:.1f} s")
    print(f"drop to the new version answering: {result['drop_to_answer_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(loop.summary_json(result))
    return 0


def pipeline_only(args) -> int:
    from cd4ml.runner import run_and_report
    from pipelines import local_runner

    worst = 0
    summaries = []
    for span in (1, 2):
        config = config_from(args, span=span)
        print(f"== span {span} ==")
        result = run_and_report(config)
        summary = local_runner.format_summary(result)
        print(summary)
        summaries.append(summary)
        worst = max(worst, result.exit_code)
    print("\n== demo summary ==")
    print("\n".join(summaries))
    return worst
