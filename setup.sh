#!/usr/bin/env bash
# Sets up this checkout on a fresh machine: .venv with hrnet-flax installed (editable).
# With --test, also the test references: timm/PyTorch in .venv and PaddleClas in .venv-paddle.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet .venv/bin/pip install -q -e .
if [ "${1:-}" = "--test" ]; then
  quiet .venv/bin/pip install -q -r requirements-test.txt
  [ -x .venv-paddle/bin/python ] || "$PY" -m venv .venv-paddle
  quiet .venv-paddle/bin/pip install -q -r requirements-paddle.txt
  quiet .venv-paddle/bin/pip install -q --no-deps paddleclas
fi
echo "setup.sh: ready (.venv${1:+ and .venv-paddle})"
