#!/usr/bin/env bash
# loadtest.sh -- drive callers into the sandbox Asterisk with SIPp, with a
# SIPp "Avaya side" behind AVAYA-endpoint, wait until the calls have drained
# and check that nothing is left in Asterisk.
#
# It does NOT start voicebot1: start it first for --exten 3308487 (default).
# --exten 600 (Echo) runs the bench without voicebot1.
#
#   scripts/loadtest.sh [--calls N] [--rate R] [--max-concurrent C]
#                       [--hold MIN-MAX] [--dest answer|hangup|busy|noanswer|random|none]
#                       [--exten 3308487] [--caller hold|cancel]
#                       [--dest-hold MIN-MAX] [--drain-timeout S] [--prefix ID]
#                       [--seed N] [--keep] [--scrape URL [--log FILE]]
#
#   --calls N          calls to place (default 100)
#   --rate R           new calls per second (default 10)
#   --max-concurrent C at most C calls at once (default: no limit)
#   --hold MIN-MAX     caller hangs up after a uniform random time, seconds (default 1-15);
#                      for --caller cancel: the ring time before CANCEL
#   --dest KIND        transfer destination behaviour (SIPp UAS on VB1_DEST_PORT), default answer;
#                      none: start no destination
#   --dest-hold MIN-MAX  when --dest hangup/random answers and hangs up first: after this long (default 5-15)
#   --caller KIND      hold (calls with audio, default) or cancel (give up while ringing; use --exten 601)
#   --drain-timeout S  after the last caller ended, wait at most S seconds for Asterisk to
#                      have no channel and no bridge (default 30)
#   --prefix ID        count only channels/bridges whose id starts with ID as leaks
#   --seed N           seed of SIPp's random hold times / destination choices (default: random)
#   --keep             keep the SIPp work directory (traces, csv) and print its path
#   --scrape URL       voicebot1's metrics endpoint (e.g. http://127.0.0.1:9108), scraped before
#                      the calls and once the calls are over: the counters' increase must agree
#                      with SIPp (calls started = calls placed, every one ended, none active).
#                      Prints "metrics: agree (...)" or "metrics: FAILED: ..." (and exits 1)
#   --log FILE         with --scrape: voicebot1's log since its start; its totals (inbound calls,
#                      "ended (" lines, bot sessions, echo rx/tx packets, set-ups) must equal
#                      the counters
#
# Before it: "hung up by the far side: N" (callers hung up before their own hold time) and
# "refused at Asterisk's door: N" (503 before any answer while voicebot1 was full).
# Ends with one line: calls=N ok=N failed=N leaked_channels=N leaked_bridges=N
# "failed": a caller whose SIP dialog failed (unexpected message, timeout,
# rejected); a call that Asterisk hung up (BYE) after answering is ok.
# Exit status: 0 when failed=0, nothing is left in Asterisk and (with --scrape) the metrics
# agree; 1 otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

calls=100 rate=10 maxconc=0 hold="1-15" dest=answer exten=3308487 caller=hold
dest_hold="5-15" drain_timeout=30 prefix="" seed="" keep=0 scrape="" vb_log=""
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="${2:?}"; shift 2 ;;
        --rate) rate="${2:?}"; shift 2 ;;
        --max-concurrent) maxconc="${2:?}"; shift 2 ;;
        --hold) hold="${2:?}"; shift 2 ;;
        --dest) dest="${2:?}"; shift 2 ;;
        --dest-hold) dest_hold="${2:?}"; shift 2 ;;
        --exten) exten="${2:?}"; shift 2 ;;
        --caller) caller="${2:?}"; shift 2 ;;
        --drain-timeout) drain_timeout="${2:?}"; shift 2 ;;
        --prefix) prefix="${2:?}"; shift 2 ;;
        --seed) seed="${2:?}"; shift 2 ;;
        --keep) keep=1; shift ;;
        --scrape) scrape="${2:?}"; shift 2 ;;
        --log) vb_log="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$calls" =~ ^[1-9][0-9]*$ ]] || die "--calls expects a positive integer"
[[ "$rate" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--rate expects a number of calls per second"
[[ "$maxconc" =~ ^[0-9]+$ ]] || die "--max-concurrent expects an integer"
[[ "$drain_timeout" =~ ^[0-9]+$ ]] || die "--drain-timeout expects seconds"
case "$dest" in answer|hangup|busy|noanswer|random|none) ;; *) die "--dest must be answer|hangup|busy|noanswer|random|none" ;; esac
case "$caller" in hold) caller_xml=uac-hold.xml ;; cancel) caller_xml=uac-cancel.xml ;; *) die "--caller must be hold|cancel" ;; esac
if [ -n "$scrape" ]; then
    [ "$exten" = 3308487 ] || die "--scrape counts voicebot1's calls: it goes with --exten 3308487"
    scrape="${scrape%/}"; scrape="${scrape%/metrics}"
else
    [ -z "$vb_log" ] || die "--log goes with --scrape"
fi
[ -z "$vb_log" ] || [ -r "$vb_log" ] || die "--log $vb_log: not readable"
parse_range_s --hold "$hold"; hold_min=$RANGE_MIN_MS hold_max=$RANGE_MAX_MS
parse_range_s --dest-hold "$dest_hold"; dhold_min=$RANGE_MIN_MS dhold_max=$RANGE_MAX_MS
seed="${seed:-$(( (RANDOM << 15) | RANDOM ))}"

require_root
ensure_host_packages
CALLER_PORT="${VB1_CALLER_PORT:-5070}"
CALLER_MEDIA_PORT="${VB1_CALLER_MEDIA_PORT:-6000}"
DEST_MEDIA_PORT="${VB1_DEST_MEDIA_PORT:-6200}"

ari GET /asterisk/info >/dev/null 2>&1 || die "ARI does not answer on $VB1_ARI_URL: run scripts/asterisk-sandbox.sh up first"
port_busy udp "$CALLER_PORT" 127.0.0.1 && die "UDP port $CALLER_PORT (callers, VB1_CALLER_PORT) is in use"
port_busy udp "$CALLER_MEDIA_PORT" 127.0.0.1 && die "UDP port $CALLER_MEDIA_PORT (callers' media, VB1_CALLER_MEDIA_PORT) is in use"
if [ "$dest" != none ]; then
    port_busy udp "$VB1_DEST_PORT" 127.0.0.1 && die "UDP port $VB1_DEST_PORT (VB1_DEST_PORT) is in use: another destination UAS running?"
fi

# --- voicebot1's /metrics (with --scrape) -------------------------------------------------------
# The value of one series, written as in the text ('name' or 'name{label="v",...}'); 0 if absent.
metric_value() {  # metric_value FILE SERIES
    awk -v s="$2" 'index($0, s " ") == 1 { v = $NF } END { printf "%.0f", v + 0 }' "$1"
}
# The sum over every series of one family (all its label values).
metric_sum() {  # metric_sum FILE NAME
    awk -v n="$2" 'index($0, n "{") == 1 || index($0, n " ") == 1 { s += $NF } END { printf "%.0f", s + 0 }' "$1"
}
# REST requests of one class (2xx, 5xx, timeout...), every operation.
rest_requests() {  # rest_requests FILE CLASS
    awk -v c="class=\"$2\"" 'index($0, "voicebot1_ari_requests_total{") == 1 && index($0, c) { n += $NF } END { printf "%.0f", n + 0 }' "$1"
}
# One line: "metrics: agree (...)" or "metrics: FAILED: ...". The increase between two scrapes
# against the calls SIPp placed; with a log, the log's totals against the counters themselves.
compare_metrics() {  # compare_metrics BEFORE AFTER CALLS_PLACED [LOG]
    local before="$1" after="$2" placed="$3" log="${4:-}" started ended active errors s
    local -a problems=()
    s='voicebot1_calls_started_total{origin="inbound"}'
    started=$(( $(metric_value "$after" "$s") - $(metric_value "$before" "$s") ))
    ended=$(( $(metric_sum "$after" voicebot1_calls_ended_total) - $(metric_sum "$before" voicebot1_calls_ended_total) ))
    active=$(metric_sum "$after" voicebot1_calls_active)
    errors=0
    for s in 5xx timeout connect other; do
        errors=$(( errors + $(rest_requests "$after" "$s") - $(rest_requests "$before" "$s") ))
    done
    [ "$started" = "$placed" ] || problems+=("$started calls started for $placed placed")
    [ "$ended" = "$started" ] || problems+=("$ended calls ended of $started started")
    [ "$active" = 0 ] || problems+=("$active calls still active")
    if [ -n "$log" ]; then
        local l_started l_ended l_sessions l_setups rx tx
        l_started=$(grep ': inbound from ' "$log" | grep -vc 'left waiting for the next voicebot1' || true)
        l_ended=$(grep -c ': ended (' "$log" || true)
        l_sessions=$(grep -c 'bot media ended on port' "$log" || true)
        l_setups=$(grep -c 'caller and media bridged in' "$log" || true)
        read -r rx tx < <(sed -n 's/.*bot media ended on port [0-9]*: rx \([0-9]*\) pkts.*, tx \([0-9]*\) pkts.*/\1 \2/p' "$log" \
                           | awk '{ rx += $1; tx += $2 } END { printf "%.0f %.0f\n", rx + 0, tx + 0 }')
        [ "$l_started" = "$(metric_value "$after" 'voicebot1_calls_started_total{origin="inbound"}')" ] \
            || problems+=("log: $l_started inbound calls, counter $(metric_value "$after" 'voicebot1_calls_started_total{origin="inbound"}')")
        [ "$l_ended" = "$(metric_sum "$after" voicebot1_calls_ended_total)" ] \
            || problems+=("log: $l_ended calls ended, counter $(metric_sum "$after" voicebot1_calls_ended_total)")
        [ "$l_sessions" = "$(metric_value "$after" voicebot1_bot_sessions_total)" ] \
            || problems+=("log: $l_sessions bot sessions, counter $(metric_value "$after" voicebot1_bot_sessions_total)")
        [ "$l_setups" = "$(metric_value "$after" voicebot1_call_setup_seconds_count)" ] \
            || problems+=("log: $l_setups set-ups, counter $(metric_value "$after" voicebot1_call_setup_seconds_count)")
        [ "$rx" = "$(metric_value "$after" voicebot1_echo_packets_received_total)" ] \
            || problems+=("log: echo rx $rx packets, counter $(metric_value "$after" voicebot1_echo_packets_received_total)")
        [ "$tx" = "$(metric_value "$after" voicebot1_echo_packets_sent_total)" ] \
            || problems+=("log: echo tx $tx packets, counter $(metric_value "$after" voicebot1_echo_packets_sent_total)")
    fi
    if [ ${#problems[@]} -eq 0 ]; then
        echo "metrics: agree (started $started, ended $started, 0 active, REST errors $errors${log:+; log totals equal the counters})"
    else
        local IFS=';'
        echo "metrics: FAILED:${problems[*]/#/ }"
    fi
}

work="$(sipp_workdir)"
if [ -n "$scrape" ]; then
    curl -sf --max-time 5 "$scrape/metrics" >"$work/metrics.before" \
        || die "cannot scrape $scrape/metrics: is voicebot1 running with [metrics] listen there?"
fi
uas_pid="" caller_pid=""
cleanup() {
    [ -n "$caller_pid" ] && stop_helper "$caller_pid" 3
    [ -n "$uas_pid" ] && stop_helper "$uas_pid" 3
    if [ "$keep" = 1 ]; then echo "SIPp work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set_scenario_hold "$work/$caller_xml" "$hold_min" "$hold_max"
export GSL_RNG_SEED="$seed"   # SIPp's random samples (GSL) follow this seed

# 1. The transfer destination.
if [ "$dest" != none ]; then
    uas_xml="uas-$dest.xml"
    case "$dest" in hangup|random) set_scenario_hold "$work/$uas_xml" "$dhold_min" "$dhold_max" ;; esac
    start_helper "sipp-uas" "$work/uas.screen" \
        bash -c 'cd "$1" && shift && exec "$@"' _ "$work" \
        sipp -sf "$uas_xml" -i 127.0.0.1 -p "$VB1_DEST_PORT" -mp "$DEST_MEDIA_PORT" -nostdin \
             -recv_timeout 130000 -trace_err -trace_stat -stf "$work/uas.csv" -fd 1
    uas_pid=$HELPER_PID
    wait_udp_port "$VB1_DEST_PORT" 10 "$uas_pid" \
        || die "the destination UAS ($uas_xml) did not start on 127.0.0.1:$VB1_DEST_PORT: $(tail -n 3 "$work/uas.screen" 2>/dev/null | tr '\n' ' ')"
fi

# 2. The callers. Bounded: SIPp gives up after the time all calls need plus margin.
run_limit=$(awk -v n="$calls" -v r="$rate" -v h="$hold_max" 'BEGIN { printf "%d", n / (r > 0 ? r : 1) + h / 1000 + 120 }')
log "placing $calls calls to $exten at $rate/s (max concurrent: ${maxconc/#0/unlimited}), hold ${hold}s, destination: $dest, seed $seed; at most ${run_limit}s"
sipp_args=(127.0.0.1:"$VB1_SIP_PORT" -sf "$caller_xml" -s "$exten" -i 127.0.0.1 -p "$CALLER_PORT" -mp "$CALLER_MEDIA_PORT"
           -m "$calls" -r "$rate" -nostdin -recv_timeout 90000 -timeout "${run_limit}s" -timeout_error
           -trace_err -trace_stat -stf "$work/caller.csv" -fd 1 -trace_logs)
[ "$maxconc" -gt 0 ] && sipp_args+=(-l "$maxconc")
t0=$SECONDS
start_helper "sipp-caller" "$work/caller.screen" bash -c 'cd "$1" && shift && exec "$@"' _ "$work" sipp "${sipp_args[@]}"
caller_pid=$HELPER_PID
caller_rc=0
wait "$caller_pid" || caller_rc=$?
rm -f "$VB1_HELPER_DIR"/*."$caller_pid".pid
caller_pid=""
elapsed=$((SECONDS - t0))

created=$(sipp_stat "$work/caller.csv" "TotalCallCreated")
ok=$(sipp_stat "$work/caller.csv" "SuccessfulCall(C)")
failed=$(sipp_stat "$work/caller.csv" "FailedCall(C)")
# Calls never placed or never finished (SIPp stopped early) count as failed.
[ $((ok + failed)) -lt "$calls" ] && failed=$((calls - ok))

# 3. Drain: voicebot1/Asterisk may need a moment after the last BYE.
t1=$SECONDS drained=0
while [ $((SECONDS - t1)) -lt "$drain_timeout" ]; do
    lrc=0; "$VB1_SCRIPTS_DIR/leakcheck.sh" --quiet ${prefix:+--prefix "$prefix"} >/dev/null 2>&1 || lrc=$?
    [ "$lrc" -eq 0 ] && { drained=1; break; }
    [ "$lrc" -eq 2 ] && break   # ARI unreachable: waiting will not help
    sleep 0.5
done
drain_s=$((SECONDS - t1))

# 3b. voicebot1's counters against SIPp (and its log): once no call is active any more.
metrics_verdict=""
if [ -n "$scrape" ]; then
    metrics_verdict="metrics: FAILED: cannot scrape $scrape/metrics after the calls"
    for _ in $(seq 1 50); do   # up to 10 s for the last calls' clean-up to finish
        curl -sf --max-time 5 "$scrape/metrics" >"$work/metrics.scrape" || break
        mv -f "$work/metrics.scrape" "$work/metrics.after"
        metrics_verdict=""
        [ "$(metric_sum "$work/metrics.after" voicebot1_calls_active)" = 0 ] && break
        sleep 0.2
    done
    [ -n "$metrics_verdict" ] || metrics_verdict="$(compare_metrics "$work/metrics.before" "$work/metrics.after" "$created" "$vb_log")"
fi

# 4. Stop the destination and read its statistics.
if [ -n "$uas_pid" ]; then
    stop_helper "$uas_pid" 3; uas_pid=""
    d_ok=$(sipp_stat "$work/uas.csv" "SuccessfulCall(C)")
    d_failed=$(sipp_stat "$work/uas.csv" "FailedCall(C)")
    d_created=$(sipp_stat "$work/uas.csv" "TotalCallCreated")
fi

echo "--- loadtest summary ---"
echo "exten=$exten caller=$caller hold=${hold}s rate=$rate/s max_concurrent=${maxconc/#0/unlimited} dest=$dest seed=$seed"
echo "callers: sipp exit=$caller_rc created=$created successful=$ok failed=$failed in ${elapsed}s"
if [ "$dest" != none ]; then
    echo "destination (uas-$dest): calls=$d_created successful=$d_ok failed=$d_failed"
fi
if [ "$failed" -gt 0 ]; then
    echo "caller errors (first lines of SIPp's error log):"
    cat "$work"/*_errors.log 2>/dev/null | grep -v '^The following events occurred' | grep -v 'Failed to delete FD from epoll' | head -n 10 | cut -c1-300 || true
fi
if [ "$drained" = 1 ]; then echo "drained: nothing left after ${drain_s}s"; else echo "not drained after ${drain_timeout}s:"; fi
leak_out="$("$VB1_SCRIPTS_DIR/leakcheck.sh" ${prefix:+--prefix "$prefix"} 2>&1)" || true
echo "$leak_out" | sed '$d'
lc=$(sed -n 's/.*leaked_channels=\([0-9]*\).*/\1/p' <<<"$leak_out" | tail -n1)
lb=$(sed -n 's/.*leaked_bridges=\([0-9]*\).*/\1/p' <<<"$leak_out" | tail -n1)
# ARI unreachable: the counts are unknown, reported as -1 (and the run fails).
[ -n "$lc" ] && [ -n "$lb" ] || { echo "$leak_out"; lc=-1; lb=-1; }
# Callers that Asterisk hung up before their own hold time (voicebot1 hung up, or the
# destination did): "ok" calls all the same, counted for the runs that must have none.
far_bye=$(cat "$work"/*_logs.log 2>/dev/null | grep -c '^far_bye call' || true)
echo "hung up by the far side: ${far_bye:-0}"
# Callers Asterisk refused at its door (503 before answering) while voicebot1 was full: "ok" too.
refused=$(cat "$work"/*_logs.log 2>/dev/null | grep -c '^refused ' || true)
echo "refused at Asterisk's door: ${refused:-0}"
[ -z "$metrics_verdict" ] || echo "$metrics_verdict"
echo "calls=$calls ok=$ok failed=$failed leaked_channels=$lc leaked_bridges=$lb"
[ "$failed" -eq 0 ] && [ "$lc" -eq 0 ] && [ "$lb" -eq 0 ] && [[ "$metrics_verdict" != *FAILED* ]]
