"""TrainingWindow: the examples a run trains on, this span and the trusted spans before it.

TFX ingests one span per ExampleGen execution and leaves windows to input resolution; open-source
KFP runs no resolver, and Kubeflow's compiler takes none of ours. So this component builds the
window itself, the same on every runner, from what it keeps beside the registry
(`<registry>/.pipeline/trusted-spans/`, contract.PIPELINE_STATE_DIR):

- it runs after the validation gate, so reaching it is what makes a span trusted: it records
  this span's examples there (a quarantined drop or harvest stops at the gate and never enters a
  later window);
- the window ends at this run's span, not at the highest span ever seen, so `cd4ml run --span 1`
  trains on span 1 and its predecessors even after span 2 exists;
- each span counts once, with its newest trusted examples.

The output is one Examples artifact holding the window's files (`Split-*/span-N-*`): Transform,
Trainer and Evaluator read one URI. Its `window` property lists the spans and the examples each
came from, which `cd4ml runs`, the lineage and the run browser follow back to the span files.
"""


import json
import os
from typing import Dict, List

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.components.util import examples_utils

from cd4ml.contract import PIPELINE_STATE_DIR, WINDOW_PROPERTY
from components.files import copy_tree, write_text

SPAN = "span"
TRUSTED_DIR = "trusted-spans"


def span_of(artifact: types.Artifact) -> int:
    text = artifact.get_string_custom_property(SPAN)  # older TFX wrote it as a string
    return int(text) if text else artifact.get_int_custom_property(SPAN)


def window_spans(current: int, available: List[int], num_spans: int) -> List[int]:
    """The spans of a window of `num_spans` ending at `current`, newest first."""
    return sorted((s for s in set(available) if current - num_spans < s <= current), reverse=True)


def trusted_dir(registry: str) -> str:
    return os.path.join(registry, PIPELINE_STATE_DIR, TRUSTED_DIR)


def trusted_spans(registry: str) -> Dict[int, str]:
    """{span: URI of its newest examples that passed the gate}."""
    import tensorflow as tf

    folder = trusted_dir(registry)
    found: Dict[int, str] = {}
    if not tf.io.gfile.isdir(folder):
        return found
    for name in tf.io.gfile.listdir(folder):
        if name.startswith("span-") and name.endswith(".json"):
            with tf.io.gfile.GFile(os.path.join(folder, name)) as fh:
                record = json.load(fh)
            found[int(record[SPAN])] = record["examples"]
    return found


@component
def TrainingWindow(
    examples: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],  # the gate's output: this span passed it
    window: OutputArtifact[standard_artifacts.Examples],
    registry: Parameter[str],
    num_spans: Parameter[int] = 2,
):
    del schema  # an input only so that the window waits for the gate
    if num_spans < 1:
        raise ValueError(f"num_spans: a window holds at least one span, got {num_spans}")
    current = span_of(examples)
    write_text(os.path.join(trusted_dir(registry), f"span-{current}.json"),
               json.dumps({SPAN: current, "examples": examples.uri}))
    sources = trusted_spans(registry)
    sources[current] = examples.uri
    chosen = [{SPAN: s, "examples": sources[s]} for s in window_spans(current, list(sources), num_spans)]
    splits = artifact_utils.decode_split_names(examples.split_names)
    import tensorflow as tf

    for entry in chosen:
        for split in splits:
            source = os.path.join(entry["examples"], f"Split-{split}")
            for name in tf.io.gfile.listdir(source):
                copy_tree(os.path.join(source, name),
                          os.path.join(window.uri, f"Split-{split}", f"span-{entry[SPAN]}-{name}"))
    examples_utils.set_payload_format(window, examples_utils.get_payload_format(examples))
    examples_utils.set_file_format(window, examples_utils.get_file_format(examples))
    window.split_names = examples.split_names
    window.span = current
    window.set_int_custom_property(SPAN, current)
    window.set_string_custom_property(WINDOW_PROPERTY, json.dumps(chosen))
