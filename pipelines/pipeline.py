"""The one pipeline factory: every runner (local, Kubeflow) builds its DAG here.

span files -> CsvExampleGen -> StatisticsGen -> ExampleValidator (against the curated schema from
ImportSchemaGen; SchemaGen proposes updates) -> DataValidationGate -> TrainingWindow (this
span and the trusted spans before it, components/window.py) -> Transform -> [Tuner with --tune,
else TunedHyperparameters: the latest tuned] -> Trainer -> ServingBaseline (the version serving
now) -> Evaluator -> ModelExplainer (importances and the explainability check, an infra
blessing) -> Pusher -> ReleaseBundle.
DetectorTrainer fits drift/outlier detectors on the new span's train split after the gate (what
production looks like now); ReleaseBundle ships them inside the pushed version.

One graph for every runner: no resolver (open-source KFP has no resolver executor) and nothing
that needs a driver or a lifecycle hook. What a run finds in the data root and the registry is
found by our components; the run parameters `serving_state` and `hyperparameters_state`
(computed by every runner from the registry before a run: pipelines/run_state.py) key the
caches of the two components that read the registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx.orchestration import data_types
# Each component from its own module, never `tfx.v1`: that imports all of TFX, 20 s more per run
# (components/lazy_tfx.py, installed by this package's __init__, does the same for tfx.components).
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.pusher.component import Pusher
from tfx.components.schema_gen.component import SchemaGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, range_config_pb2, trainer_pb2

from cd4ml.contract import EXAMPLE_SIGNATURE, MAE, PREDICTIONS, SCHEMA_FILE
from components import features, schema as curated_schema
from components import example_gen as grouped_csv
from components.baseline import ServingBaseline
from components.evaluator import Executor as EvaluatorWithoutEmptyBaseline
from components.pusher import Executor as UniqueVersionPusher
from components.detectors import DetectorTrainer
from components.explainer import ModelExplainer
from components.tuning import STATE_ROOT, TunedHyperparameters
from components.regression_metrics import RegressionErrors
from components.release import ReleaseBundle
from components.validation_gate import DataValidationGate
from components.window import TrainingWindow
from pipelines.config import REPO_ROOT, PipelineConfig
from pipelines.run_state import HYPERPARAMETERS_STATE, SERVING_STATE

SPAN_PATTERN = "span-{SPAN}/*.csv"
EXAMPLE_GEN = "CsvExampleGen"


def example_gen(config: PipelineConfig):
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="single_split", pattern=SPAN_PATTERN)])
    # Hash on the split group, not the row: all hours of a day (or a harvested request) fall in the
    # same split, so the eval split holds whole unseen days instead of neighbours of training hours.
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=config.eval_buckets - 1),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
        ],
        partition_feature_name=features.SPLIT_KEY))
    range_config = None
    if config.span is not None:
        range_config = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
            start_span_number=config.span, end_span_number=config.span))
    # CsvExampleGen's executor plus the split group (components/example_gen.py), under its usual id.
    return FileBasedExampleGen(
        input_base=config.data_root, input_config=input_config, output_config=output_config,
        range_config=range_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(grouped_csv.Executor)).with_id(EXAMPLE_GEN)


def _run_parameter(name: str) -> data_types.RuntimeParameter:
    # "" when a run is started without it (a run made by hand in a KFP UI): the components still
    # read the registry, but KFP's cache may then answer them (docs/loop.md).
    return data_types.RuntimeParameter(name=name, ptype=str, default="")


TUNER, TUNED = "Tuner", "TunedHyperparameters"
# The output each source of the Trainer's hyperparameters names them by.
HYPERPARAMETERS = {TUNER: "best_hyperparameters", TUNED: "hyperparameters"}


def hyperparameter_source(config: PipelineConfig, examples, transform, schema, training: dict):
    """Where the Trainer's hyperparameters come from: with `--tune`, TFX's Tuner searching
    `tune_trials` trials (components/model.py tuner_fn), which publishes what it found;
    otherwise the latest published tuning, or the configured defaults when there is none
    (components/tuning.py). The run summary says which."""
    if config.tune:
        # Imported only here: the Tuner component loads keras_tuner (3 s), which a plain run skips.
        from tfx.components.tuner.component import Tuner

        from components.publishing_tuner import Executor as PublishingTuner

        tuner = Tuner(
            **user_code(config, "tuner"),
            examples=examples,
            transform_graph=transform.outputs["transform_graph"],
            schema=schema,
            train_args=trainer_pb2.TrainArgs(),
            eval_args=trainer_pb2.EvalArgs(),
            custom_config=dict(training, trials=config.tune_trials, **{STATE_ROOT: config.registry}),
        ).with_id(TUNER)
        return with_executor(tuner, executor_spec.ExecutorClassSpec(PublishingTuner))
    return TunedHyperparameters(registry=config.registry,
                                hyperparameters_state=_run_parameter(HYPERPARAMETERS_STATE)).with_id(TUNED)


def with_executor(node, spec):
    """`node` running our subclass of its executor (for TFX components whose constructor takes no
    custom_executor_spec); the compiled job names that class, so every runner runs it."""
    node.executor_spec = spec
    return node


def curated_schema_file(config: PipelineConfig) -> str:
    """The schema file ImportSchemaGen reads, at a path that changes with its content.

    ImportSchemaGen's cache key is the file *path*: an edited schema at the same path would be
    served from cache. Locally we import a content-addressed copy; on a cluster the schema ships
    in the image, whose tag changes with every build. There the path is relative to the task's
    working directory, the repository inside the image (WORKDIR /pipeline), never a path of the
    machine that compiled the job.
    """
    if on_cluster(config):
        return os.path.relpath(curated_schema.SCHEMA_PATH, REPO_ROOT)
    with open(curated_schema.SCHEMA_PATH, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:12]
    target = os.path.join(config.pipeline_root, "curated-schema", digest, SCHEMA_FILE)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(curated_schema.SCHEMA_PATH, target)
    return target


def on_cluster(config: PipelineConfig) -> bool:
    return config.pipeline_root.startswith("gs://")


def user_code(config: PipelineConfig, which: str) -> dict:
    """How Transform/Trainer find our code.

    Locally: module files (TFX packages them as a wheel under the pipeline root). On a cluster the
    image carries this repository on its PYTHONPATH, so the components import the functions by
    name; compiling then needs no upload to the gs:// root.
    """
    if which == "transform":
        if on_cluster(config):
            return {"preprocessing_fn": "components.transform.preprocessing_fn"}
        return {"module_file": config.transform_module}
    if on_cluster(config):
        return {"tuner_fn" if which == "tuner" else "run_fn":
                "components.model.tuner_fn" if which == "tuner" else "components.model.run_fn"}
    return {"module_file": config.trainer_module}


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    # The bounds judge the overall MAE only: slices (one hour, one weather) are reported, but a
    # busy 17:00 slice with a high absolute error must not block an otherwise better model.
    # One metric for example count, MAE and RMSE (components/regression_metrics.py): the threshold
    # binds to its mean_absolute_error key, and TFMA reads each example once per slice, not thrice.
    errors = tfma.MetricConfig(
        class_name=RegressionErrors.__name__, module=RegressionErrors.__module__, config=f'"name": "{MAE}"',
        per_slice_thresholds=[tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(upper_bound={"value": config.mae_bound}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.LOWER_IS_BETTER,
                    absolute={"value": config.mae_regression_tolerance})))])
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=EXAMPLE_SIGNATURE, label_key=features.LABEL_KEY,
                                    prediction_key=PREDICTIONS)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[s]) for s in features.SLICES],
        metrics_specs=[tfma.MetricsSpec(metrics=[errors])],
    )


def create_components(config: PipelineConfig) -> List:
    """The pipeline's components: the same graph for the local runner and the Kubeflow job."""
    gen = example_gen(config)
    statistics = StatisticsGen(examples=gen.outputs["examples"])
    schema_import = ImportSchemaGen(schema_file=curated_schema_file(config))
    schema_proposal = SchemaGen(statistics=statistics.outputs["statistics"],
                                infer_feature_shape=True).with_id("SchemaProposal")
    validator = ExampleValidator(statistics=statistics.outputs["statistics"],
                                 schema=schema_import.outputs["schema"])
    gate = DataValidationGate(anomalies=validator.outputs["anomalies"],
                              schema=schema_import.outputs["schema"])
    schema = gate.outputs["validated_schema"]
    detectors = DetectorTrainer(examples=gen.outputs["examples"], schema=schema, seed=config.seed)
    window = TrainingWindow(examples=gen.outputs["examples"], schema=schema, registry=config.registry,
                            num_spans=config.train_window_spans)
    examples = window.outputs["window"]
    # StatisticsGen already profiled the raw span; Transform's own pre/post statistics would
    # double that work on every run for numbers nobody reads. A window of a few small spans is
    # analyzed in seconds, so no analyzer cache (one more artifact per span) is kept. Transform
    # only analyzes: the Trainer reads the raw window and applies the transform graph itself
    # (components/model.py _load), so no transformed copy of every split is written and reread.
    transform = Transform(examples=examples, schema=schema, disable_statistics=True, materialize=False,
                          disable_analyzer_cache=True, **user_code(config, "transform"))
    training = {"seed": config.seed, "epochs": config.epochs, "batch_size": config.batch_size,
                "max_steps_per_epoch": config.max_steps_per_epoch, "hidden_units": config.units}
    tuning = hyperparameter_source(config, examples, transform, schema, training)
    trainer = Trainer(
        **user_code(config, "trainer"),
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        hyperparameters=tuning.outputs[HYPERPARAMETERS[tuning.id]],
        train_args=trainer_pb2.TrainArgs(),
        eval_args=trainer_pb2.EvalArgs(),
        custom_config=training,
    )
    baseline = ServingBaseline(candidate=trainer.outputs["model"], registry=config.registry,
                               serving_state=_run_parameter(SERVING_STATE))
    evaluator = Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["baseline"],
        eval_config=eval_config(config),
    )
    with_executor(evaluator, executor_spec.BeamExecutorSpec(EvaluatorWithoutEmptyBaseline))
    explainer = ModelExplainer(
        model=trainer.outputs["model"],
        examples=gen.outputs["examples"],
        baseline_model=baseline.outputs["baseline"],
        rules=config.explainability_rules.to_json(),
    )
    pusher = Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        # The explainability check: TFX's Pusher refuses a model whose infra blessing is not blessed.
        infra_blessing=explainer.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.registry)),
        # Version names two concurrent runs cannot share (components/pusher.py).
        custom_executor_spec=executor_spec.ExecutorClassSpec(UniqueVersionPusher),
    )
    release = ReleaseBundle(
        pushed_model=pusher.outputs["pushed_model"],
        schema=schema,
        evaluation_result=evaluator.outputs["evaluation"],
        examples=gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline=baseline.outputs["baseline"],
        window=window.outputs["window"],
        detectors=detectors.outputs["detectors"],
        explanation=explainer.outputs["explanation"],
        pipeline_name=config.pipeline_name,
        promotion=config.promotion,
        rollout=config.rollout,
        mae_bound=config.mae_bound,
        mae_regression_tolerance=config.mae_regression_tolerance,
        data_root=config.data_root,
    )
    return [gen, statistics, schema_import, schema_proposal, validator, gate, detectors, window,
            tuning, transform, trainer, baseline, evaluator, explainer, pusher, release]


def create_pipeline(config: PipelineConfig,
                    metadata_connection_config: Optional[object] = None) -> Pipeline:
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
    )
