"""Browse runs, artifacts and lineage in a web browser: a read-only view of this project's ML
Metadata (SQLite or MySQL), model registry, data root and serving logs.

    cd4ml ui                        http://127.0.0.1:8080/runs
    cd4ml ui --port 9090 --home H   another home (or CD4ML_METADATA_PATH=mysql://... for a team's store)
    cd4ml ui --export DIR           the same pages as static HTML (DIR/index.html), e.g. a CI artifact

Pages: runs (filter by status, trigger, text; tick two to compare), a run (its DAG, components,
statistics, anomalies, schema, evaluation by slice, the run report), a version (lineage drawn back
to its span files or harvest and forward to its decisions; live MAE and drift from the serving
logs), a span (files, provenance, runs, models). It binds to 127.0.0.1 unless --host says otherwise,
and never writes: SQLite is opened read-only.
"""


from cd4ml.commands.common import add_config_flags, config_from, has_store

HELP = "browse runs, artifacts and lineage in a web browser (read-only), or export them as HTML"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    parser.add_argument("--log-dir", help="the server's logs, for live MAE and drift (default <home>/serving-logs)")
    parser.add_argument("--export", metavar="DIR", help="write every page as static HTML under DIR and exit")


def main(args) -> int:
    from cd4ml import mlmd
    from cd4ml.ui.app import create_app, export
    from cd4ml.ui.data import Browser

    config = config_from(args)
    if not has_store(config):
        return 1
    browser = Browser(config, log_dir=args.log_dir)
    if args.export:
        export(browser, args.export)
        return 0
    app = create_app(browser)
    print(f"cd4ml ui: http://{args.host}:{args.port}/runs over {mlmd.describe(config.metadata_path)} "
          f"(read-only; Ctrl-C stops it)", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0
