#!/usr/bin/env bash
# Make (or refresh) one of the project's two virtual environments from its lock file.
#   scripts/setup_env.sh pipeline   -> .venv          (TFX, Beam, kfp, notebooks, tests)
#   scripts/setup_env.sh serving    -> .venv-serving  (Seldon v1 server image contents)
#   scripts/setup_env.sh v2         -> .venv-v2       (Open Inference Protocol server: MLServer)
#   scripts/setup_env.sh kserve-client -> .venv-kserve (KServe's Python client, for the tests only)
# Idempotent: when the venv exists and was built from the same lock, it returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:?usage: scripts/setup_env.sh pipeline|serving|v2|kserve-client}
case "$kind" in
  pipeline) venv=.venv ;;
  serving)  venv=.venv-serving ;;
  v2)       venv=.venv-v2 ;;
  kserve-client) venv=.venv-kserve ;;
  *) echo "setup_env: unknown environment '$kind' (pipeline, serving, v2 or kserve-client)" >&2; exit 2 ;;
esac
lock=requirements/$kind.lock
[ -f "$lock" ] || { echo "setup_env: $lock is missing" >&2; exit 2; }
stamp=$venv/.cd4ml-stamp
want=$(cat "$lock" setup.py | sha256sum | cut -d' ' -f1)

# Byte-compile site-packages once. Machines that export PYTHONDONTWRITEBYTECODE=1 (this one does)
# get no .pyc from pip and never write one at import: every `cd4ml run` then recompiled ~28,000
# TFX/TF/Beam sources, 20-30 s per process. py_compile writes regardless of that variable, and
# Python still reads .pyc files when it is set.
compile_bytecode() {
  local site
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "setup_env: byte-compiling $site"
  "$venv/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true  # a few py2-only test files fail
  date +%s > "$venv/.cd4ml-bytecode"
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  [ -f "$venv/.cd4ml-bytecode" ] || compile_bytecode
  exit 0
fi

# The pipeline (and the Seldon v1 image, whose seldon-core 1.17 pins what TFX's TF needs) stays on
# Python 3.10 for TFX 1.16; the V2 server, which faces the network, runs on 3.12 (docs/stack.md).
case "$kind" in
  v2|kserve-client) want_py=3.12 ;;
  *)  want_py=3.10 ;;
esac

find_python() {
  local c v=$1
  for c in "${CD4ML_PYTHON:-}" "python$v" "$HOME"/.pyenv/versions/$v*/bin/python$v \
           /root/.pyenv/versions/$v*/bin/python$v /usr/local/bin/python$v /usr/bin/python$v; do
    [ -n "$c" ] || continue
    if "$c" -c "import sys, venv; assert '%d.%d' % sys.version_info[:2] == '$v'" >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c=$(PYENV_VERSION=$(pyenv versions --bare | grep -E "^${v//./\\.}" | tail -n1) pyenv which "python$v" 2>/dev/null || true)
    [ -n "$c" ] && "$c" -c 'import sys' >/dev/null 2>&1 && { echo "$c"; return 0; }
  fi
  return 1
}

py=$(find_python "$want_py") || {
  cat >&2 <<MSG
setup_env: no Python $want_py interpreter found for $venv.
The pipeline needs 3.10 (TFX 1.16, the newest TFX that installs on glibc 2.36, needs >=3.9,<3.11);
the V2 server runs on 3.12. Install it, e.g.
  pyenv install $want_py        or        apt-get install python$want_py python$want_py-venv
or point CD4ML_PYTHON at it, then rerun \`make setup\` / \`make serving-setup\`.
MSG
  exit 3
}

echo "setup_env: building $venv ($kind) with $py from $lock"
start=$(date +%s)
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip==24.2"
# The lock is complete and exact: no resolution, nothing newer slips in.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$lock"
if [ "$kind" != kserve-client ]; then  # a client of the servers: it runs none of our code
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi
compile_bytecode
echo "$want" > "$stamp"
echo "setup_env: $venv ready in $(( $(date +%s) - start )) s"
