# The Open Inference Protocol (V2) serving image: MLServer with our runtime
# (serving.mlserver_runtime.BikeDemandRuntime), what KServe and Seldon Core v2 run
# (k8s/kserve/, k8s/seldon-v2/). HTTP on 8080, gRPC on 8081, Prometheus metrics on 8082 (/metrics):
# MLServer's defaults, which both platforms expect. Its own lock: MLServer needs protobuf 5, which
# the pipeline's TF 2.16 cannot share (requirements/v2.in). Python 3.12: the server faces the network,
# and 3.10 is past its end of life; only the pipeline image stays on 3.10, for TFX (docs/stack.md).
# Build from the repository root:  docker build -f docker/serving-v2.Dockerfile -t IMAGE .
FROM python:3.12-slim

# No .pyc written at run time (read-only root filesystems); the site-packages are byte-compiled
# once at build instead, or every container start would recompile TensorFlow's sources (20-30 s).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/microservice \
    CD4ML_HOME=/var/lib/cd4ml

# Non-root, the uid the Kubernetes manifests run as (runAsUser 8888).
RUN useradd --uid 8888 --create-home --home-dir /home/mlserver mlserver \
 && mkdir -p /var/lib/cd4ml && chown 8888 /var/lib/cd4ml

WORKDIR /microservice

COPY requirements/v2.lock requirements/v2.lock
RUN python -m pip install "pip==24.2" \
 && python -m pip install --no-deps -r requirements/v2.lock \
 && (python -m compileall -q -j 0 /usr/local/lib/python3.12/site-packages >/dev/null || true)

# The server needs the contract but none of the command layer: only those two files of cd4ml go in.
COPY cd4ml/__init__.py cd4ml/contract.py cd4ml/logstore.py /microservice/cd4ml/
COPY components/ /microservice/components/
COPY scoring/ /microservice/scoring/
COPY serving/ /microservice/serving/
COPY docker/mlserver/ /microservice/mlserver/
RUN python -c "import mlserver, cd4ml.contract, components.features, scoring.detector_core, serving.mlserver_runtime, serving.v2_server"

USER 8888
EXPOSE 8080 8081 8082
# MLServer with the protocol's binary tensor extension and error format (serving/v2_server.py).
CMD ["python", "-m", "serving.v2_server", "start", "/microservice/mlserver"]
