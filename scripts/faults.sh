#!/usr/bin/env bash
# faults.sh -- a load run with a fault in the middle, then proof that voicebot1 recovered:
#
#   scripts/faults.sh restart [--calls N] [--rate R] [--hold MIN-MAX] [--at S]
#       Asterisk is restarted ("core restart now") S seconds into the load run. voicebot1 must
#       stay up, reconnect, and take the calls of a second, fault-free run (failed=0); at the end
#       Asterisk holds no channel or bridge and voicebot1's pool is full.
#   scripts/faults.sh kill [...]
#       voicebot1 is killed with SIGKILL S seconds into the load run and started again at once.
#       The new instance's start-up sweep must leave Asterisk clean; a second run must pass.
#   scripts/faults.sh restart-voicebot1 [--signal kill|term] [--random] [--calls N] [--rate R]
#                                       [--hold MIN-MAX] [--at S]
#       An upgrade or a crash under load: callers (default 100 at 5/s, each holding 40 s) talk to
#       the bot or to the destination when voicebot1 is stopped (SIGTERM: a handover stop; SIGKILL:
#       a crash) at S seconds (default 25) and started again at once. Judged: NO caller hung up
#       before its own hold time ("hung up by the far side: 0"), failed=0, nothing left in
#       Asterisk, the new instance adopted the calls and exits 0. --random: hold 1-40 s and the
#       restart at a random second between 5 and 30.
#   scripts/faults.sh overload [--calls N] [--rate R] [--hold MIN-MAX]
#       More callers than the box carries: default 900 at 30/s holding 1-15 s (Asterisk saturates
#       between 20 and 30/s here). voicebot1 must shed what the box cannot carry (callers rejected
#       with congestion, each within 1 s), and converge: once the load is gone nothing is left in
#       Asterisk, a second run at 10/s passes (failed=0), voicebot1 exits 0 on SIGTERM with its pool
#       full. Prints the outcome of every call, the rejection times and Asterisk's and voicebot1's
#       CPU during the run. SIP failures of callers Asterisk itself could not answer in time are
#       reported, not judged: they happen before the call reaches voicebot1.
#
# Calls caught by the fault itself may fail (Asterisk drops them, or no Stasis app is there to
# take them): the first run's figures are reported, not judged. What is judged: voicebot1 still
# (or again) running, the second run's "failed=0 leaked_channels=0 leaked_bridges=0", a clean
# SIGTERM exit with the pool full, and nothing left in Asterisk.
# Needs the sandbox up and target/release/voicebot1 built (in $CARGO_TARGET_DIR when set). Last line: "fault=... result=ok|FAILED".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

fault="${1:-}"; shift || true
case "$fault" in
    restart|kill) calls=200 rate=10 hold="1-20" at=8 ;;
    restart-voicebot1) calls=100 rate=5 hold="40-40" at=25 ;;
    overload) calls=900 rate=30 hold="1-15" at=0 ;;
    *) die "usage: faults.sh restart|kill|restart-voicebot1|overload [--signal kill|term] [--random] [--calls N] [--rate R] [--hold MIN-MAX] [--at S]" ;;
esac
signal=term random=0
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="${2:?}"; shift 2 ;;
        --rate) rate="${2:?}"; shift 2 ;;
        --hold) hold="${2:?}"; shift 2 ;;
        --at) at="${2:?}"; shift 2 ;;
        --signal) signal="${2:?}"; shift 2 ;;
        --random) random=1; shift ;;
        *) die "unknown option $1" ;;
    esac
done
case "$signal" in kill|term) ;; *) die "--signal expects kill or term" ;; esac
if [ "$random" = 1 ]; then
    hold="1-40"
    at=$((5 + RANDOM % 26))
fi
[[ "$at" =~ ^[0-9]+$ ]] || die "--at expects whole seconds"
require_root
bin="$VB1_TARGET_DIR/release/voicebot1"
[ -x "$bin" ] || die "$bin not built (cargo build --release)"
ari GET /asterisk/info >/dev/null 2>&1 || die "the sandbox is not up (scripts/asterisk-sandbox.sh up)"

work="$(mktemp -d /tmp/vb1-faults.XXXXXX)"
config="$(voicebot1_config "$work")"
bot_pid="" load_pid=""
cleanup() {
    [ -z "$load_pid" ] || { kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; }
    [ -z "$bot_pid" ] || stop_helper "$bot_pid" 10
}
trap cleanup EXIT

start_bot() {  # start_bot LOGNAME
    start_helper voicebot1 "$work/$1" "$bin" "$config"
    bot_pid=$HELPER_PID
    wait_voicebot1_registered "$bot_pid" 60 || { tail -n 30 "$work/$1" >&2; die "voicebot1 did not register its Stasis app"; }
}

verdict=ok
fail() { echo "FAILED: $*" >&2; verdict=FAILED; }

# restart-voicebot1: one load run with the restart in it, judged as a whole.
restart_voicebot1() {
    local out="$work/load.out" line far rc=0 adopted
    start_bot voicebot1.log
    log "restart-voicebot1: $calls calls at $rate/s holding ${hold}s; voicebot1 gets SIG${signal^^} at ${at}s and is started again"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest answer --drain-timeout 60 >"$out" 2>&1 &
    load_pid=$!
    sleep "$at"
    local t0=$SECONDS
    if [ "$signal" = kill ]; then
        kill -KILL "$bot_pid"; wait "$bot_pid" 2>/dev/null || true
        rm -f "$VB1_HELPER_DIR"/*."$bot_pid".pid
    else
        term_and_wait "$bot_pid" 60
        [ "$TERM_RC" = 0 ] || fail "the stopped voicebot1 exited $TERM_RC after SIGTERM"
    fi
    bot_pid=""
    start_bot voicebot1-after.log
    log "voicebot1 back after $((SECONDS - t0)) s"
    wait "$load_pid" || rc=$?
    load_pid=""
    line="$(tail -n 1 "$out")"
    far="$(sed -n 's/^hung up by the far side: \([0-9]*\)$/\1/p' "$out" | tail -n1)"
    log "load run: $line; callers hung up by the far side before their hold time: ${far:-?}"
    [ "$rc" = 0 ] || fail "load run: $line"
    [ "${far:-x}" = 0 ] || fail "${far:-?} callers were hung up before their hold time"
    adopted="$(grep -o 'sweep: [0-9]* calls adopted' "$work/voicebot1-after.log" | head -n1)"
    term_and_wait "$bot_pid" 15
    bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    echo "--- voicebot1 timeline around the restart ---"
    grep -hE 'stop requested|drained|drain time|handed over|shutdown complete' "$work/voicebot1.log" | grep -v 'call .*: handed over' | cut -c1-200 | tail -n 5 || true
    echo "handed over by the stopped instance: $(grep -c ': handed over to the next voicebot1' "$work/voicebot1.log" || true)"
    echo "$adopted (new instance)"
    echo "load: $line"
    echo "fault=restart-voicebot1 signal=$signal at=${at}s hold=${hold}s far_side_hangups=${far:-?} result=$verdict"
    rm -rf "$work"
    [ "$verdict" = ok ]
}
# CPU seconds (user + system) a process has used so far, from /proc.
cpu_s() {  # cpu_s PID
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# overload: more callers than the box carries; voicebot1 sheds, then converges.
overload() {
    local out="$work/load.out" line rc=0 ast_pid t0 ast0 bot0 ast1 bot1 secs
    start_bot voicebot1.log
    ast_pid="$(cat "$VB1_RUN_DIR/asterisk.pid" 2>/dev/null || true)"
    [ -n "$ast_pid" ] && kill -0 "$ast_pid" 2>/dev/null || die "no Asterisk pid in $VB1_RUN_DIR/asterisk.pid"
    log "overload: $calls calls at $rate/s holding ${hold}s"
    t0=$SECONDS ast0="$(cpu_s "$ast_pid")" bot0="$(cpu_s "$bot_pid")"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest answer --drain-timeout 120 \
        >"$out" 2>&1 || rc=$?
    secs=$((SECONDS - t0)) ast1="$(cpu_s "$ast_pid")" bot1="$(cpu_s "$bot_pid")"
    line="$(tail -n 1 "$out")"
    log "load run: $line"
    grep -E '^(callers|destination|drained|not drained|hung up by)' "$out" || true
    kill -0 "$bot_pid" 2>/dev/null || fail "voicebot1 is not running after the overload"
    case "$line" in *" leaked_channels=0 leaked_bridges=0") ;; *) fail "Asterisk not clean after the overload: $line" ;; esac
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls 40 --rate 10 --hold 1-10 --dest answer >"$work/second.out" 2>&1 || true
    local second; second="$(tail -n 1 "$work/second.out")"
    log "second run (load gone): $second"
    case "$second" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "second run: $second" ;; esac
    term_and_wait "$bot_pid" 30
    bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    local blog="$work/voicebot1.log" rejected slow pool
    pool="$(grep -o 'pool [0-9]*/[0-9]* free' "$blog" | tail -n 1)"
    [ -n "$pool" ] && [ "$(echo "$pool" | awk -F'[ /]' '{print ($2 == $3)}')" = 1 ] || fail "pool not full at shutdown: ${pool:-no line}"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    rejected="$(grep -c 'rejected with congestion in' "$blog" || true)"
    echo "--- voicebot1 during the overload ---"
    echo "calls taken: $(grep -c ': inbound from' "$blog" || true); ended: $(grep -c ': ended (' "$blog" || true); rejected with congestion: $rejected"
    echo "not taken, by reason: $(grep 'not taken (' "$blog" | grep -v 'totals:' | grep -oE 'admission\.[a-z_]+|went unanswered' | sort | uniq -c | sort -rn | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')"
    grep -o 'rejected with congestion in [0-9]* ms' "$blog" | awk '{print $5}' | sort -n >"$work/reject.ms" || true
    if [ -s "$work/reject.ms" ]; then
        echo "time to reject: median $(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$work/reject.ms") ms, p99 $(awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; print a[i]}' "$work/reject.ms") ms, max $(tail -n 1 "$work/reject.ms") ms"
        slow="$(awk '$1 >= 1000' "$work/reject.ms" | wc -l)"
        [ "$slow" = 0 ] || fail "$slow rejections took 1 s or more"
    fi
    echo "set-up failures: $(grep -c 'failed: \|set-up timed out' "$blog" || true); janitor: $(grep -c '^.*janitor: ' "$blog" || true) lines; $(grep -o 'totals: .*' "$blog" | tail -n 1)"
    awk -v a="$(awk -v x="$ast1" -v y="$ast0" 'BEGIN{print x-y}')" -v b="$(awk -v x="$bot1" -v y="$bot0" 'BEGIN{print x-y}')" -v s="$secs" \
        'BEGIN { printf "CPU over %d s (of 200%% on 2 cores): Asterisk %.0f%% (%.1f s), voicebot1 %.1f%% (%.1f s)\n", s, 100*a/s, a, 100*b/s, b }'
    echo "load: $line"
    echo "second: $second"
    echo "fault=overload calls=$calls rate=$rate hold=${hold}s rejected=$rejected result=$verdict"
    rm -rf "$work"
    [ "$verdict" = ok ]
}
if [ "$fault" = overload ]; then
    overload
    exit $?
fi

if [ "$fault" = restart-voicebot1 ]; then
    restart_voicebot1
    exit $?
fi

start_bot voicebot1.log
log "$fault: load run of $calls calls at $rate/s, fault at ${at}s"
"$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest answer --drain-timeout 60 \
    >"$work/first.out" 2>&1 &
load_pid=$!
sleep "$at"
case "$fault" in
    restart)
        log "restarting Asterisk (core restart now)"
        "$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" cli "core restart now" >/dev/null 2>&1 || true
        ;;
    kill)
        log "SIGKILL voicebot1 (pid $bot_pid) and start it again"
        kill -KILL "$bot_pid"; wait "$bot_pid" 2>/dev/null || true
        rm -f "$VB1_HELPER_DIR"/*."$bot_pid".pid
        start_bot voicebot1-after-kill.log
        ;;
esac
wait "$load_pid" || true
load_pid=""
first="$(tail -n 1 "$work/first.out")"
log "first run (with the fault): $first"

kill -0 "$bot_pid" 2>/dev/null || fail "voicebot1 is not running after the fault"
# Asterisk may still be booting after a restart; the second run starts once ARI answers.
for _ in $(seq 1 60); do ari GET /asterisk/info >/dev/null 2>&1 && break; sleep 1; done
wait_voicebot1_registered "$bot_pid" 60 || fail "voicebot1 did not re-register its Stasis app"
"$VB1_SCRIPTS_DIR/loadtest.sh" --calls 40 --rate 10 --hold 1-10 --dest answer >"$work/second.out" 2>&1 || true
second="$(tail -n 1 "$work/second.out")"
log "second run (after the fault): $second"
case "$second" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "second run: $second" ;; esac

term_and_wait "$bot_pid" 15
bot_pid=""
[ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
bot_log="$work/voicebot1.log"; [ "$fault" = kill ] && bot_log="$work/voicebot1-after-kill.log"
pool="$(grep -o 'pool [0-9]*/[0-9]* free' "$bot_log" | tail -n 1)"
[ -n "$pool" ] && [ "$(echo "$pool" | awk -F'[ /]' '{print ($2 == $3)}')" = 1 ] || fail "pool not full at shutdown: ${pool:-no line}"
"$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"

echo "--- voicebot1 timeline around the fault ---"
for f in "$work/voicebot1.log" "$work/voicebot1-after-kill.log"; do
    [ -f "$f" ] || continue
    echo "$(basename "$f"):"
    grep -hE 'ARI:|sweep: [0-9]|janitor: [0-9]|vanished|totals|shutdown complete' "$f" | cut -c1-200 | tail -n 12
done
echo "first:  $first"
echo "second: $second"
echo "voicebot1: ${pool:-?} at shutdown, exit $TERM_RC"
echo "fault=$fault result=$verdict"
rm -rf "$work"
[ "$verdict" = ok ]
