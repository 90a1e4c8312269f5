"""Where alerts go, and whether they got there.

    cd4ml alerts              the sinks configured (secrets shown as ***), the event kinds, and
                              the alerts sent and missed lately
    cd4ml alerts test         send one test alert to each sink now; exit 1 if any sink failed

Configure with CD4ML_ALERTS (a JSON or YAML file) or the CD4ML_ALERT_* variables (cd4ml/alerts.py,
docs/operations.md#alerts). Delivery is retried with backoff; what still fails is recorded in
<home>/alerts/missed.jsonl and never fails the action that raised the alert.
"""

import os
import sys

from cd4ml.commands.common import add_config_flags, config_from

HELP = "show the alert sinks, alerts sent and missed; `test` sends one to each sink"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("action", nargs="?", choices=("list", "test"), default="list")
    parser.add_argument("--last", type=int, default=10, help="how many sent and missed alerts to show")


def main(args) -> int:
    from cd4ml import alerts

    config = config_from(args)
    try:
        alerter = alerts.alerter(config.home)
    except alerts.AlertConfigError as exc:
        print(f"cd4ml alerts: {exc}", file=sys.stderr)
        return 2
    if not alerter.sinks:
        print("cd4ml alerts: no sink configured: set CD4ML_ALERTS (a file) or CD4ML_ALERT_SLACK_URL, "
              "CD4ML_ALERT_WEBHOOK_URL, CD4ML_ALERT_SMTP (docs/operations.md#alerts)")
        return 2 if args.action == "test" else 0
    if args.action == "test":
        event = alerts.Event("test", config.home, "a test alert from `cd4ml alerts test`: this sink works")
        results = alerter.send_now(event)
        for name, result in results.items():
            print(f"  {name:<12} {result}")
        failed = [n for n, r in results.items() if r != "sent"]
        print(f"sent to {len(results) - len(failed)} of {len(results)} sinks"
              + (f"; failed: {', '.join(failed)} (recorded in {os.path.join(alerter.state_dir, alerts.MISSED)})"
                 if failed else ""))
        return 1 if failed else 0
    print("sinks:")
    for sink in alerter.sinks:
        print(f"  {sink.name:<12} {sink.describe()}")
    print("events: " + ", ".join(k for k in alerts.EVENTS if k in alerter.events))
    sent = alerts.read_records(os.path.join(alerter.state_dir, alerts.SENT))[-args.last:]
    missed = alerts.read_records(os.path.join(alerter.state_dir, alerts.MISSED))[-args.last:]
    print(f"sent lately ({len(sent)}):")
    for record in sent:
        print(f"  {record['at']}  {record['key']}")
    print(f"missed lately ({len(missed)}):")
    for record in missed:
        print(f"  {record['event']['at']}  {record['event']['kind']}:{record['event']['subject']} "
              f"to {record['sink']}: {record['error']}")
    return 0
