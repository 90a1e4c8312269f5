"""The run browser: the Kubeflow UI's views of runs, artifacts and lineage over a project's ML
Metadata (SQLite or MySQL), registry, data root and serving logs, as a Flask app with server-side
Jinja2 templates. Read-only: only GET routes, SQLite opened read-only, no form that writes.

    cd4ml ui [--home H] [--port 8080] [--host 127.0.0.1]    serve it
    cd4ml ui --export DIR                                   the same pages as static HTML

Pages: runs (filterable) -> a run (its DAG drawn, components, statistics, anomalies, schema,
evaluation by slice against the thresholds and the baseline, the run report) -> its pushed version
(lineage drawn back to the span files, bucket objects or harvest, forward to the decisions taken;
live MAE and drift windows from the serving logs) -> a span (files, provenance, runs, models);
and compare (two runs side by side: data, hyperparameters, metrics per slice, what changed).
Every value is escaped by the templates (autoescape): run names, bucket object names and drifted
features come from outside.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Callable, Dict, Optional

from cd4ml.ui.data import Browser

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def file_part(value) -> str:
    """A name as part of an exported file's name: itself when harmless, else a hash of it."""
    text = str(value)
    return text if SAFE.match(text) and text not in (".", "..") else hashlib.sha256(text.encode()).hexdigest()[:16]


class Links:
    """Where each page lives: Flask routes when served, relative .html files when exported."""

    def __init__(self, url_for: Optional[Callable] = None):
        self.url_for = url_for

    def _page(self, endpoint: str, name: str, **values) -> str:
        return self.url_for(endpoint, **values) if self.url_for else name

    def runs(self) -> str:
        return self._page("runs", "index.html")

    def run(self, run_id) -> str:
        return self._page("run", f"run-{file_part(run_id)}.html", run_id=run_id)

    def report(self, run_id) -> str:
        return self._page("report", f"report-{file_part(run_id)}.html", run_id=run_id)

    def version(self, version) -> str:
        return self._page("version", f"version-{file_part(version)}.html", version=version)

    def span(self, span) -> str:
        return self._page("span", f"span-{int(span)}.html", span=int(span))

    def compare(self, a, b) -> str:
        if self.url_for:
            return self.url_for("compare", a=a, b=b)
        return f"compare-{file_part(a)}-{file_part(b)}.html"

    def node(self, href: str) -> str:
        """A drawn node's link ("span:3")."""
        kind, _, value = href.partition(":")
        return self.span(value) if kind == "span" else ""


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    return env


class Pages:
    """Renders each page to HTML with a given Links (live or exported)."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self.env = environment()

    def render(self, template: str, links: Links, **context) -> str:
        return self.env.get_template(template).render(links=links, home=self.browser.config.home,
                                                      store=_describe(self.browser.config.metadata_path),
                                                      static=links.url_for is None, **context)

    def runs(self, links: Links, status: str = "", trigger: str = "", q: str = "") -> str:
        rows = self.browser.runs()
        shown = [r for r in rows if (not status or r.status == status) and (not trigger or r.trigger == trigger)
                 and (not q or q.lower() in " ".join(map(str, (r.run_id, r.pushed_version, r.trigger_detail,
                                                               r.status, r.window))).lower())]
        return self.render("runs.html.j2", links, rows=shown, total=len(rows), status=status, trigger=trigger, q=q,
                           statuses=sorted({r.status for r in rows}), triggers=sorted({r.trigger for r in rows}),
                           previous=self.browser.previous(rows))

    def run(self, links: Links, run_id: str) -> Optional[str]:
        page = self.browser.run_page(run_id)
        return None if page is None else self.render("run.html.j2", links, run_id=run_id, **page)

    def version(self, links: Links, version: str) -> Optional[str]:
        page = self.browser.version_page(version)
        return None if page is None else self.render("version.html.j2", links, version=version, **page)

    def span(self, links: Links, span: int) -> str:
        return self.render("span.html.j2", links, **self.browser.span_page(span))

    def compare(self, links: Links, a: str, b: str) -> Optional[str]:
        page = self.browser.compare(a, b)
        return None if page is None else self.render("compare.html.j2", links, **page)

    def missing(self, links: Links, what: str) -> str:
        return self.render("missing.html.j2", links, what=what)


def _describe(spec: str) -> str:
    from cd4ml import mlmd

    return mlmd.describe(spec)


def create_app(browser: Browser):
    """The Flask app over one project home."""
    import flask

    app = flask.Flask("cd4ml.ui")
    pages = Pages(browser)

    def links() -> Links:
        return Links(flask.url_for)

    def page_or_404(html: Optional[str], what: str):
        return (html, 200) if html is not None else (pages.missing(links(), what), 404)

    @app.errorhandler(404)
    def not_found(_error):
        return pages.missing(links(), f"page {flask.request.path}"), 404

    @app.get("/")
    def home():
        return flask.redirect(flask.url_for("runs"))

    @app.get("/runs")
    def runs():
        args = flask.request.args
        return pages.runs(links(), args.get("status", ""), args.get("trigger", ""), args.get("q", ""))

    @app.get("/runs/<run_id>")
    def run(run_id):
        return page_or_404(pages.run(links(), run_id), f"run {run_id}")

    @app.get("/runs/<run_id>/report")
    def report(run_id):
        path = browser.report_path(run_id)
        if not SAFE.match(run_id) or not os.path.isfile(path):
            return pages.missing(links(), f"the report of run {run_id}"), 404
        return flask.send_file(path, mimetype="text/html")

    @app.get("/versions/<version>")
    def version(version):
        return page_or_404(pages.version(links(), version), f"version {version}")

    @app.get("/spans/<int:span>")
    def span(span):
        return pages.span(links(), span)

    @app.get("/compare")
    def compare():
        a, b = flask.request.args.get("a", ""), flask.request.args.get("b", "")
        return page_or_404(pages.compare(links(), a, b) if a and b else None, f"runs to compare ({a!r}, {b!r})")

    return app


def export(browser: Browser, directory: str, progress: Callable[[str], None] = print) -> Dict[str, int]:
    """Every page as static HTML under `directory` (links between them relative): the runs page as
    index.html, each run, its report, each pushed version, each span, and each run compared with
    the run before it."""
    import shutil

    pages, links = Pages(browser), Links()
    os.makedirs(directory, exist_ok=True)
    written = {"runs": 0, "versions": 0, "spans": 0, "compares": 0, "reports": 0}

    def write(name: str, html: Optional[str]):
        if html is not None:
            with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
                fh.write(html)

    write(links.runs(), pages.runs(links))
    rows = browser.runs()
    versions, span_numbers = set(), set()
    for row in rows:
        write(links.run(row.run_id), pages.run(links, row.run_id))
        written["runs"] += 1
        if os.path.isfile(browser.report_path(row.run_id)):
            shutil.copyfile(browser.report_path(row.run_id), os.path.join(directory, links.report(row.run_id)))
            written["reports"] += 1
        if row.pushed_version:
            versions.add(row.pushed_version)
        span_numbers.update(s for s in row.window if s is not None)
    for newer, older in browser.previous(rows).items():
        write(links.compare(older, newer), pages.compare(links, older, newer))
        written["compares"] += 1
    for v in sorted(versions):
        write(links.version(v), pages.version(links, v))
        written["versions"] += 1
    for s in sorted(span_numbers):
        write(links.span(s), pages.span(links, s))
        written["spans"] += 1
    progress(f"exported {sum(written.values()) + 1} pages to {directory}: " +
             ", ".join(f"{n} {k}" for k, n in written.items()))
    return written
