"""The real pipeline end to end (LocalDagRunner, Beam, MLMD in SQLite) on a sample of both spans:
what it pushes, the lineage MLMD records, caching on a rerun, determinism, and bad data drops."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from cd4ml import mlmd
from cd4ml.mlmd.graph import Graph
from components import features
from pipelines import local_runner
from pipelines.config import PipelineConfig
from tests.conftest import sample_rows, write_rows

pytestmark = pytest.mark.slow


def _versions(registry):
    return sorted(os.listdir(registry)) if os.path.isdir(registry) else []


def test_both_spans_trained_blessed_and_pushed_as_complete_versions(trained_home):
    span1, span2 = trained_home.span1, trained_home.span2
    assert span1.new_push and span2.new_push
    assert span1.pushed_version != span2.pushed_version
    assert span1.blessed and span2.blessed
    for result, span in ((span1, 1), (span2, 2)):
        assert result.span == span
        version_dir = result.pushed_path
        for name in ("saved_model.pb", "schema.pbtxt", "evaluation.json", "holdout.jsonl", "MANIFEST.json"):
            assert os.path.exists(os.path.join(version_dir, name)), name
        manifest = json.load(open(os.path.join(version_dir, "MANIFEST.json")))
        assert manifest["span"] == span
        assert manifest["features"] == features.FEATURE_NAMES
        holdout = [json.loads(line) for line in open(os.path.join(version_dir, "holdout.jsonl"))]
        assert len(holdout) >= 20
        assert set(holdout[0]["features"]) == set(features.FEATURE_NAMES)
        overall = result.metrics["overall"]
        assert 0 < overall["mean_absolute_error"] < trained_home.config.mae_bound
        assert overall["example_count"] > 100
        for slice_feature in features.SLICES:
            assert any(name.startswith(slice_feature + "=") for name in result.metrics), slice_feature
        assert os.path.exists(os.path.join(result.run_dir, "summary.json"))
    # Span 2 was evaluated against the span-1 model (the baseline), so the change was measured.
    assert trained_home.span2.metrics


def test_lineage_pushed_model_back_to_the_span_files(trained_home):
    store = mlmd.open_store(trained_home.config.metadata_path)
    steps = {s.node: s for s in mlmd.run_steps(store, trained_home.span2.run_id)}
    pushed = steps["Pusher"].outputs["pushed_model"][0]
    assert mlmd.prop(pushed, "pushed_version") == trained_home.span2.pushed_version
    model = steps["Pusher"].inputs["model"][0]
    assert model.id == steps["Trainer"].outputs["model"][0].id
    graph = steps["Trainer"].inputs["transform_graph"][0]
    assert graph.id == steps["Transform"].outputs["transform_graph"][0].id
    assert "transformed_examples" not in steps["Transform"].outputs  # the Trainer transforms in TF
    # Transform and the Trainer read the training window: this run's span 2, and span 1 as span
    # 1's run ingested it, assembled by TrainingWindow (it names its sources; the graph follows).
    span1_steps = {s.node: s for s in mlmd.run_steps(store, trained_home.span1.run_id)}
    window = steps["TrainingWindow"].outputs["window"][0]
    for reader in ("Transform", "Trainer"):
        assert [a.id for a in steps[reader].inputs["examples"]] == [window.id], reader
    sources = Graph(store).window_sources(window)
    assert [(mlmd.prop(a, "span"), a.id) for a in sources] == [
        (2, steps["CsvExampleGen"].outputs["examples"][0].id),
        (1, span1_steps["CsvExampleGen"].outputs["examples"][0].id)]
    assert trained_home.span2.window == [2, 1] and trained_home.span1.window == [1]
    gen = steps["CsvExampleGen"].execution
    assert mlmd.prop(gen, "input_base") == trained_home.config.data_root
    # The baseline the Evaluator compared against is the version serving: span 1's push.
    baseline = steps["Evaluator"].inputs["baseline_model"]
    assert [mlmd.prop(b, "version") for b in baseline] == [trained_home.span1.pushed_version]
    assert [b.id for b in baseline] == [a.id for a in steps["ServingBaseline"].outputs["baseline"]]
    first = span1_steps["Evaluator"].inputs["baseline_model"][0]
    assert mlmd.prop(first, "has_baseline") == 0  # nothing served before span 1's run


def test_rerun_on_unchanged_data_and_code_is_cached_and_pushes_nothing(trained_home):
    before = _versions(trained_home.config.registry)
    rerun = local_runner.run(dataclasses.replace(trained_home.config, span=2), progress=lambda _: None)
    assert rerun.exit_code == local_runner.OK
    assert rerun.ran == [], rerun.steps
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(rerun.cached)
    assert not rerun.new_push
    assert rerun.pushed_version == trained_home.span2.pushed_version
    assert _versions(trained_home.config.registry) == before
    assert "every component came from the cache" in local_runner.format_summary(rerun)


def test_same_data_code_and_seed_give_the_same_metrics(tmp_path, sample_data_root, trained_home):
    config = PipelineConfig(**{**trained_home.config.as_dict(), "home": str(tmp_path), "span": 1,
                               "pipeline_root": "", "registry": "", "metadata_path": ""})
    again = local_runner.run(config, progress=lambda _: None)
    assert again.exit_code == local_runner.OK, local_runner.format_summary(again)
    # The model is bit-for-bit the same: identical predictions on the pushed holdout sample.
    def holdout(path):
        return [json.loads(line)["expected"] for line in open(os.path.join(path, "holdout.jsonl"))]
    assert holdout(again.pushed_path) == holdout(trained_home.span1.pushed_path)
    # TFMA's Beam combiners may sum in another order: metrics agree to float precision.
    assert again.metrics.keys() == trained_home.span1.metrics.keys()
    for name, values in trained_home.span1.metrics.items():
        assert again.metrics[name] == pytest.approx(values, rel=1e-6), name


def _bad_span(tmp_path, mutate, columns=None) -> str:
    rows = sample_rows(1, every=6)
    rows = mutate([dict(r) for r in rows])
    root = tmp_path / "bad-data"
    write_rows(str(root / "span-3" / "bikeshare.csv"), rows, columns)
    return str(root)


def _set(name, value, every=7):
    def mutate(rows):
        for i, r in enumerate(rows):
            if i % every == 0:
                r[name] = value
        return rows
    return mutate


BAD_CASES = {
    "string in a numeric column": (_set("temp", "warm"), None, "temp"),
    "unseen category": (_set("weathersit", "tornado"), None, "weathersit"),
    "out-of-range value": (_set("hum", "7.5"), None, "hum"),
    "missing required column": (lambda rows: rows, [c for c in features.RAW_COLUMNS if c != "windspeed"],
                                "windspeed"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_span_stops_before_training_and_keeps_the_served_model(case, tmp_path, trained_home):
    mutate, columns, feature = BAD_CASES[case]
    before = _versions(trained_home.config.registry)
    config = dataclasses.replace(trained_home.config, data_root=_bad_span(tmp_path, mutate, columns), span=None)
    result = local_runner.run(config, progress=lambda _: None)
    assert result.exit_code == local_runner.VALIDATION_FAILED, local_runner.format_summary(result)
    assert any(p["feature"] == feature or feature in p["description"] for p in result.problems), result.problems
    ran = {s["node"] for s in result.steps if s["state"] in ("ran", "cached")}
    assert not ran & {"Transform", "Trainer", "Evaluator", "Pusher"}
    assert _versions(trained_home.config.registry) == before
    report = open(os.path.join(result.run_dir, "validation_report.txt")).read()
    assert feature in report
    assert "nothing was trained or pushed" in local_runner.format_summary(result)


def test_empty_span_file_is_refused_naming_the_file(tmp_path, trained_home):
    root = tmp_path / "empty"
    (root / "span-1").mkdir(parents=True)
    (root / "span-1" / "bikeshare.csv").write_text("")
    config = dataclasses.replace(trained_home.config, data_root=str(root), span=None)
    result = local_runner.run(config, progress=lambda _: None)
    assert result.exit_code == local_runner.VALIDATION_FAILED
    assert "bikeshare.csv" in result.error and "empty" in result.error
    assert result.steps == []


def test_cli_run_exits_2_on_bad_data_and_prints_the_rule(tmp_path, trained_home, capsys):
    from cd4ml import cli

    root = _bad_span(tmp_path, _set("weathersit", "tornado"))
    code = cli.main(["run", "--home", trained_home.config.home, "--data-root", root])
    out = capsys.readouterr().out
    assert code == local_runner.VALIDATION_FAILED
    assert "validation failed" in out and "weathersit" in out
    assert "nothing was trained or pushed" in out


def test_schema_proposal_from_the_latest_run(trained_home, capsys):
    from cd4ml import cli

    assert cli.main(["schema", "--propose", "--home", trained_home.config.home]) == 0
    out = capsys.readouterr().out
    assert "proposed change(s) from run" in out


def test_a_model_over_the_bound_is_not_pushed_and_the_run_says_why(trained_home):
    """Last in this file: it adds a not-blessed evaluation of the span-2 model to the shared home."""
    before = _versions(trained_home.config.registry)
    strict = dataclasses.replace(trained_home.config, span=2, mae_bound=1.0)
    result = local_runner.run(strict, progress=lambda _: None)
    assert result.exit_code == local_runner.NOT_BLESSED, local_runner.format_summary(result)
    assert result.blessed is False and not result.new_push and not result.pushed_version
    assert "mean_absolute_error on overall" in result.blessing and "<= 1" in result.blessing
    assert "Trainer" in result.cached and "Evaluator" in result.ran  # only the judgement changed
    assert _versions(trained_home.config.registry) == before
    assert "no model pushed" in local_runner.format_summary(result)


def test_every_version_ships_a_model_card_read_back_field_by_field(trained_home, tmp_path, capsys):
    from cd4ml import cli, promotion
    from cd4ml.contract import MAE, MANIFEST, MODEL_CARD, MODEL_CARD_PAGE
    from components import model_card
    from tests.conftest import copy_version

    first, second = trained_home.span1, trained_home.span2
    card = model_card.read(second.pushed_path)
    with open(os.path.join(second.pushed_path, MANIFEST)) as fh:
        manifest = json.load(fh)
    assert MODEL_CARD in manifest["files"] and MODEL_CARD_PAGE in manifest["files"]
    details = card["model_details"]
    assert details["version"] == second.pushed_version and details["pipeline"] == trained_home.config.pipeline_name
    considerations = card["considerations"]
    assert considerations["purpose"] and considerations["not_for"] and considerations["limitations"]
    assert [s["span"] for s in card["data"]["window"]] == second.window == [2, 1]
    assert {s["source"] for s in card["data"]["window"]} == {"data drop"}
    assert [f["name"] for f in card["data"]["features"]] == features.FEATURE_NAMES
    assert next(f for f in card["data"]["features"] if f["name"] == "season")["domain"] == \
        list(features.feature("season").vocabulary)
    quant = card["quantitative_analysis"]
    assert quant["overall"][MAE] == pytest.approx(second.metrics["overall"][MAE])
    assert quant["baseline"]["version"] == first.pushed_version and quant["baseline"]["mae_change"] is not None
    assert quant["bounds"] == {"mae_bound": trained_home.config.mae_bound,
                               "mae_regression_tolerance": trained_home.config.mae_regression_tolerance}
    assert quant["blessed"] is True and set(quant["slices"]) >= {"hr=17", "season=3"}
    share = card["explainability"]["share"]
    assert set(share) == set(features.FEATURE_NAMES) and sum(share.values()) == pytest.approx(1.0)
    assert card["explainability"]["passed"] is True and card["explainability"]["baseline_share"]
    assert card["detectors"]["p_value"] == 0.05 and card["detectors"]["reference_rows"] > 0
    assert card["decisions"] == []
    # What making it used, added once the run ended: every execution that led to it, span 1's
    # ingestion in the first run included (pipelines/usage.py, mlmd lineage).
    from cd4ml import mlmd

    store = mlmd.open_store(trained_home.config.metadata_path)
    usage = mlmd.provenance(store, second.pushed_version)["summary"]["usage"]
    assert card["usage"] == dict(usage, run_id=second.run_id)
    assert usage["runs"] == sorted([first.run_id, second.run_id]) and usage["cpu_seconds"] > 0
    assert model_card.read(first.pushed_path)["quantitative_analysis"]["baseline"] is None  # nothing served before
    page = open(os.path.join(second.pushed_path, MODEL_CARD_PAGE)).read()
    assert second.pushed_version in page and "How it decides" in page and "<script" not in page

    # Decisions are appended as they happen: promote span 1's version in a copy of the registry.
    registry = str(tmp_path / "registry")
    for result in (first, second):
        copy_version(os.path.dirname(result.pushed_path), result.pushed_version, registry)
    promotion.promote(registry, first.pushed_version, reason="summer MAE looked off")
    promoted = model_card.read(os.path.join(registry, first.pushed_version))["decisions"]
    replaced = model_card.read(os.path.join(registry, second.pushed_version))["decisions"]
    assert [(d["action"], d["reason"]) for d in promoted] == [("promote", "summer MAE looked off")]
    assert [d["action"] for d in replaced] == [f"promote: {first.pushed_version} instead"]
    assert "summer MAE looked off" in open(os.path.join(registry, first.pushed_version, MODEL_CARD_PAGE)).read()

    assert cli.main(["models", "--registry", registry, "--card", first.pushed_version]) == 0
    out = capsys.readouterr().out
    assert f"version {first.pushed_version}" in out and "trained on spans 1" in out and "promote by" in out
    assert cli.main(["models", "--registry", registry, "--card", "404"]) == 1
