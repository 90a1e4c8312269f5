#!/usr/bin/env bash
# Make (or refresh) one of the project's two virtual environments from its lock file.
#   scripts/setup_env.sh pipeline   -> .venv          (TFX, Beam, kfp, notebooks, tests)
#   scripts/setup_env.sh serving    -> .venv-serving  (Seldon v1 server image contents)
#   scripts/setup_env.sh v2         -> .venv-v2       (Open Inference Protocol server: MLServer)
# Idempotent: when the venv exists and was built from the same lock, it returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:?usage: scripts/setup_env.sh pipeline|serving|v2}
case "$kind" in
  pipeline) venv=.venv ;;
  serving)  venv=.venv-serving ;;
  v2)       venv=.venv-v2 ;;
  *) echo "setup_env: unknown environment '$kind' (pipeline, serving or v2)" >&2; exit 2 ;;
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

find_python310() {
  local c
  for c in "${CD4ML_PYTHON:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
           /root/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c=$(PYENV_VERSION=$(pyenv versions --bare | grep -E '^3\.10' | tail -n1) pyenv which python3.10 2>/dev/null || true)
    [ -n "$c" ] && "$c" -c 'import sys' >/dev/null 2>&1 && { echo "$c"; return 0; }
  fi
  return 1
}

py=$(find_python310) || {
  cat >&2 <<'MSG'
setup_env: no Python 3.10 interpreter found.
TFX 1.16 (the newest TFX that installs on glibc 2.36) needs Python >=3.9,<3.11. Install one, e.g.
  pyenv install 3.10.13        or        apt-get install python3.10 python3.10-venv
or point CD4ML_PYTHON at it, then rerun `make setup`.
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
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
compile_bytecode
echo "$want" > "$stamp"
echo "setup_env: $venv ready in $(( $(date +%s) - start )) s"
