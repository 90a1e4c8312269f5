"""Run the training pipeline locally on one span and print a summary.

Exit codes: 0 pushed or nothing to do, 1 error, 2 data validation failed (nothing trained or
pushed; the report is kept under <home>/runs/<run id>/), 3 model not blessed (not pushed).
"""

import sys

from cd4ml.commands.common import add_config_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "run the pipeline on a span (latest by default) and print what happened"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--span", type=int, help="span number to train on (default: the latest span-N)")
    parser.add_argument("--no-cache", action="store_true", help="rerun every component")
    parser.add_argument("--tune", action="store_true",
                        help="search hyperparameters with TFX's Tuner before training (keras_tuner random "
                             "search over width, depth, learning rate and epochs); later runs reuse the "
                             "best ones (env CD4ML_TUNE)")
    parser.add_argument("--trials", type=int, help="tuning trials with --tune (env CD4ML_TUNE_TRIALS, default 3)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_verbose_flag(parser)


def main(args) -> int:
    quiet_libraries(args.verbose)
    from cd4ml.runner import run_and_report
    from pipelines import local_runner

    if args.trials is not None and not args.tune:
        print("cd4ml run: --trials needs --tune", file=sys.stderr)
        return 2
    config = config_from(args, span=args.span, enable_cache=False if args.no_cache else None,
                         tune=True if args.tune else None, tune_trials=args.trials)
    result = run_and_report(config, progress=(lambda _: None) if args.json else print)
    print(result.to_json() if args.json else local_runner.format_summary(result))
    return result.exit_code
