# The serving image: seldon-core's Python wrapper around serving.seldon_model.BikeDemandModel.
# REST on 9000, Prometheus metrics on 6000 (/prometheus). Its own lock: seldon-core 1.17.1 cannot
# share the pipeline environment (requirements/serving.in).
# Build from the repository root:  docker build -f docker/serving.Dockerfile -t IMAGE .
FROM python:3.10-slim

# No .pyc written at run time (read-only root filesystems); the site-packages are byte-compiled
# once at build instead, or every container start would recompile TensorFlow's sources (20-30 s).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/microservice \
    CD4ML_HOME=/var/lib/cd4ml \
    GUNICORN_WORKERS=1

# Non-root, the uid the Kubernetes manifests run as (runAsUser 8888).
RUN useradd --uid 8888 --create-home --home-dir /home/seldon seldon \
 && mkdir -p /var/lib/cd4ml && chown 8888 /var/lib/cd4ml

WORKDIR /microservice

COPY requirements/serving.lock requirements/serving.lock
RUN python -m pip install "pip==24.2" \
 && python -m pip install --no-deps -r requirements/serving.lock \
 && (python -m compileall -q -j 0 /usr/local/lib/python3.10/site-packages >/dev/null || true)

# The server needs the contract (names of a version's files, signatures, logs) but none of the
# command layer: only those two files of the cd4ml package go in.
COPY cd4ml/__init__.py cd4ml/contract.py cd4ml/logstore.py /microservice/cd4ml/
COPY components/ /microservice/components/
COPY scoring/ /microservice/scoring/
COPY serving/ /microservice/serving/
RUN python -c "import seldon_core, cd4ml.contract, components.features, serving.seldon_model"

USER 8888
EXPOSE 9000 6000
CMD ["seldon-core-microservice", "serving.seldon_model.BikeDemandModel", "--service-type", "MODEL"]
