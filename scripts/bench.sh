#!/usr/bin/env bash
# bench.sh -- the figures a report needs, in one table, against the sandbox Asterisk 22:
#
#   scripts/bench.sh [--bin PATH] [--quick] [--no-echo]
#
#   set-up median/p99 at 10 and 20 calls/s  caller's StasisStart to the media channel's
#                                           ChannelEnteredBridge, both Asterisk's own event
#                                           timestamps (read from voicebot1's trace log)
#   REST requests per call                  per outcome: caller hangs up with the bot,
#                                           transferred and talked, destination busy
#   CPU ms per call                         voicebot1's and Asterisk's (/proc utime+stime) over
#                                           a 20 calls/s run at the info log level
#   RSS idle / peak                         voicebot1's VmRSS before the load, VmHWM after it
#   echo                                    scripts/bench-echo.sh's ratio and round trips (when
#                                           the script exists; --no-echo skips it)
#
# --bin runs another voicebot1 binary (e.g. an older build, for a before/after in the same
# conditions); its configuration is written here with keys every version knows.
# --quick: fewer calls (for trying the script, not for a report).
# Brings the sandbox up when it is down. Machines are noisy: compare figures of one run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

bin="$VB1_TARGET_DIR/release/voicebot1" quick=0 echo_bench=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="${2:?}"; shift 2 ;;
        --quick) quick=1; shift ;;
        --no-echo) echo_bench=0; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
require_root
ensure_host_packages
[ -x "$bin" ] || die "$bin not built (cargo build --release)"
command -v python3 >/dev/null || die "python3 is needed to read the event timestamps"
if ! ari GET /asterisk/info >/dev/null 2>&1; then
    "$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" up --asterisk 22 >&2
fi
ast_pid="$(cat "$VB1_RUN_DIR/asterisk.pid" 2>/dev/null || true)"
[ -n "$ast_pid" ] && kill -0 "$ast_pid" 2>/dev/null || die "no Asterisk pid in $VB1_RUN_DIR/asterisk.pid"
ast_version="$(ari GET /asterisk/info | python3 -c 'import json,sys; print(json.load(sys.stdin)["system"]["version"].split("+")[0])')"

work="$(mktemp -d /tmp/vb1-bench.XXXXXX)"
bot_pid=""
cleanup() { [ -z "$bot_pid" ] || stop_helper "$bot_pid" 10; rm -rf "$work"; }
trap cleanup EXIT

scale() { if [ "$quick" = 1 ]; then echo $(( $1 / 5 )); else echo "$1"; fi; }

# bench_config LEVEL: a configuration every voicebot1 version reads.
bench_config() {
    cat >"$work/bench.toml" <<EOF
[ari]
url = "http://127.0.0.1:$VB1_ARI_PORT"
username = "$VB1_ARI_USER"
password = "$VB1_ARI_PASS"
app = "voicebot1"

[media]
port_min = 26500
port_max = 26999

[transfer]
endpoint = "PJSIP/4438007@AVAYA-endpoint"

[service]
workers = 8
log_level = "$1"
EOF
    echo "$work/bench.toml"
}

status_kb() {  # status_kb PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

start_bot() {  # start_bot LEVEL LOG
    ! ari GET /applications/voicebot1 >/dev/null 2>&1 \
        || die "the Stasis app voicebot1 is registered already: another voicebot1 is using the sandbox (its figures would be taken for this one's)"
    start_helper voicebot1 "$2" "$bin" "$(bench_config "$1")"
    bot_pid=$HELPER_PID
    wait_voicebot1_registered "$bot_pid" 30 || { tail -n 20 "$2" >&2; die "voicebot1 did not register its Stasis app"; }
}
stop_bot() {
    term_and_wait "$bot_pid" 30
    bot_pid=""
    [ "$TERM_RC" = 0 ] || die "voicebot1 exited $TERM_RC after SIGTERM"
}

load() {  # load ARGS...: loadtest.sh, which must pass
    local out="$work/load.out"
    "$VB1_SCRIPTS_DIR/loadtest.sh" "$@" >"$out" 2>&1 || { tail -n 15 "$out" >&2; die "load run failed: loadtest.sh $*"; }
    tail -n 1 "$out"
}

# REST requests per call from a debug log: request lines naming a call id, over the calls.
requests_per_call() {  # requests_per_call LOG
    python3 - "$1" <<'PY'
import re, sys
calls, requests = set(), 0
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"\] call (\d+\.\d+): inbound from", line)
    if m:
        calls.add(m.group(1))
    if re.search(r"\] ARI (GET|POST|PUT|DELETE) \S+ \[", line) and re.search(r"\d+\.\d+", line.split("] ARI ", 1)[1]):
        requests += 1
print(f"{requests / len(calls):.1f}" if calls else "-")
PY
}

log "bench: $("$bin" --version) against Asterisk $ast_version; $(nproc) cores"

# 1. Set-up latency at 10 and 20 calls/s (trace log: every event with Asterisk's timestamp).
declare -A setup
for rate in 10 20; do
    n=$(scale $((rate * 30)))
    start_bot trace "$work/trace-$rate.log"
    log "set-up at $rate calls/s: $(load --calls "$n" --rate "$rate" --hold 1-15 --dest answer)"
    stop_bot
    setup[$rate]="$(setup_from_events "$work/trace-$rate.log")"
done

# 2. REST requests per call, by outcome (debug log).
declare -A req
for outcome in bot talked busy; do
    n=$(scale 50)
    start_bot debug "$work/req-$outcome.log"
    case "$outcome" in
        bot) args=(--hold 2-4 --dest answer) ;;          # the bot phase is 7 s: they leave before
        talked) args=(--hold 10-12 --dest answer) ;;     # transferred at 7 s, talk, hang up
        busy) args=(--hold 12-12 --dest busy) ;;         # the destination is busy
    esac
    log "requests ($outcome): $(load --calls "$n" --rate 10 "${args[@]}")"
    stop_bot
    req[$outcome]="$(requests_per_call "$work/req-$outcome.log")"
done

# 3. CPU per call and memory (info log, as in production).
n=$(scale 600)
start_bot info "$work/cpu.log"
sleep 2
rss_idle="$(status_kb "$bot_pid" VmRSS)"
ast0="$(cpu_ms "$ast_pid")" bot0="$(cpu_ms "$bot_pid")"
log "CPU at 20 calls/s: $(load --calls "$n" --rate 20 --hold 1-15 --dest answer)"
ast1="$(cpu_ms "$ast_pid")" bot1="$(cpu_ms "$bot_pid")"
rss_peak="$(status_kb "$bot_pid" VmHWM)"
stop_bot

# 4. The echo against a minimal echo loop.
echo_line="- (scripts/bench-echo.sh not run)"
if [ "$echo_bench" = 1 ] && [ -x "$VB1_SCRIPTS_DIR/bench-echo.sh" ]; then
    "$VB1_SCRIPTS_DIR/bench-echo.sh" >"$work/echo.out" 2>&1 || { tail -n 20 "$work/echo.out" >&2; die "bench-echo.sh failed"; }
    echo_line="$(grep -E '^summary:' "$work/echo.out" | tail -n 1 | sed 's/^summary: //')"
    [ -n "$echo_line" ] || echo_line="$(tail -n 1 "$work/echo.out")"
fi

read -r m10 p10 n10 <<<"${setup[10]}"
read -r m20 p20 n20 <<<"${setup[20]}"
cat <<EOF

voicebot1 bench: $("$bin" --version), Asterisk $ast_version, $(nproc) cores, $(date -u +%Y-%m-%d)
| figure | value |
| --- | --- |
| set-up at 10 calls/s (StasisStart -> media in bridge, Asterisk timestamps) | median $m10 ms, p99 $p10 ms ($n10 calls) |
| set-up at 20 calls/s | median $m20 ms, p99 $p20 ms ($n20 calls) |
| REST requests per call: caller hangs up with the bot | ${req[bot]} |
| REST requests per call: transferred and talked | ${req[talked]} |
| REST requests per call: destination busy | ${req[busy]} |
| voicebot1 CPU per call (20 calls/s, $n calls) | $(( (bot1 - bot0) * 1000 / n / 1000 )).$(( (bot1 - bot0) * 1000 / n % 1000 / 100 )) ms |
| Asterisk CPU per call (same run) | $(( (ast1 - ast0) / n )) ms |
| voicebot1 RSS idle / peak | $((rss_idle / 1024)).$((rss_idle % 1024 * 10 / 1024)) MB / $((rss_peak / 1024)).$((rss_peak % 1024 * 10 / 1024)) MB |
| echo vs a minimal echo loop | $echo_line |
EOF
