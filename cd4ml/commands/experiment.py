"""A bandit experiment between the served version (the champion) and challengers, on live feedback.

    cd4ml experiment start CHALLENGER [CHALLENGER ...] [--strategy thompson|epsilon-greedy]
                           [--min-feedback 200] [--confidence 0.95] [--reason ...]
    cd4ml experiment status [--json]     arms, traffic share, rewards, live MAE, P(best), regret
    cd4ml experiment verdict [--once]    conclude when the evidence is in: promote the winner
    cd4ml experiment stop [--reason ...] end it now (the champion keeps serving)

Every running server (both protocols) follows <registry>/EXPERIMENT.json at its next poll and
routes each request to an arm; every answer names the version that answered. A request's reward is
the fraction of its rows predicted within max(25 bikers, 25 %) of the truth (or the client's own
reward in [0, 1]); the bandit's counts are folded from the feedback log, so all workers and a
restarted server share them. Each step is recorded in ML Metadata (cd4ml.Experiment).
"""

import json
import sys
import time

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from

HELP = "route live traffic between versions with a bandit; conclude on the evidence"


def register(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start routing between the served version and challengers")
    start.add_argument("challengers", nargs="+", metavar="CHALLENGER", help="complete, blessed versions")
    start.add_argument("--strategy", choices=("thompson", "epsilon-greedy"), default="thompson")
    start.add_argument("--epsilon", type=float, default=0.1, help="epsilon-greedy's exploration rate")
    start.add_argument("--min-feedback", type=int, default=200, help="labelled rows before a verdict")
    start.add_argument("--confidence", type=float, default=0.95, help="P(best) a verdict needs")
    start.add_argument("--reason", default="", help="why (recorded in ML Metadata)")
    status = sub.add_parser("status", help="the evidence so far")
    status.add_argument("--json", action="store_true")
    verdict = sub.add_parser("verdict", help="conclude when the evidence says so (promote the winner)")
    verdict.add_argument("--once", action="store_true", help="look once, then exit")
    verdict.add_argument("--interval", type=float, default=10.0, help="seconds between looks")
    stop = sub.add_parser("stop", help="end the experiment now; the champion keeps serving")
    stop.add_argument("--reason", default="", help="why (recorded in ML Metadata)")
    for p in (start, status, verdict, stop):
        add_config_flags(p)
        add_registry_flag(p)
        p.add_argument("--log-dir", help="the servers' logs (default <home>/serving-logs)")


def main(args) -> int:
    from cd4ml import experiment

    config = config_from(args, registry=args.registry)
    try:
        if args.action == "start":
            exp = experiment.start(config.registry, args.challengers, args.strategy, args.min_feedback,
                                   args.confidence, args.epsilon, args.reason, config.metadata_path)
            print(f"experiment {exp.id}: {exp.champion} (champion) vs {', '.join(exp.challengers)}, {exp.strategy}; "
                  f"servers route from their next poll; verdict after {exp.min_feedback} labelled rows at "
                  f"P(best) >= {exp.confidence}")
            return 0
        if args.action == "status":
            state = experiment.status(config.registry, args.log_dir)
            print(json.dumps(state.as_dict(), indent=2, default=str) if args.json else experiment.format_status(state))
            return 0
        if args.action == "stop":
            done = experiment.conclude(config.registry, args.log_dir, config.metadata_path, force_stop=True,
                                       reason=args.reason)
            print(f"experiment {done['evidence']['experiment']['id']} ended ({done['action']})"
                  + (f": {done['winner']} promoted" if done["promoted"] else "; the champion keeps serving"))
            return 0
        while True:  # verdict
            if experiment.running(config.registry) is None:  # nothing to judge: not an error (a CronJob polls)
                print(f"no experiment is running on {config.registry}")
                return 0
            done = experiment.conclude(config.registry, args.log_dir, config.metadata_path)
            if done:
                from cd4ml import alerts

                exp_id = done["evidence"]["experiment"]["id"]
                alerts.notify(config.home, "experiment_concluded", exp_id, f"experiment {exp_id}: {done['reason']}; "
                              + (f"{done['promoted']} promoted" if done["promoted"] else "the champion keeps serving"))
                print(f"experiment {done['evidence']['experiment']['id']} concluded: {done['reason']}; "
                      + (f"{done['promoted']} promoted" if done["promoted"] else "the champion keeps serving")
                      + f" (ML Metadata execution {done['execution_id']})")
                return 0
            if args.once:
                print(experiment.format_status(experiment.status(config.registry, args.log_dir)))
                return 0
            time.sleep(args.interval)
    except (experiment.ExperimentError, ValueError) as exc:
        print(f"cd4ml experiment {args.action}: {exc}", file=sys.stderr)
        return 2
