#!/usr/bin/env bash
# voicebot1's RTP echo against the smallest echo that does the same job (scripts/bench/echo.c,
# compiled here with gcc), on this machine, with the same packets:
# - ping-pong, one session: CPU per packet and round trip (median, p99), the echoes in turn;
# - load, 500 sessions at 50 packets/s on each echo at once: CPU%, CPU per packet, RSS, round trip.
# Rounds are repeated; ratios are taken within a round, then the median.
#
#   scripts/bench-echo.sh [--no-pin] [options of `cargo bench --bench echo -- --help`]
#
# The ping-pong runs on CPU 1 only (`--cpu 1`, see the bench's help) unless --no-pin. Needs gcc
# and taskset. The goal: a CPU ratio ≤ 1.05 and a round trip within 10 µs of the minimal echo's.
set -euo pipefail
cd "$(dirname "$0")/.."

pin=(--cpu 1)
args=()
for a in "$@"; do
    if [ "$a" = --no-pin ]; then pin=(); else args+=("$a"); fi
done

command -v gcc >/dev/null || { echo "bench-echo: gcc is needed (apt-get install gcc)" >&2; exit 1; }
work=$(mktemp -d /tmp/vb1-bench-echo.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/echo-min" scripts/bench/echo.c
cargo bench --quiet --bench echo --no-run

echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --quiet --bench echo -- --minimal "$work/echo-min" "${pin[@]}" "${args[@]}"
