"""The demo on the embedded defaults: train on span 1 (January-June), then on span 2 (July-December).

Prints each run's summary; a rerun of the demo is served from the cache and says so.
"""

from cd4ml.commands.common import add_config_flags, config_from, quiet_libraries

HELP = "run the end-to-end demo on the embedded defaults"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX/Beam/TF logs")


def main(args) -> int:
    quiet_libraries(args.verbose)
    from pipelines import local_runner

    worst = 0
    summaries = []
    for span in (1, 2):
        config = config_from(args, span=span)
        print(f"== span {span} ==")
        result = local_runner.run(config)
        summary = local_runner.format_summary(result)
        print(summary)
        summaries.append(summary)
        worst = max(worst, result.exit_code)
    print("\n== demo summary ==")
    print("\n".join(summaries))
    return worst
