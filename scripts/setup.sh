#!/usr/bin/env bash
# Creates .venv with evo_engine installed (editable, with MPICH from PyPI and the dev tools).
# Idempotent: does nothing when pyproject.toml has not changed since the last successful run.
# The packages are installed by uv when it can be had (on PATH, or `pip install uv` into the
# venv: about 10x faster than pip), else by pip (EVO_ENGINE_SETUP_PIP=1 forces pip); both
# install the same set. torch is always installed by pip (see below).
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
# torch first, pinned, and only if absent, by pip: a torch already in the venv (e.g. the
# CPU-only build from PyTorch's own index, which PyPI does not serve on Linux) is kept, and
# pip honours this machine's own pip configuration (a local wheel, a version cap) where uv
# would fetch a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" install "torch==${TORCH_VERSION:-2.13.0}"
fi
# tensorboard, mlflow and pandas install in seconds, so their tests run in CI too (wandb's skip).
extras=".[dev,mpich,analysis,tensorboard,mlflow]"
uv=$(command -v uv || true)
if [ -z "${EVO_ENGINE_SETUP_PIP:-}" ] && [ -z "$uv" ] && "${pip[@]}" install uv 2>/dev/null; then
    uv="$VENV/bin/uv"
fi
# --compile-bytecode: pip writes .pyc files at install time and uv does not by default; without
# them every process (each test's subprocess) compiles numpy, zarr, scipy... again where
# PYTHONDONTWRITEBYTECODE is set.
if [ -n "${EVO_ENGINE_SETUP_PIP:-}" ] || [ -z "$uv" ] \
        || ! "$uv" pip install -q --python "$VENV/bin/python" --compile-bytecode -e "$extras"; then
    "${pip[@]}" install --upgrade pip >/dev/null
    "${pip[@]}" install -e "$extras"
fi
echo "$want" > "$stamp"
