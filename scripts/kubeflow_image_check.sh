#!/usr/bin/env bash
# make kubeflow-image-check: build the pipeline image and run the compiled Kubeflow job in it, task
# by task, each task in its own container (cd4ml submit --local --container), on span 1.
#
# Outside `make test`: the image's packages are about 3 GB. No image registry is reachable from
# this kind of machine, so the base image is built here: Debian 12 (debootstrap, from Debian's
# packages) plus the Python 3.10 that `make setup` uses (pyenv's build, copied in at the same path).
# Podman runs with runc and explicit ulimits (crun fails on hybrid cgroups; default ulimits fail
# with EPERM in this sandbox). Writes benchmarks/results/kubeflow-image.json (time, image size).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
BASE=${CD4ML_BASE_IMAGE:-localhost/cd4ml-base:bookworm-py310}
IMAGE=${CD4ML_CHECK_IMAGE:-localhost/cd4ml-pipeline:check}
WORK=${CD4ML_CHECK_DIR:-$(mktemp -d /tmp/cd4ml-image-check.XXXXXX)}
mkdir -p "$WORK"
say() { echo "kubeflow-image-check: $*"; }

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null
fi
podman_() { podman --runtime runc "$@"; }
# Containers may not raise a limit above this shell's hard limit (EPERM at container start).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 8192 ] && nproc=8192
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

# The Python 3.10 that .venv (make setup) was built from.
prefix=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')

if ! podman_ image exists "$BASE"; then
  say "building the base image $BASE: Debian 12 from Debian's packages + Python 3.10 from $prefix"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase \
    --include=ca-certificates,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libnsl2,libtirpc3,libexpat1,libgssapi-krb5-2,libgomp1 \
    bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  mkdir -p "$rootfs$prefix"
  cp -a "$prefix/." "$rootfs$prefix/"
  for name in python python3 python3.10 pip pip3; do
    target=$prefix/bin/$name; [ -e "$rootfs$target" ] || target=$prefix/bin/python3.10
    ln -sf "$target" "$rootfs/usr/local/bin/$name"
  done
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman_ import --change 'CMD ["python3"]' \
    --change "ENV PATH=$prefix/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" - "$BASE" >/dev/null
  rm -rf "$rootfs"
  podman_ run --rm --network none "${limits[@]}" "$BASE" \
    python -c 'import ssl, sqlite3, ctypes, lzma, bz2, sys; print("base:", sys.version.split()[0])'
fi

# A machine whose HTTPS goes through an intercepting proxy trusts its CA through pip's `cert`
# setting: the build gets that file for its pip steps (a mount and a build argument: not kept in the image).
trust=()
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$cert" ] && [ -f "$cert" ]; then
  trust=(--volume "$cert:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

say "building $IMAGE from docker/pipeline.Dockerfile (pip from PyPI during the build)"
build_start=$(date +%s)
podman_ build --network host "${limits[@]}" "${trust[@]}" \
  --build-arg "BASE=$BASE" -f docker/pipeline.Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; exit 1; }
build_seconds=$(( $(date +%s) - build_start ))
size=$(podman_ image inspect --format '{{.Size}}' "$IMAGE")
say "image $IMAGE: $((size / 1000000)) MB, built in ${build_seconds} s"

# The job, compiled for that image, run with each task in its own container.
gcs="$WORK/gcs"
mkdir -p "$gcs/cd4ml-check/data"
cp -r data/bikeshare/span-1 "$gcs/cd4ml-check/data/"
export CD4ML_HOME="$WORK/home" CD4ML_PIPELINE_ROOT=gs://cd4ml-check/root CD4ML_DATA_ROOT=gs://cd4ml-check/data \
       CD4ML_REGISTRY=gs://cd4ml-check/registry CD4ML_IMAGE="$IMAGE"
.venv/bin/cd4ml compile -o "$WORK/pipeline.json" >/dev/null
run_start=$(date +%s)
.venv/bin/cd4ml submit "$WORK/pipeline.json" --local --backend oss --gcs-dir "$gcs" --container "$IMAGE" \
  | tee "$WORK/run.txt"
run_seconds=$(( $(date +%s) - run_start ))
grep -q "succeeded" "$WORK/run.txt"
version=$(ls "$gcs/cd4ml-check/registry" | grep -E '^[0-9]+$' | head -1)
[ -f "$gcs/cd4ml-check/registry/$version/MANIFEST.json" ] || { say "no complete version was pushed"; exit 1; }

total=$(( $(date +%s) - started ))
mkdir -p benchmarks/results
cat > benchmarks/results/kubeflow-image.json <<JSON
{
  "image": "$IMAGE",
  "base": "$BASE",
  "image_bytes": $size,
  "build_seconds": $build_seconds,
  "job_in_containers_seconds": $run_seconds,
  "total_seconds": $total,
  "pushed_version": "$version",
  "tasks": 16,
  "measured": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
say "passed in ${total} s: image $((size / 1000000)) MB (build ${build_seconds} s), the job in containers ${run_seconds} s, pushed version $version"
