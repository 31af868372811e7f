#!/usr/bin/env bash
# Installs realgap and its dependencies into the current Python. Idempotent: a second run is quick.
# Torch: a CPU machine gets the CPU build (a plain `torch` requirement would pull a multi-GB CUDA build);
# a machine with an NVIDIA GPU gets the default build. Override with TORCH_SPEC="torch==X.Y.Z".
set -euo pipefail
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec=${TORCH_SPEC:-"torch>=2.2,<3"}
  else
    spec=${TORCH_SPEC:-"torch==2.13.0"}  # CPU wheel (served by the CPU index or a local wheel cache)
  fi
  echo "setup: installing $spec"
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q "$spec"
fi
extras=${REALGAP_EXTRAS:-dev,ray}
PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q -e ".[${extras}]"
# Headless Chromium for the review queue's browser test (tests/test_review_browser.py; skipped without it).
# Debian's packages: browsers cannot be downloaded by selenium or playwright here.
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver (apt-get)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } ||
      echo "setup: chromium not installed (apt-get failed); the browser test will be skipped" >&2
  else
    echo "setup: chromium/chromedriver missing and not root; the browser test will be skipped" >&2
  fi
fi
"$PY" -c "import realgap.envs, realgap.policies, realgap.evaluation" || { echo "setup: realgap failed to import" >&2; exit 1; }
echo "setup: ok ($("$PY" -c 'import torch, mujoco; print(f"torch {torch.__version__}, mujoco {mujoco.__version__}")'))"
