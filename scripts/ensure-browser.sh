#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (never a browser downloaded by a test tool).
set -euo pipefail
if [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-browser: install Debian's chromium package (sudo apt-get install chromium)" >&2
  exit 1
fi
echo "ensure-browser: installing Debian's chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
