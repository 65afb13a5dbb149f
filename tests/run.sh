#!/usr/bin/env bash
# Install everything the tests need and run them:  bash tests/run.sh [pytest arguments]
# venv/ and torch come from launch.sh (same as users get), then the test extra, then Debian's
# chromium for the browser tests. Tests run offline (HF_HUB_OFFLINE=1) on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SDUI_NO_START=1 ./launch.sh
venv/bin/python -m pip install --quiet -e ".[test]"
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing Debian's chromium for the browser tests ..."
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1
exec venv/bin/python -m pytest "$@"
