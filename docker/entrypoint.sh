#!/bin/sh
# Fetches the weights into $DYSTREAM_MODEL__CHECKPOINTS_DIR unless they are mounted there already (download-files
# skips files that are present), then runs the command. Nothing to fetch for random weights, or for an agent whose
# avatar runs in a remote avatar worker.
set -eu

needs_weights=true
if [ "${DYSTREAM_AVATAR__RANDOM_WEIGHTS:-false}" = "true" ]; then
    needs_weights=false
fi
if [ "$*" = "python -m agent start" ] && [ "${DYSTREAM_AVATAR__MODE:-in-process}" = "remote" ]; then
    needs_weights=false
fi
if [ "$needs_weights" = "true" ]; then
    python -m agent download-files
fi
exec "$@"
