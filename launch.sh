#!/usr/bin/env bash
# sdui one-click launcher (Linux, macOS). First start: makes venv/ beside this script, installs the
# torch build for this machine and sdui, then starts the app. Later starts skip the install.
# Extra arguments go to the app:  ./launch.sh --listen --api
# Environment:
#   SDUI_TORCH_SPEC   torch requirement(s) (default: "torch==2.14.1 torchvision==0.29.1")
#   SDUI_TORCH_INDEX  pip index URL for torch (default: chosen for the hardware, see below)
#   PYTHON            the Python to build the venv with (default: python3, 3.10 or newer)
#   SDUI_NO_START=1   install only, do not start the app (the test script uses this)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PY="${PYTHON:-python3}"
VENV="$HERE/venv"
VPY="$VENV/bin/python"
TORCH_SPEC="${SDUI_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "sdui needs Python 3.10 or newer; '$PY' is $("$PY" --version 2>&1 || echo missing). Set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

has_nvidia() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
reachable() { "$VPY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/", timeout=5)
PYEOF
}

pick_torch_index() {
  # NVIDIA on Linux and Apple: the default index (CUDA builds / MPS builds). Linux without an
  # NVIDIA GPU: PyTorch's CPU index (a 200 MB build instead of several GB of CUDA libraries),
  # falling back to the default index where that one is unreachable.
  if [ -n "${SDUI_TORCH_INDEX:-}" ]; then echo "$SDUI_TORCH_INDEX"; return; fi
  if [ "$(uname -s)" = "Linux" ] && ! has_nvidia; then
    if reachable "$CPU_INDEX"; then echo "$CPU_INDEX"; return; fi
    echo "note: $CPU_INDEX is unreachable; using the default package index" >&2
  fi
  echo ""
}

if [ ! -x "$VPY" ]; then
  echo "Creating $VENV ..."
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.sdui-installed"
WANT="$( (cat pyproject.toml; echo "$TORCH_SPEC ${SDUI_TORCH_INDEX:-}") | "$VPY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  "$VPY" -m pip install --quiet --upgrade pip
  INDEX="$(pick_torch_index)"
  echo "Installing $TORCH_SPEC${INDEX:+ from $INDEX} ..."
  # shellcheck disable=SC2086
  if [ -n "$INDEX" ]; then
    "$VPY" -m pip install --timeout 30 --retries 1 --index-url "$INDEX" $TORCH_SPEC \
      || "$VPY" -m pip install $TORCH_SPEC
  else
    "$VPY" -m pip install $TORCH_SPEC
  fi
  # No CUDA GPU (and not an Apple GPU): the UNet runs on the CPU, where OpenVINO is about twice
  # PyTorch's speed (--backend auto uses it when installed), so sdui[openvino] comes along
  EXTRAS=""
  if ! has_nvidia && ! { [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" = "arm64" ]; }; then EXTRAS="[openvino]"; fi
  echo "Installing sdui$EXTRAS ..."
  "$VPY" -m pip install -e "$HERE$EXTRAS"
  echo "$WANT" > "$STAMP"
fi

# Every start: does this torch see the GPU this machine has? Say exactly how to repair it if not.
if has_nvidia; then
  if ! "$VPY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    TV="$("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
    echo "WARNING: this machine has an NVIDIA GPU but the installed torch ($TV) cannot use it." >&2
    echo "Repair:  $VPY -m pip install --force-reinstall $TORCH_SPEC --index-url https://download.pytorch.org/whl/cu128" >&2
    echo "(or update the NVIDIA driver: nvidia-smi shows its version). Continuing on the CPU." >&2
  fi
elif [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" = "arm64" ]; then
  if ! "$VPY" -c 'import sys, torch; sys.exit(0 if torch.backends.mps.is_available() else 1)' 2>/dev/null; then
    echo "WARNING: Apple GPU (MPS) not usable by this torch. Repair: $VPY -m pip install --force-reinstall $TORCH_SPEC" >&2
  fi
fi

if [ -n "${SDUI_NO_START:-}" ]; then
  exit 0
fi
# One malloc arena: generation runs on a worker thread, and glibc's per-thread arenas make it ~35%
# slower there (see sdui/models/devices.py). app.py would re-exec itself to set this anyway.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-1}"
exec "$VPY" "$HERE/app.py" "$@"
