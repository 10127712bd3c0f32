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
#   scripts/faults.sh restart-voicebot1 [--signal kill|term] [--random] [--busy] [--calls N]
#                                       [--rate R] [--hold MIN-MAX] [--at S]
#       An upgrade or a crash under load: callers (default 100 at 5/s, each holding 40 s) talk to
#       the bot or to the destination when voicebot1 is stopped (SIGTERM: a handover stop; SIGKILL:
#       a crash) at S seconds (default 25) and started again at once. Judged: NO caller hung up
#       before its own hold time ("hung up by the far side: 0"), failed=0, nothing left in
#       Asterisk, the new instance adopted the calls and exits 0. --random: hold 1-40 s and the
#       restart at a random second between 5 and 30. --busy: Asterisk busy meanwhile — 200
#       callers at 20/s (a rate the box barely carries), each holding 40 s, the stop at 12 s:
#       callers not taken (admission, the door) are reported apart from callers dropped, and
#       none may be dropped (taken, then hung up by voicebot1).
#   scripts/faults.sh bot-kill [--calls N] [--rate R] [--hold MIN-MAX] [--at S]
#       The bot dies under load: callers (default 100 at 10/s, each holding 40 s) talk to a
#       WebSocket bot (the twilio reference bot of scripts/bots/reference/) when its process is
#       SIGKILLed at S seconds (default 15: every caller is with the bot). Judged: every caller who
#       was with the bot is sent to the destination (the bot's on_failure, "transfer") and none is
#       hung up before its own hold time, failed=0, nothing left in Asterisk, a clean SIGTERM.
#   scripts/faults.sh hiccup [--calls N] [--rate R] [--at S]
#       Asterisk frozen (SIGSTOP) for 1.5 s at S seconds (default 20) of a load of 10 calls/s for
#       60 s, then resumed. Judged: no caller rejected (by voicebot1, or at Asterisk's door) later
#       than 5 s after Asterisk resumed, failed=0, nothing left. Callers who arrived meanwhile wait
#       and are taken once Asterisk answers normally again.
#   scripts/faults.sh neighbour [--calls N] [--rate R] [--at S]
#       The same load with a CPU hog taking one core for 10 s from S seconds. Judged: no caller
#       rejected 5 s after the hog stopped, failed=0, nothing left.
#   scripts/faults.sh slow-hangup [--calls N] [--rate R]
#       voicebot1 talks to ARI through a proxy (scripts/lib/hold_proxy.py) that holds one channel
#       hang-up in five for 3 s, Asterisk itself healthy; 200 callers at 10/s, after the same run
#       without the proxy. Judged: no caller rejected, and the calls' set-up p99 no worse than
#       twice (or 20 ms more than) the run without the proxy.
#   scripts/faults.sh overload [--rates "10 20 …"] [--hold MIN-MAX]
#       More callers than the box carries. First the saturation rate: 30 s at each rate (default
#       10, 20 … 80 calls/s, holding 1-15 s) until Asterisk's busiest 5 s pass 85 % of the machine,
#       voicebot1 sheds over 1 % of the callers, or a call fails. Then 1.5 times that rate for
#       30 s: every call must be served (bot, then transfer) or given its fast outcome (rejected
#       with congestion: p99 under 1 s, and none waiting 1 s in voicebot1 before its hang-up is
#       sent; a saturated Asterisk's own answer to a hang-up can pass 1 s, printed): failed=0; 60 s after the last call Asterisk holds nothing; a
#       plain run then passes; SIGTERM exits 0 with the pool full. Prints served and shed counts,
#       the served calls' set-up median/p99, rejection times, and Asterisk's and voicebot1's CPU.
#       Then 3 times the saturation rate for 30 s: REST p99 at most 1 s, no request timed out,
#       callers served per second at least 80 % of the rate the box carried (the highest step
#       before the saturation rate).
#   scripts/faults.sh reject-cost [--calls N] [--rate R]
#       What a caller not taken costs Asterisk, both ways, at the same offered load (default 400
#       callers at 20/s): refused at the door (the dialplan's check of VOICEBOT1_FULL_UNTIL before
#       Answer(): SIP 503) against answered, in Stasis and hung up by voicebot1 over REST
#       (admission.max_calls = 1 and the door turned off). Prints Asterisk's CPU per caller each
#       way and the ratio. Judged: every caller got its outcome, nothing left in Asterisk.
#
# Every fault takes --flow pjsip|local: the destination voicebot1 transfers to. pjsip (default):
# the SIPp destination behind PJSIP/4438007@AVAYA-endpoint, whose media Asterisk bridges natively.
# local: Local/602@from-callers, a tone played in the dialplan and relayed frame by frame (as
# Local channels, IVRs and music on hold are), which costs Asterisk four to five times the CPU a
# call; no SIPp destination runs. And --hog PCT: a CPU hog beside Asterisk for the whole run,
# taking PCT % of one core (busy PCT ms of every 100 ms), as a slower box would be.
#
# Calls caught by the fault itself may fail (Asterisk drops them, or no Stasis app is there to
# take them): the first run's figures are reported, not judged. What is judged: voicebot1 still
# (or again) running, the second run's "failed=0 leaked_channels=0 leaked_bridges=0", a clean
# SIGTERM exit with the pool full, and nothing left in Asterisk.
# Needs the sandbox up and target/release/voicebot1 built (in $CARGO_TARGET_DIR when set). Last line: "fault=... result=ok|FAILED".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# voicebot1's log line for one caller not taken (not the "totals: … not taken (overload)" line).
NOT_TAKEN='\] call [^ ]+: .*not taken \('

fault="${1:-}"; shift || true
case "$fault" in
    restart|kill) calls=200 rate=10 hold="1-20" at=8 ;;
    restart-voicebot1) calls=100 rate=5 hold="40-40" at=25 ;;
    bot-kill) calls=100 rate=10 hold="40-40" at=15 ;;
    hiccup|neighbour) calls=600 rate=10 hold="1-15" at=20 ;;
    slow-hangup) calls=200 rate=10 hold="1-15" at=0 ;;
    overload) calls=0 rate=0 hold="1-15" at=0 ;;
    reject-cost) calls=400 rate=20 hold="1-2" at=0 ;;
    *) die "usage: faults.sh restart|kill|restart-voicebot1|bot-kill|hiccup|neighbour|slow-hangup|overload|reject-cost [--signal kill|term] [--random] [--flow pjsip|local] [--hog PCT] [--calls N] [--rate R] [--hold MIN-MAX] [--at S]" ;;
esac
signal=term random=0 busy=0 flow=pjsip hog_pct=0 probe_rates="10 20 30 40 50 60 70 80"
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) probe_rates="${2:?}"; shift 2 ;;
        --calls) calls="${2:?}"; shift 2 ;;
        --rate) rate="${2:?}"; shift 2 ;;
        --hold) hold="${2:?}"; shift 2 ;;
        --at) at="${2:?}"; shift 2 ;;
        --signal) signal="${2:?}"; shift 2 ;;
        --random) random=1; shift ;;
        --flow) flow="${2:?}"; shift 2 ;;
        --hog) hog_pct="${2:?}"; shift 2 ;;
        --busy) busy=1; calls=200 rate=20 hold="40-40" at=12; shift ;;
        *) die "unknown option $1" ;;
    esac
done
case "$signal" in kill|term) ;; *) die "--signal expects kill or term" ;; esac
case "$flow" in pjsip) dest=answer ;; local) dest=none ;; *) die "--flow expects pjsip or local" ;; esac
[[ "$hog_pct" =~ ^[0-9]+$ ]] && [ "$hog_pct" -le 100 ] || die "--hog expects a share of one core, 0-100"
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
# The flow's voicebot1.toml: FILE as it is (pjsip), or with the transfer to Local/602 (local).
flow_config() {  # flow_config FILE
    [ "$flow" = local ] || { echo "$1"; return; }
    local out; out="$work/$(basename "${1%.toml}")-local.toml"
    sed 's#^endpoint = "PJSIP/4438007@AVAYA-endpoint"$#endpoint = "Local/602@from-callers"#' "$1" >"$out"
    grep -q '^endpoint = "Local/602@from-callers"$' "$out" || die "no [transfer] endpoint line to change in $1"
    echo "$out"
}
config="$(flow_config "$(voicebot1_config "$work")")"
[ "$flow" = pjsip ] || log "flow: voicebot1 transfers to Local/602@from-callers (a tone relayed frame by frame); no SIPp destination"
bot_pid="" load_pid=""
ws_bot_pid="" hog_pid=""
cleanup() {
    [ -z "$hog_pid" ] || { kill "$hog_pid" 2>/dev/null || true; wait "$hog_pid" 2>/dev/null || true; }
    [ -z "$load_pid" ] || { kill "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true; }
    [ -z "$bot_pid" ] || stop_helper "$bot_pid" 10
    [ -z "$ws_bot_pid" ] || stop_helper "$ws_bot_pid" 5
}
trap cleanup EXIT
if [ "$hog_pct" -gt 0 ]; then
    python3 -c '
import sys, time
busy = int(sys.argv[1]) / 1000.0
while True:
    t = time.monotonic()
    while time.monotonic() - t < busy:
        pass
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))' "$hog_pct" &
    hog_pid=$!
    log "a CPU hog beside Asterisk for the whole run: $hog_pct % of one core"
fi
# The run's logs are removed at the end, unless VB1_KEEP_LOGS=1.
clean_work() {
    if [ "${VB1_KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $work"; else rm -rf "$work"; fi
}

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
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 60 >"$out" 2>&1 &
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
    # A caller not taken (rejected after the answer) is hung up by the far side too: that is
    # admission's doing, reported apart. Dropped: taken, then hung up early.
    local rejected refused dropped
    rejected="$(cat "$work/voicebot1.log" "$work/voicebot1-after.log" 2>/dev/null | grep -c 'rejected with congestion in' || true)"
    refused="$(sed -n "s/^refused at Asterisk's door: //p" "$out" | tail -n1)"
    dropped=$(( ${far:-0} - rejected ))
    log "load run: $line; callers not taken: $rejected rejected, ${refused:-0} refused at the door; callers dropped (taken, then hung up early): $dropped"
    [ "$rc" = 0 ] || fail "load run: $line"
    [ -n "$far" ] || fail "no count of the callers hung up by the far side"
    [ "$dropped" -le 0 ] || fail "$dropped callers were taken and then hung up before their hold time"
    adopted="$(grep -o 'sweep: [0-9]* calls adopted' "$work/voicebot1-after.log" | head -n1 || true)"
    term_and_wait "$bot_pid" 15
    bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    echo "--- voicebot1 timeline around the restart ---"
    grep -hE 'stop requested|drained|drain time|handed over|shutdown complete' "$work/voicebot1.log" | grep -v 'call .*: handed over' | cut -c1-200 | tail -n 5 || true
    echo "handed over by the stopped instance: $(grep -c ': handed over to the next voicebot1' "$work/voicebot1.log" || true)"
    echo "$adopted (new instance)"
    echo "load: $line"
    echo "fault=restart-voicebot1 signal=$signal busy=$busy at=${at}s hold=${hold}s not_taken=$rejected door_refused=${refused:-0} dropped=$dropped result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}
# bot-kill: the WebSocket bot SIGKILLed under load; every caller with it goes to the destination.
bot_kill() {
    local out="$work/load.out" line far rc=0 with_bot lost transferred before at_kill
    start_reference_bot twilio 8790 "$work/bot.jsonl"
    ws_bot_pid=$HELPER_PID
    config="$(flow_config "$(voicebot1_bot_config "$work" ref "ws://127.0.0.1:8790/" "max_s = 120")")"
    start_bot voicebot1.log
    log "bot-kill: $calls calls at $rate/s holding ${hold}s with bot ref; the bot gets SIGKILL at ${at}s"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 60 >"$out" 2>&1 &
    load_pid=$!
    sleep "$at"
    with_bot="$(grep -c 'caller and media bridged' "$work/voicebot1.log" || true)"
    at_kill="$(wc -l <"$work/voicebot1.log")"
    log "SIGKILL the bot (pid $ws_bot_pid) with $with_bot callers bridged with it so far"
    kill -KILL "$ws_bot_pid"; wait "$ws_bot_pid" 2>/dev/null || true
    rm -f "$VB1_HELPER_DIR"/*."$ws_bot_pid".pid
    ws_bot_pid=""
    wait "$load_pid" || rc=$?
    load_pid=""
    line="$(tail -n 1 "$out")"
    far="$(sed -n 's/^hung up by the far side: \([0-9]*\)$/\1/p' "$out" | tail -n1)"
    # The bot's end (lost, or closed) sends the caller on: "bot ref …: transferring".
    before="$(head -n "$at_kill" "$work/voicebot1.log" | grep -c 'bot ref .*: transferring$' || true)"
    lost="$(tail -n "+$((at_kill + 1))" "$work/voicebot1.log" | grep -c 'bot ref .*: transferring$' || true)"
    transferred="$(grep -c 'caller and destination bridged' "$work/voicebot1.log" || true)"
    log "load run: $line; callers hung up by the far side before their hold time: ${far:-?}"
    log "callers the dead bot sent on: $lost (and $before whose bot failed before the kill); caller and destination bridged: $transferred (of $calls)"
    [ "$rc" = 0 ] || fail "load run: $line"
    [ "${far:-x}" = 0 ] || fail "${far:-?} callers were hung up before their hold time"
    [ "$((lost + before))" = "$calls" ] || fail "$lost + $before of $calls callers were sent on by the bot's end"
    [ "$transferred" = "$calls" ] || fail "$transferred of $calls callers reached the destination"
    term_and_wait "$bot_pid" 15
    bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    grep -m 3 'bot ref .*transferring' "$work/voicebot1.log" | cut -c1-200 || true
    echo "load: $line"
    echo "fault=bot-kill at=${at}s callers_with_the_bot=$with_bot sent_on_by_the_kill=$lost bot_failed_before=$before bridged_with_destination=$transferred far_side_hangups=${far:-?} result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}

# Seconds since midnight (UTC) now, and of a voicebot1 log line's timestamp, to compare them.
now_s() { date -u +%H:%M:%S.%N | awk -F: '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }'; }
log_s() { awk '{ t = substr($1, 12, 12); split(t, a, ":"); printf "%.3f %s\n", a[1] * 3600 + a[2] * 60 + a[3], $0 }'; }

# The voicebot1 log lines of callers not taken (rejected, or refused at the door) after second T.
rejections_after() {  # rejections_after LOG T
    log_s <"$1" | awk -v t="$2" '$1 > t && ($0 ~ /\] call [^ ]+: .*not taken \(/ || $0 ~ /refuses new callers at its door/)' | cut -d' ' -f2- | cut -c1-220
}

# hiccup, neighbour: a load of 10 calls/s for 60 s with a fault S seconds in; no caller may be
# turned away 5 s after the fault is over.
disturbance() {
    local out="$work/load.out" line rc=0 t_end late ast_pid hog="" waited not_taken refused
    ast_pid="$(cat "$VB1_RUN_DIR/asterisk.pid" 2>/dev/null || true)"
    [ -n "$ast_pid" ] && kill -0 "$ast_pid" 2>/dev/null || die "no Asterisk pid in $VB1_RUN_DIR/asterisk.pid"
    start_bot voicebot1.log
    local ast0 bot0 t0=$SECONDS; ast0="$(cpu_ms "$ast_pid")" bot0="$(cpu_ms "$bot_pid")"
    log "$fault: $calls calls at $rate/s holding ${hold}s; the fault at ${at}s"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 60 >"$out" 2>&1 &
    load_pid=$!
    sleep "$at"
    if [ "$fault" = hiccup ]; then
        log "freezing Asterisk (SIGSTOP, pid $ast_pid) for 1.5 s"
        kill -STOP "$ast_pid"; sleep 1.5; kill -CONT "$ast_pid"
        log "Asterisk resumed"
    else
        log "a CPU hog on one core for 10 s"
        timeout 10 bash -c 'while :; do :; done' & hog=$!
        wait "$hog" 2>/dev/null || true
        log "the hog stopped"
    fi
    t_end="$(now_s)"
    wait "$load_pid" || rc=$?
    load_pid=""
    line="$(tail -n 1 "$out")"
    local secs=$((SECONDS - t0)) ast1 bot1; ast1="$(cpu_ms "$ast_pid")" bot1="$(cpu_ms "$bot_pid")"
    term_and_wait "$bot_pid" 30; bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    late="$(rejections_after "$work/voicebot1.log" "$(awk -v t="$t_end" 'BEGIN { printf "%.3f", t + 5 }')")"
    not_taken="$(grep -cE "$NOT_TAKEN" "$work/voicebot1.log" || true)"
    refused="$(sed -n "s/^refused at Asterisk's door: //p" "$out" | tail -n1)"
    waited="$(grep -c 'taken after waiting' "$work/voicebot1.log" || true)"
    echo "--- $fault: the admission timeline ---"
    grep -E 'admission: ' "$work/voicebot1.log" | cut -c12-23,31- | cut -c1-230 | head -n 20 || true
    echo "load: $line"
    echo "callers taken after waiting: $waited; not taken by voicebot1: $not_taken; refused at Asterisk's door: ${refused:-0}"
    { grep -o 'taken after waiting [0-9]* ms' "$work/voicebot1.log" || true; } | awk '{print $4}' | sort -n \
        | awk '{a[NR]=$1} END { if (NR) printf "waited: median %d ms, max %d ms\n", a[int((NR+1)/2)], a[NR] }'
    awk -v a="$((ast1 - ast0))" -v b="$((bot1 - bot0))" -v s="$secs" -v n="$calls" \
        'BEGIN { printf "CPU over %d s (%% of one core): Asterisk %.1f %% (%.1f ms per call), voicebot1 %.1f %% (%.1f ms per call)\n", s, a/s/10, a/n, b/s/10, b/n }'
    [ "$rc" = 0 ] || fail "load run: $line"
    if [ -n "$late" ]; then
        fail "callers turned away later than 5 s after the fault was over:"
        echo "$late" | head -n 5
    fi
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    echo "fault=$fault at=${at}s not_taken=$not_taken door_refused=${refused:-0} waited=$waited late_rejections=$(printf '%s' "$late" | grep -c . || true) result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}

# The calls' set-up times (ms) in a voicebot1 log, sorted.
setups() { { grep -o 'bridged in [0-9]* ms' "$1" || true; } | awk '{print $3}' | sort -n; }
p99() { awk '{a[NR]=$1} END { if (NR) print a[int(NR*0.99+0.999)]; else print 0 }'; }

# slow-hangup: the same run without and with a proxy that holds one channel hang-up in five.
slow_hangup() {
    local out="$work/load.out" base_p99 p99_now not_taken proxy_pid line rc=0
    start_bot voicebot1-direct.log
    log "slow-hangup: $calls calls at $rate/s straight to ARI (the baseline)"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" >"$out" 2>&1 || fail "baseline run: $(tail -n 1 "$out")"
    term_and_wait "$bot_pid" 30; bot_pid=""
    base_p99="$(setups "$work/voicebot1-direct.log" | p99)"
    log "baseline: $(tail -n 1 "$out"); set-up p99 ${base_p99} ms"
    start_helper hold-proxy "$work/proxy.out" python3 "$VB1_SCRIPTS_DIR/lib/hold_proxy.py" \
        --listen 127.0.0.1:8090 --upstream "127.0.0.1:$VB1_ARI_PORT" --method DELETE --path-prefix /ari/channels/ --every 5 --hold-ms 3000
    proxy_pid=$HELPER_PID
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/8090) 2>/dev/null && break; sleep 0.1; done
    sed "s#^url = \"http://127.0.0.1:$VB1_ARI_PORT\"#url = \"http://127.0.0.1:8090\"#" "$config" >"$work/proxied.toml"
    grep -q '^url = "http://127.0.0.1:8090"' "$work/proxied.toml" || die "could not point the configuration at the proxy"
    config="$work/proxied.toml"
    start_bot voicebot1.log
    log "slow-hangup: $calls calls at $rate/s through the proxy (one channel hang-up in five held 3 s)"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 60 >"$out" 2>&1 || rc=$?
    line="$(tail -n 1 "$out")"
    term_and_wait "$bot_pid" 30; bot_pid=""
    stop_helper "$proxy_pid" 5
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    p99_now="$(setups "$work/voicebot1.log" | p99)"
    not_taken="$(grep -cE "$NOT_TAKEN" "$work/voicebot1.log" || true)"
    local held; held="$(grep -c '^holding' "$work/proxy.out" || true)"
    echo "held by the proxy: $held hang-ups; admission: $(grep -c 'admission: ' "$work/voicebot1.log" || true) lines"
    grep -E 'admission: ' "$work/voicebot1.log" | cut -c1-200 | head -n 5 || true
    echo "load: $line"
    echo "set-up p99: ${base_p99} ms straight, ${p99_now} ms through the proxy; not taken: $not_taken"
    [ "$rc" = 0 ] || fail "load run: $line"
    [ "$not_taken" = 0 ] || fail "$not_taken callers were not taken while only hang-ups were slow"
    [ "$p99_now" -le $(( base_p99 * 2 > base_p99 + 20 ? base_p99 * 2 : base_p99 + 20 )) ] || fail "set-up p99 went from ${base_p99} ms to ${p99_now} ms"
    [ "$held" -gt 0 ] || fail "the proxy held nothing: was voicebot1 talking through it?"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    echo "fault=slow-hangup held=$held not_taken=$not_taken setup_p99_ms=${base_p99}/${p99_now} result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}

# Samples PID's CPU time every second into FILE ("seconds cpu_ms" lines) until killed.
sample_cpu() {  # sample_cpu PID FILE
    local t=0
    while kill -0 "$1" 2>/dev/null; do echo "$t $(cpu_ms "$1")" >>"$2"; sleep 1; t=$((t + 1)); done
}

# The busiest 5 s of a sample file, as % of one core.
peak_cpu() {  # peak_cpu FILE
    awk '{ t[NR] = $1; c[NR] = $2 } END { m = 0; for (i = 6; i <= NR; i++) { p = (c[i] - c[i-5]) / (t[i] - t[i-5]) / 10; if (p > m) m = p } printf "%d", m }' "$1"
}

# One load run under the running voicebot1, with Asterisk's CPU sampled. Sets STEP_LINE (the load
# summary), STEP_FAILED, STEP_PEAK (Asterisk's busiest 5 s, % of one core), STEP_SHED (callers
# rejected during the run), STEP_LOG (the voicebot1 log lines of the run).
step() {  # step CALLS RATE DRAIN_S
    local out="$work/step.out" from sampler
    from=$(( $(wc -l <"$work/voicebot1.log") + 1 ))
    : >"$work/cpu.samples"
    sample_cpu "$ast_pid" "$work/cpu.samples" & sampler=$!
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$1" --rate "$2" --hold "$hold" --dest "$dest" --drain-timeout "$3" >"$out" 2>&1 || true
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    STEP_LINE="$(tail -n 1 "$out")"
    STEP_FAILED="$(sed -n 's/.* failed=\([0-9]*\) .*/\1/p' <<<"$STEP_LINE")"
    STEP_PEAK="$(peak_cpu "$work/cpu.samples")"
    STEP_LOG="$work/step-$2.log"
    tail -n "+$from" "$work/voicebot1.log" >"$STEP_LOG"
    STEP_SHED="$(grep -cE "$NOT_TAKEN" "$STEP_LOG" || true)"
}

# "reason N, reason N, …" of voicebot1's not-taken lines on stdin (a caller that waited first is
# counted under "waited: " and what it waited for).
not_taken_reasons() {
    awk '{ w = ($0 ~ /not taken \(waited /) ? "waited: " : ""; r = "other"
           if ($0 ~ /admission\.max_calls/) r = "max_calls"
           else if ($0 ~ /admission\.max_setups/) r = "max_setups"
           else if ($0 ~ /the ceiling learned/) r = "learned ceiling"
           else if ($0 ~ /callers wait for it already/) r = "learned rate, its queue full"
           else if ($0 ~ /calls a second, the rate learned/) r = "learned rate"
           else if ($0 ~ /Asterisk is overloaded/) r = "Asterisk overloaded"
           else if ($0 ~ /Asterisk is slow/) r = "Asterisk slow"
           else if ($0 ~ /went unanswered/) r = "a request unanswered"
           n[w r]++ }
         END { for (k in n) printf "%s%s %d", (i++ ? ", " : ""), k, n[k] }'
}

# REST figures between two scrapes of /metrics: "p99_seconds timeouts requests".
rest_figures() {  # rest_figures BEFORE AFTER
    python3 - "$1" "$2" <<'PY'
import re, sys
def read(path):
    buckets, timeouts, count = {}, 0, 0
    for line in open(path):
        m = re.match(r'voicebot1_ari_request_duration_seconds_bucket\{operation="[^"]*",le="([^"]+)"\} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0) + float(m.group(2))
        m = re.match(r'voicebot1_ari_requests_total\{operation="[^"]*",class="timeout"\} (\S+)', line)
        if m:
            timeouts += float(m.group(1))
    return buckets, timeouts
(b0, t0), (b1, t1) = read(sys.argv[1]), read(sys.argv[2])
diff = {le: b1.get(le, 0) - b0.get(le, 0) for le in b1}
total = diff.get(float("inf"), 0)
p99 = next((le for le in sorted(diff) if total and diff[le] >= 0.99 * total), 0)
print(f"{p99} {int(t1 - t0)} {int(total)}")
PY
}

# Three times the saturation rate SAT for 30 s (after the 1.5 times run, on the same voicebot1),
# judged against CARRIED, the highest rate the search saw the box carry.
overload_3x() {  # overload_3x SAT CARRIED
    local sat="$1" carried="$2" rate n metrics="http://127.0.0.1:9108/metrics" p99 timeouts requests served per_s
    rate=$((sat * 3)); n=$((rate * 30))
    curl -sf --max-time 5 "$metrics" >"$work/metrics.before" || { fail "cannot scrape $metrics"; return; }
    log "overload: $n calls at $rate calls/s (3 x $sat) holding ${hold}s"
    local t0=$SECONDS ast0 bot0 box0; ast0="$(cpu_ms "$ast_pid")" bot0="$(cpu_ms "$bot_pid")" box0="$(machine_busy_ms)"
    step "$n" "$rate" 60
    local secs=$((SECONDS - t0)) ast1 bot1 box1; ast1="$(cpu_ms "$ast_pid")" bot1="$(cpu_ms "$bot_pid")" box1="$(machine_busy_ms)"
    curl -sf --max-time 5 "$metrics" >"$work/metrics.after" || { fail "cannot scrape $metrics"; return; }
    read -r p99 timeouts requests <<<"$(rest_figures "$work/metrics.before" "$work/metrics.after")"
    served="$(grep -c 'caller and media bridged in' "$STEP_LOG" || true)"
    per_s="$(awk -v s="$served" 'BEGIN { printf "%.1f", s / 30 }')"
    local refused; refused="$(sed -n "s/^refused at Asterisk's door: //p" "$work/step.out" | tail -n1)"
    echo "--- the 3 x run: $n calls offered at $rate calls/s ---"
    echo "served with the bot: $served ($per_s per second; the saturation rate is $sat, the box carried $carried); not taken by voicebot1: $STEP_SHED; refused at Asterisk's door: ${refused:-0}"
    echo "REST during the run: $requests requests, p99 at most ${p99} s (a histogram bucket's bound), $timeouts timed out"
    grep -E 'admission: ' "$STEP_LOG" | cut -c12-23,31- | cut -c1-200 | head -n 8 || true
    awk -v a="$((ast1 - ast0))" -v b="$((bot1 - bot0))" -v m="$((box1 - box0))" -v s="$secs" -v p="$STEP_PEAK" -v c="$(nproc)" \
        'BEGIN { printf "CPU over %d s (%% of one core): Asterisk %.0f %% (busiest 5 s: %d %%), voicebot1 %.1f %%, the rest (SIPp, the others) %.0f %%; the machine %.0f %% of %d %%\n", s, a/s/10, p, b/s/10, (m-a-b)/s/10, m/s/10, c*100 }'
    case "$STEP_LINE" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "3 x run: not every call got its outcome, or Asterisk was not clean 60 s after the last call: $STEP_LINE" ;; esac
    awk -v p="$p99" 'BEGIN { exit !(p <= 1) }' || fail "REST p99 was over 1 s (up to ${p99} s) during the 3 x run"
    [ "$timeouts" = 0 ] || fail "$timeouts REST requests timed out during the 3 x run"
    # Judged against what the box carried: the saturation rate is the first step that broke it.
    if ! awk -v s="$per_s" -v c="$carried" 'BEGIN { exit !(s >= 0.8 * c) }'; then
        # Is it Asterisk's SIP side? The same offered load, every caller refused at the door,
        # voicebot1 out of the path.
        sip_side_limit "$rate"
        fail "served $per_s callers per second at 3 x, under 80 % of the $carried calls/s the box carried"
    fi
    echo "3x: served_per_s=$per_s saturation=$sat carried=$carried rest_p99_s=$p99 timeouts=$timeouts"
}

# The offered load refused by Asterisk's dialplan alone (the door shut by hand, voicebot1 not
# involved): what Asterisk's SIP side costs at that rate, and whether it keeps up.
sip_side_limit() {  # sip_side_limit RATE
    local rate="$1" out="$work/sip-side.out" ast0 t0=$SECONDS
    ari POST "/asterisk/variable?variable=VOICEBOT1_ADMIT_PCT&value=0" >/dev/null || return 0
    ari POST "/asterisk/variable?variable=VOICEBOT1_FULL_UNTIL&value=9999999999" >/dev/null || return 0
    ast0="$(cpu_ms "$ast_pid")"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls $((rate * 10)) --rate "$rate" --hold 1-2 --dest none >"$out" 2>&1 || true
    ari POST "/asterisk/variable?variable=VOICEBOT1_FULL_UNTIL&value=0" >/dev/null || true
    echo "Asterisk's SIP side alone, refusing every caller at the door at $rate calls/s for 10 s: $(tail -n 1 "$out"); refused $(sed -n "s/^refused at Asterisk's door: //p" "$out" | tail -n1); Asterisk CPU $(( ($(cpu_ms "$ast_pid") - ast0) / (SECONDS - t0 + 1) / 10 )) % of one core"
}

# overload: find the rate at which the box saturates, offer 1.5 times that, then check that
# every call was served or given its fast outcome and that cleanup converged.
overload() {
    local rate n sat="" carried="" ast_pid secs rejected served
    start_bot voicebot1.log
    ast_pid="$(cat "$VB1_RUN_DIR/asterisk.pid" 2>/dev/null || true)"
    [ -n "$ast_pid" ] && kill -0 "$ast_pid" 2>/dev/null || die "no Asterisk pid in $VB1_RUN_DIR/asterisk.pid"

    # 1. The saturation rate: 30 s at each rate until Asterisk's busiest 5 s pass 85 % of the
    #    machine (170 % of one core on 2 cores), voicebot1 sheds more than 1 % of the callers, or a
    #    call fails. As long as the runs judged against it: calls at once grow for the first
    #    ~15 s of a step (a call lasts up to 15 s), and Asterisk stalls with calls at once, not
    #    with the rate — in 20 s steps its first slow spells at 50 calls/s came 12–19 s in, and a
    #    step that ended before they cost a caller "carried" a rate the box does not hold for 30.
    local limit=$(( $(nproc) * 85 )) search_s=30
    log "overload: looking for the rate at which Asterisk saturates (busiest 5 s over ${limit} % CPU, or shedding, or failures)"
    for rate in $probe_rates; do
        n=$((rate * search_s))
        step "$n" "$rate" 60
        log "  $rate calls/s: $STEP_LINE; Asterisk CPU peak ${STEP_PEAK} %; not taken: $STEP_SHED"
        if [ "$STEP_PEAK" -ge "$limit" ] || [ $((STEP_SHED * 100)) -gt "$n" ] || [ "${STEP_FAILED:-1}" != 0 ]; then
            sat=$rate; break
        fi
        carried=$rate
    done
    if [ -z "$sat" ]; then
        sat=$rate
        log "not saturated up to $rate calls/s: offering 1.5 times that"
    fi
    # What the box carried: the highest rate of the search with no shedding, no failure and
    # Asterisk under the CPU limit (the saturation rate itself when the first step saturated).
    carried="${carried:-$sat}"
    echo "saturation: $sat calls/s (Asterisk CPU peak ${STEP_PEAK} % of $(( $(nproc) * 100 )) %); carried: $carried calls/s"

    # 2. 1.5 times the saturation rate for 30 s; 60 s after the last call nothing may be left.
    rate=$(( sat * 3 / 2 )); n=$((rate * 30))
    log "overload: $n calls at $rate calls/s (1.5 x $sat) holding ${hold}s"
    local t0=$SECONDS bot0; bot0="$(cpu_ms "$bot_pid")"
    local ast0 box0; ast0="$(cpu_ms "$ast_pid")" box0="$(machine_busy_ms)"
    step "$n" "$rate" 60
    secs=$((SECONDS - t0))
    local ast1 bot1 box1; ast1="$(cpu_ms "$ast_pid")" bot1="$(cpu_ms "$bot_pid")" box1="$(machine_busy_ms)"
    log "load run: $STEP_LINE"
    kill -0 "$bot_pid" 2>/dev/null || fail "voicebot1 is not running after the overload"
    case "$STEP_LINE" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "not every call was served or given its outcome, or Asterisk was not clean 60 s after the last call: $STEP_LINE" ;; esac
    local blog="$STEP_LOG"
    rejected="$(grep -c 'rejected with congestion in' "$blog" || true)"
    served="$(grep -c 'caller and media bridged in' "$blog" || true)"
    echo "--- the overload run: $n calls offered at $rate calls/s ---"
    echo "served with the bot: $served; not taken: $STEP_SHED (rejected with congestion: $rejected)"
    echo "not taken, by reason: $(grep -E "$NOT_TAKEN" "$blog" | not_taken_reasons)"
    grep -o 'bridged in [0-9]* ms' "$blog" | awk '{print $3}' | sort -n >"$work/setup.ms" || true
    [ -s "$work/setup.ms" ] && echo "served calls' set-up: median $(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$work/setup.ms") ms, p99 $(awk '{a[NR]=$1} END {i=int(NR*0.99+0.999); print a[i]}' "$work/setup.ms") ms"
    # Time to reject: from the caller's StasisStart read to Asterisk's answer to the hang-up; the
    # log gives the whole and Asterisk's part (its answer to the DELETE). The rest is voicebot1's:
    # waiting for a free shedder.
    grep -o 'rejected with congestion in [0-9]* ms ([0-9]* ms' "$blog" | tr -d '(' | awk '{print $5, $7}' | sort -n >"$work/reject.ms" || true
    if [ -s "$work/reject.ms" ]; then
        local p99; p99="$(awk '{a[NR]=$1} END {i=int(NR*0.99+0.999); print a[i]}' "$work/reject.ms")"
        echo "time to reject: median $(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$work/reject.ms") ms, p99 $p99 ms, max $(tail -n 1 "$work/reject.ms" | cut -d' ' -f1) ms"
        local slow ours
        slow="$(awk '$1 >= 1000' "$work/reject.ms" | wc -l)"
        ours="$(awk '$1 - $2 >= 1000' "$work/reject.ms" | wc -l)"
        [ "$slow" = 0 ] || echo "over 1 s: $slow of $(wc -l <"$work/reject.ms") (time / Asterisk's answer to the hang-up: $(awk '$1 >= 1000 {printf "%s%d/%d ms", (n++ ? ", " : ""), $1, $2}' "$work/reject.ms"))"
        [ "$p99" -lt 1000 ] || fail "rejections took $p99 ms at p99 (1 s or more)"
        [ "$ours" = 0 ] || fail "$ours rejections waited 1 s or more in voicebot1 before their hang-up was sent"
    fi
    echo "set-up failures: $(grep -c 'failed: \|set-up timed out' "$blog" || true); janitor lines: $(grep -c 'janitor: ' "$blog" || true)"
    grep -E 'failed: |set-up timed out' "$blog" | head -n 3 | sed 's/^/  e.g. /' || true
    awk -v a="$((ast1 - ast0))" -v b="$((bot1 - bot0))" -v m="$((box1 - box0))" -v s="$secs" -v p="$STEP_PEAK" -v c="$(nproc)" \
        'BEGIN { printf "CPU over %d s (%% of one core): Asterisk %.0f %% (busiest 5 s: %d %%), voicebot1 %.1f %%, the rest (SIPp, the others) %.0f %%; the machine %.0f %% of %d %%\n", s, a/s/10, p, b/s/10, (m-a-b)/s/10, m/s/10, c*100 }'

    local shed_1_5="$STEP_SHED"
    # 3. Three times the saturation rate for 30 s: Asterisk stays responsive (REST p99 under 1 s,
    #    no request timed out), callers served per second stay at 80 % of the rate the box
    #    carried or more, and everything left converges to nothing within 60 s.
    overload_3x "$sat" "$carried"

    # 4. The load gone: a plain run passes, SIGTERM exits 0 with the pool full, Asterisk is empty.
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls 40 --rate 10 --hold 1-10 --dest "$dest" >"$work/second.out" 2>&1 || true
    local second; second="$(tail -n 1 "$work/second.out")"
    log "second run (load gone): $second"
    case "$second" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "second run: $second" ;; esac
    term_and_wait "$bot_pid" 30
    bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    local pool; pool="$(grep -o 'pool [0-9]*/[0-9]* free' "$work/voicebot1.log" | tail -n 1 || true)"
    [ -n "$pool" ] && [ "$(echo "$pool" | awk -F'[ /]' '{print ($2 == $3)}')" = 1 ] || fail "pool not full at shutdown: ${pool:-no line}"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    echo "$(grep -o 'totals: .*' "$work/voicebot1.log" | tail -n 1)"
    echo "voicebot1: $pool at shutdown, exit $TERM_RC"
    echo "fault=overload saturation=${sat}/s offered=${rate}/s calls=$n served=$served not_taken=$shed_1_5 result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}
if [ "$fault" = overload ]; then
    overload
    exit $?
fi

# reject-cost: Asterisk's CPU per caller turned away at the door, and per caller rejected by
# voicebot1 after Answer() and Stasis.
reject_cost() {
    local ast_pid out ast0 ast1 door_ms rest_ms line taken
    ast_pid="$(cat "$VB1_RUN_DIR/asterisk.pid" 2>/dev/null || true)"
    [ -n "$ast_pid" ] && kill -0 "$ast_pid" 2>/dev/null || die "no Asterisk pid in $VB1_RUN_DIR/asterisk.pid"
    # 1. The door, shut by hand (voicebot1 not running: the dialplan refuses before Answer()).
    ari POST "/asterisk/variable?variable=VOICEBOT1_ADMIT_PCT&value=0" >/dev/null \
        && ari POST "/asterisk/variable?variable=VOICEBOT1_FULL_UNTIL&value=9999999999" >/dev/null \
        || die "cannot set VOICEBOT1_FULL_UNTIL and VOICEBOT1_ADMIT_PCT"
    log "reject-cost: $calls callers at $rate/s refused at Asterisk's door"
    out="$work/door.out"; ast0="$(cpu_ms "$ast_pid")"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest none >"$out" 2>&1 || true
    ast1="$(cpu_ms "$ast_pid")"
    ari POST "/asterisk/variable?variable=VOICEBOT1_FULL_UNTIL&value=0" >/dev/null || true
    door_ms=$((ast1 - ast0))
    line="$(tail -n 1 "$out")"
    log "door: $line; refused $(sed -n "s/^refused at Asterisk's door: //p" "$out" | tail -n1)"
    case "$line" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "door run: $line" ;; esac
    # 2. Rejected by voicebot1: one call at once at most, the door off.
    sed -e 's/^max_calls = .*/max_calls = 1/' -e 's/^full_variable = .*/full_variable = ""/' "$config" >"$work/reject.toml"
    grep -q '^max_calls = 1$' "$work/reject.toml" || die "no [admission] max_calls line in $config"
    config="$work/reject.toml"
    start_bot voicebot1.log
    log "reject-cost: $calls callers at $rate/s, rejected by voicebot1 after Answer() and Stasis (max_calls = 1)"
    out="$work/rest.out"; ast0="$(cpu_ms "$ast_pid")"
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 30 >"$out" 2>&1 || true
    ast1="$(cpu_ms "$ast_pid")"
    rest_ms=$((ast1 - ast0))
    line="$(tail -n 1 "$out")"
    taken="$(grep -c 'caller and media bridged in' "$work/voicebot1.log" || true)"
    log "voicebot1: $line; rejected $(grep -c 'rejected with congestion in' "$work/voicebot1.log" || true), taken $taken"
    case "$line" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "REST-reject run: $line" ;; esac
    term_and_wait "$bot_pid" 30; bot_pid=""
    [ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
    "$VB1_SCRIPTS_DIR/leakcheck.sh" >"$work/leaks.out" 2>&1 || fail "Asterisk not clean: $(tail -n 1 "$work/leaks.out")"
    awk -v d="$door_ms" -v r="$rest_ms" -v n="$calls" -v t="$taken" 'BEGIN {
        printf "Asterisk CPU per caller turned away: at the door %.2f ms; rejected by voicebot1 over REST %.2f ms (%d of %d callers were taken, their calls included): %.1f times the door\n", d/n, r/n, t, n, (d > 0 ? r/d : 0) }'
    echo "fault=reject-cost calls=$calls rate=$rate door_ms_per_caller=$(awk -v d="$door_ms" -v n="$calls" 'BEGIN{printf "%.2f", d/n}') rest_ms_per_caller=$(awk -v r="$rest_ms" -v n="$calls" 'BEGIN{printf "%.2f", r/n}') result=$verdict"
    clean_work
    [ "$verdict" = ok ]
}
if [ "$fault" = reject-cost ]; then
    reject_cost
    exit $?
fi

if [ "$fault" = restart-voicebot1 ]; then
    restart_voicebot1
    exit $?
fi
if [ "$fault" = bot-kill ]; then
    bot_kill
    exit $?
fi
case "$fault" in
    hiccup|neighbour) disturbance; exit $? ;;
    slow-hangup) slow_hangup; exit $? ;;
esac

start_bot voicebot1.log
log "$fault: load run of $calls calls at $rate/s, fault at ${at}s"
"$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold "$hold" --dest "$dest" --drain-timeout 60 \
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
"$VB1_SCRIPTS_DIR/loadtest.sh" --calls 40 --rate 10 --hold 1-10 --dest "$dest" >"$work/second.out" 2>&1 || true
second="$(tail -n 1 "$work/second.out")"
log "second run (after the fault): $second"
case "$second" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) fail "second run: $second" ;; esac

term_and_wait "$bot_pid" 15
bot_pid=""
[ "$TERM_RC" = 0 ] || fail "voicebot1 exited $TERM_RC after SIGTERM"
bot_log="$work/voicebot1.log"; [ "$fault" = kill ] && bot_log="$work/voicebot1-after-kill.log"
pool="$(grep -o 'pool [0-9]*/[0-9]* free' "$bot_log" | tail -n 1 || true)"
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
clean_work
[ "$verdict" = ok ]
