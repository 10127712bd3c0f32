#!/usr/bin/env bash
# demo.sh -- one real call through voicebot1, to watch:
#   sandbox up -> destination UAS (answers) -> cargo build --release ->
#   voicebot1 conf/voicebot1.toml -> one 20 s SIPp call with audio to 3308487
#   (voicebot1's log is shown live) -> SIGTERM voicebot1 -> stop the UAS ->
#   leak check.
#
#   scripts/demo.sh [--seconds 20] [--down]
#   scripts/demo.sh --bot talk [--say-at 4] [--say "I want to talk to an agent"] [--seconds 16]
#                              [--stay]
#     --seconds N   call length (default 20; with --bot talk: 16)
#     --down        take the sandbox down at the end (default: leave it up to poke at)
#     --bot talk    the caller talks to the talk bot (scripts/bots/talk/) instead of the echo:
#                   the bot runs on 127.0.0.1:8765 (VB1_TALK_PORT), voicebot1 with [bots.talk];
#                   the caller (3308488, X-VB1-Bot: talk) says --say at --say-at seconds into
#                   the call (espeak-ng voice en-us+klatt4, speech.py caller-pcap), while tcpdump
#                   captures what it sends and receives. Then the timeline: what the bot said and
#                   heard, the transfer, the destination answering, and what the caller heard
#                   (speech.py recognize on the capture).
#     --stay        (with --bot talk) then keep the bot and voicebot1 running for a softphone
#                   (user softphone, password softphone-sandbox, 127.0.0.1:5060; dial 3308489)
#                   until Ctrl+C, showing both logs live; then stop as usual.
# Installs what it needs when missing (sip-tester, debootstrap, jq...: see
# ensure_host_packages in scripts/lib/common.sh; with --bot talk also espeak-ng, sox, tcpdump
# and the bot's venv, scripts/bots/install.sh talk).
# Ports: VB1_ARI_PORT / VB1_SIP_PORT / VB1_DEST_PORT as for asterisk-sandbox.sh;
# when the ARI port is moved, voicebot1 runs with a temporary copy of the
# configuration whose [ari] url points at it. The caller: VB1_CALLER_PORT (5070),
# VB1_CALLER_MEDIA_PORT (6000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

seconds="" take_down=0 bot=echo say_at=4 say_text="I want to talk to an agent" stay=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?}"; shift 2 ;;
        --down) take_down=1; shift ;;
        --bot) bot="${2:?}"; shift 2 ;;
        --say-at) say_at="${2:?}"; shift 2 ;;
        --say) say_text="${2:?}"; shift 2 ;;
        --stay) stay=1; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
case "$bot" in
    echo) seconds="${seconds:-20}" ;;
    talk) seconds="${seconds:-16}" ;;
    *) die "--bot expects echo or talk" ;;
esac
[ "$stay" = 0 ] || [ "$bot" = talk ] || die "--stay goes with --bot talk"
[[ "$say_at" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--say-at expects seconds"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds expects a positive integer"
require_root
# sipp and its g711a.pcap, debootstrap, jq... before anything needs them.
ensure_host_packages
if [ "$bot" = talk ]; then
    source "$VB1_SCRIPTS_DIR/lib/talk.sh"
    talk_prepare   # espeak-ng, sox, tcpdump; the bot's venv (cached)
fi
[ -f "$VB1_REPO_DIR/Cargo.toml" ] || die "no Cargo.toml in $VB1_REPO_DIR: voicebot1 is not there to demo yet"
command -v cargo >/dev/null || die "cargo not found (the Rust toolchain is needed to build voicebot1)"
CALLER_PORT="${VB1_CALLER_PORT:-5070}"
CALLER_MEDIA_PORT="${VB1_CALLER_MEDIA_PORT:-6000}"
DEST_MEDIA_PORT="${VB1_DEST_MEDIA_PORT:-6200}"

work="$(sipp_workdir)"
uas_pid="" bot_pid="" tail_pid="" talk_pid=""
stop_tail() {
    if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; tail_pid=""; fi
}
cleanup() {
    stop_tail
    [ -n "$bot_pid" ] && stop_helper "$bot_pid" 10
    [ -n "$uas_pid" ] && stop_helper "$uas_pid" 3
    [ -n "$talk_pid" ] && stop_helper "$talk_pid" 5
    if [ "${VB1_KEEP_LOGS:-0}" = 1 ]; then echo "(files kept in $work)"; else rm -rf "$work"; fi
    if [ "$take_down" = 1 ]; then "$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" down || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" up

log "building voicebot1 (cargo build --release)"
(cd "$VB1_REPO_DIR" && cargo build --release) || die "cargo build --release failed"
bin="$VB1_TARGET_DIR/release/voicebot1"
[ -x "$bin" ] || die "$bin not found after the build"
if [ "$bot" = talk ]; then
    config="$(talk_config "$work")"
    log "starting the talk bot on 127.0.0.1:$TALK_PORT"
    start_talk_bot "$work/talk.jsonl"
    talk_pid=$HELPER_PID
else
    config="$(voicebot1_config "$work")"
fi

# The transfer destination: answers and talks until hung up.
# shellcheck disable=SC2016  # $1 and $@ are the inner shell's
start_helper "sipp-uas" "$work/uas.screen" bash -c 'cd "$1" && shift && exec "$@"' _ "$work" \
    sipp -sf uas-answer.xml -i 127.0.0.1 -p "$VB1_DEST_PORT" -mp "$DEST_MEDIA_PORT" -nostdin -trace_err
uas_pid=$HELPER_PID
wait_udp_port "$VB1_DEST_PORT" 10 "$uas_pid" || die "the destination UAS did not start on 127.0.0.1:$VB1_DEST_PORT"

log "starting voicebot1 with $config"
start_helper voicebot1 "$work/voicebot1.log" "$bin" "$config"
bot_pid=$HELPER_PID
# Show voicebot1's log live while the call runs.
tail -n +1 -F "$work/voicebot1.log" 2>/dev/null | sed -u 's/^/  voicebot1| /' &
tail_pid=$!
wait_voicebot1_registered "$bot_pid" 30 \
    || die "voicebot1 did not register the Stasis application 'voicebot1' within 30 s (log above)"

report_rc=0
if [ "$bot" = talk ]; then
    log "placing one ${seconds}-second call to 3308488 for bot talk; the caller says \"$say_text\" $say_at s in"
    # shellcheck disable=SC2034  # read by talk_call (scripts/lib/talk.sh)
    TALK_VB1_LOG="$work/voicebot1.log"
    talk_call "$work" call --say "$say_at:$say_text" --length "$seconds" --hold $((seconds * 1000))
    call_rc=$CALL_RC
    stop_tail
    log "call finished: sipp exit $call_rc"
    echo
    echo "=== the call, as the caller, the bot and voicebot1 saw it ==="
    # A phrase asking for a person must end with the destination answering: judged (exit status).
    checks=()
    [[ "${say_text,,}" =~ (agent|operator|person|representative) ]] && checks=(--check agent)
    talk_call_report "$work" call --summary "${checks[@]}" || report_rc=$?
    echo
    if [ "$stay" = 1 ]; then
        echo "=== the talk bot and voicebot1 stay up: call them from a softphone ==="
        echo "  account: user softphone, password softphone-sandbox, domain 127.0.0.1:$VB1_SIP_PORT (UDP),"
        echo "  codec G.711 a-law or u-law, the softphone's own SIP port anything but $VB1_SIP_PORT;"
        echo "  dial 3308489 (600: the echo test). Ctrl+C to stop."
        tail -n 0 -F "$work/voicebot1.log" 2>/dev/null | sed -u 's/^/  voicebot1| /' &
        tail_pid=$!
        tail -n 0 -F "$work/talk.jsonl" 2>/dev/null | sed -u 's/^/  bot| /' &
        bot_tail_pid=$!
        staying=1
        trap 'staying=0' INT TERM
        # (sleep dies of the Ctrl+C too: no errexit for that)
        while [ "$staying" = 1 ] && kill -0 "$bot_pid" 2>/dev/null; do sleep 0.5 || true; done
        trap 'exit 130' INT TERM
        kill "$bot_tail_pid" 2>/dev/null || true; wait "$bot_tail_pid" 2>/dev/null || true
        stop_tail
        echo
    fi
else
    log "placing one ${seconds}-second call with audio to 3308487"
    set_scenario_hold "$work/uac-audio.xml" $((seconds * 1000)) $((seconds * 1000))
    call_rc=0
    (cd "$work" && timeout $((seconds + 90)) sipp 127.0.0.1:"$VB1_SIP_PORT" -sf uac-audio.xml -s 3308487 -i 127.0.0.1 \
        -p "$CALLER_PORT" -mp "$CALLER_MEDIA_PORT" -m 1 -nostdin -recv_timeout 30000 \
        -trace_err -trace_stat -stf "$work/call.csv" -fd 1 >"$work/caller.screen" 2>&1) || call_rc=$?
    sleep 2   # let the last events reach voicebot1's log
    log "call finished: sipp exit $call_rc, successful calls $(sipp_stat "$work/call.csv" "SuccessfulCall(C)")"
fi

log "stopping voicebot1 (SIGTERM)"
term_and_wait "$bot_pid" 15; bot_rc=$TERM_RC; bot_pid=""
sleep 0.3; stop_tail
log "voicebot1 exit status: $bot_rc"
stop_helper "$uas_pid" 3; uas_pid=""

echo "--- leak check ---"
leak_rc=0
"$VB1_SCRIPTS_DIR/leakcheck.sh" || leak_rc=$?
[ "$take_down" = 1 ] || echo "(the sandbox is still up: scripts/asterisk-sandbox.sh status | cli \"...\" | down)"
[ "$call_rc" -eq 0 ] && [ "$bot_rc" -eq 0 ] && [ "$leak_rc" -eq 0 ] && [ "$report_rc" -eq 0 ]
