"""Show, check, rewrite or propose updates to the curated schema (components/schema/schema.pbtxt).

The schema is generated from components/features.py; --check fails when they disagree, --write
regenerates it, --propose compares it with what SchemaGen inferred in the latest run.
"""

HELP = "check, regenerate or propose updates to the curated schema"


def register(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if schema.pbtxt is out of date")
    group.add_argument("--write", action="store_true", help="regenerate schema.pbtxt from features.py")
    group.add_argument("--propose", action="store_true",
                       help="diff the curated schema against SchemaGen's inference of the latest run")
    parser.add_argument("--home", help="project home (for --propose)")


def main(args) -> int:
    from components import schema

    if args.write:
        print(f"wrote {schema.write()}")
        return 0
    if args.check:
        if schema.is_current():
            print(f"{schema.SCHEMA_PATH} matches components/features.py")
            return 0
        print(f"{schema.SCHEMA_PATH} is out of date: run `cd4ml schema --write`")
        return 1
    if args.propose:
        return _propose(args)
    print(schema.render(), end="")
    return 0


def _propose(args) -> int:
    import os

    from cd4ml import mlmd
    from cd4ml.contract import SCHEMA_FILE
    from cd4ml.commands.common import config_from
    from components import schema
    from tensorflow_metadata.proto.v0 import schema_pb2
    from google.protobuf import text_format

    config = config_from(args)
    store = mlmd.open_store(config.metadata_path)
    run_id = mlmd.latest_run_id(store)
    step = next((s for s in mlmd.run_steps(store, run_id or "") if s.node == "SchemaProposal"), None)
    if not step or not step.outputs.get("schema"):
        print("no SchemaGen output yet: run `cd4ml run` first")
        return 1
    with open(os.path.join(step.outputs["schema"][0].uri, SCHEMA_FILE)) as fh:
        inferred = text_format.Parse(fh.read(), schema_pb2.Schema())
    curated = {f.name: f for f in schema.build_schema().feature}
    changes = 0
    for f in inferred.feature:
        cur = curated.get(f.name)
        if cur is None:
            print(f"+ new column '{f.name}' ({schema_pb2.FeatureType.Name(f.type)}): add it to features.py")
            changes += 1
        elif cur.type != f.type:
            print(f"~ '{f.name}': curated {schema_pb2.FeatureType.Name(cur.type)}, "
                  f"data looks {schema_pb2.FeatureType.Name(f.type)}")
            changes += 1
    for name in sorted(set(curated) - {f.name for f in inferred.feature}):
        print(f"- column '{name}' is absent from the latest span")
        changes += 1
    print(f"{changes} proposed change(s) from run {run_id}")
    return 0
