#!/usr/bin/env bash
# Resident memory of the voicebot1 binary: idle (connected, no call), with 300 callers talking to
# the bot at once, and after they hung up; per call = (RSS with the calls - idle RSS) / calls.
# voicebot1 runs against the fake ARI of tests/support, so no Asterisk is needed.
#
#   scripts/bench-memory.sh [--calls 300] [--workers 8]
#
# The goal: < 10 MB idle, < 50 KB per call.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench memory --no-run
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --quiet --bench memory -- "$@"
