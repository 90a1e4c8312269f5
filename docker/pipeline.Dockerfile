# The pipeline image: what every TFX component runs in on Kubeflow Pipelines / Vertex AI (and the
# Dataflow workers, via --sdk_container_image). It carries this repository at /pipeline, which
# PipelineConfig.source_dir (CD4ML_SOURCE_DIR) points the module files at.
# Build from the repository root:  docker build -f docker/pipeline.Dockerfile -t IMAGE .
# BASE: any image with Python 3.10 as `python` (and pip) on Debian 12 or alike; where no registry
# is reachable, `make kubeflow-image-check` builds one from Debian's packages
# (scripts/kubeflow_image_check.sh).
ARG BASE=python:3.10-slim
FROM ${BASE}

# No .pyc written at run time (read-only root filesystems); the site-packages are byte-compiled
# once at build instead, or every container start would recompile TensorFlow's sources (20-30 s).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CD4ML_SOURCE_DIR=/pipeline

WORKDIR /pipeline
# Set only for a build behind an intercepting proxy (scripts/kubeflow_image_check.sh): pip's CA file.
ARG PIP_CERT

# Dependencies first, so a code change does not reinstall 3 GB. The lock is complete and exact:
# --no-deps installs exactly it, as `make setup` does.
# pyfarmhash (Beam's) comes as source only: a C++ compiler for the install, removed after it.
COPY requirements/pipeline.lock requirements/pipeline.lock
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ \
 && python -m pip install "pip==24.2" \
 && python -m pip install --no-deps -r requirements/pipeline.lock \
 && apt-get purge -y -q g++ && apt-get autoremove -y -q && rm -rf /var/lib/apt/lists/* \
 && (python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
     >/dev/null || true)

COPY . /pipeline
RUN python -m pip install --no-deps --no-build-isolation -e /pipeline \
 && python -c "import tfx, components.features, pipelines.config, cd4ml.cli"

CMD ["cd4ml", "--help"]
