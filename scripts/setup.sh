#!/usr/bin/env bash
# Creates .venv with evo_engine installed (editable, with MPICH from PyPI and the dev tools).
# Idempotent: does nothing when pyproject.toml has not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.evo_engine_setup"
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import evo_engine, mpi4py, torch, zarr" 2>/dev/null; then
    exit 0
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "evo_engine needs Python >= 3.10 (found $("$PY" --version 2>&1)); set PYTHON=python3.x" >&2
    exit 2
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
# torch first, pinned, and only if absent: a torch already in the venv (e.g. the CPU-only build
# from PyTorch's own index, which PyPI does not serve on Linux) is kept.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" install "torch==${TORCH_VERSION:-2.13.0}"
fi
# tensorboard, mlflow and pandas install in seconds, so their tests run in CI too (wandb's skip).
"${pip[@]}" install -e ".[dev,mpich,analysis,tensorboard,mlflow]"
echo "$want" > "$stamp"
