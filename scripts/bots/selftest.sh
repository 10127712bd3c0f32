#!/usr/bin/env bash
# Build (or reuse) the bots' venvs and run the self-test of the bots (no voicebot1 needed).
#   scripts/bots/selftest.sh [--only twilio,asterisk,pipecat]
# WITH_PIPECAT=0 skips the Pipecat venv and test. Last line: "N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=$("$here/install.sh" reference | tail -1)
args=()
if [[ ${WITH_PIPECAT:-1} != 0 ]]; then
    pcpy=$("$here/install.sh" pipecat | tail -1)
    args+=(--pipecat-python "$pcpy")
else
    args+=(--only twilio,asterisk)
fi
exec "$py" "$here/selftest.py" "${args[@]}" "$@"
