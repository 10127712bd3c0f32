#!/usr/bin/env bash
# talk-e2e.sh -- the talk bot (scripts/bots/talk/) end to end: SIPp callers who speak (espeak-ng,
# speech.py caller-pcap) and press keys reach it through the Asterisk sandbox and voicebot1
# ([bots.talk], twilio dialect), the destination UAS answers transfers. Each call is captured at
# the caller (tcpdump on lo: its SIP and RTP ports, both directions) and judged by
# scripts/lib/talk_call.py on the machine's wall clock (capture times, voicebot1's log, the bot's
# log put on it by its start record's epoch):
#
#   agent      "I want to talk to an agent" after the greeting: voicebot1 logs "transferring"
#              within 2 s of the end of the caller's phrase (when SIPp sent the packet holding
#              speech_end, from caller-pcap), the bot heard "agent", the destination is bridged.
#   barge-in   "I would like to speak to an operator" during the greeting: the bot's audio at
#              the caller stops within 200 ms of the caller's speech onset (speech.py energy on
#              the capture: --onset-after on --src-port, --stop-after on --dst-port); the greeting
#              must have been sounding just before the onset. Then "operator": the transfer.
#   goodbye    "goodbye" during the greeting: the caller receives a BYE within 3 s of the word's end.
#   dtmf       DTMF 0 (RFC 4733) during the greeting: "transferring" within 2 s of the key.
#   softphone  pjsip.conf's endpoint "softphone" (scripts/sipp/uac-softphone.xml) registers with
#              its password and dials 3308489: the bot's stream names exten 3308489 and
#              from=softphone, and the greeting is recognised in what the softphone received.
#   bot-killed the bot's processes SIGKILLed 3 s into the greeting: voicebot1 sends the caller to
#              the destination (on_failure = "transfer") within 2 s, bridged.
#   and after every call Asterisk holds no channel; at the end leakcheck.sh finds nothing and
#   voicebot1 exits 0 on SIGTERM.
#
#   scripts/talk-e2e.sh [--only agent,barge-in,...]
# Needs the sandbox up (scripts/asterisk-sandbox.sh up) and target/release/voicebot1 built
# ($CARGO_TARGET_DIR when set). Installs espeak-ng, sox, tcpdump and the bot's venv when missing
# (scripts/bots/install.sh talk: cached). Ports: the bot 127.0.0.1:8765 (VB1_TALK_PORT), the caller
# 5070/6000 (VB1_CALLER_PORT, VB1_CALLER_MEDIA_PORT), the destination's media 6200.
# Last line: "talk=e2e checks_passed=N checks_failed=N result=ok|FAILED"; exit 1 if any failed.
# VB1_KEEP_LOGS=1 keeps the captures and logs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$VB1_SCRIPTS_DIR/lib/talk.sh"

only="agent,barge-in,goodbye,dtmf,softphone,bot-killed"
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
require_root
bin="$VB1_TARGET_DIR/release/voicebot1"
[ -x "$bin" ] || die "$bin not built (cargo build --release)"
ari GET /asterisk/info >/dev/null 2>&1 || die "the sandbox is not up (scripts/asterisk-sandbox.sh up)"
talk_prepare
CALLER_PORT="${VB1_CALLER_PORT:-5070}"
CALLER_MEDIA_PORT="${VB1_CALLER_MEDIA_PORT:-6000}"
for p in "$CALLER_PORT" "$CALLER_MEDIA_PORT"; do
    ! port_busy udp "$p" 127.0.0.1 || die "UDP port $p (the caller's) is in use"
done
! port_busy tcp "$TALK_PORT" 127.0.0.1 || die "TCP port $TALK_PORT (the talk bot's, VB1_TALK_PORT) is in use"

work="$(sipp_workdir)"
uas_pid="" vb_pid="" talk_pid=""
cleanup() {
    [ -z "$vb_pid" ] || stop_helper "$vb_pid" 10
    [ -z "$uas_pid" ] || stop_helper "$uas_pid" 3
    [ -z "$talk_pid" ] || stop_helper "$talk_pid" 5
    if [ "${VB1_KEEP_LOGS:-0}" = 1 ]; then log "files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0
declare -a verdicts=()
judge() {  # judge NAME OK TEXT
    if [ "$2" = 1 ]; then passed=$((passed + 1)); verdicts+=("PASS  $1: $3")
    else failed=$((failed + 1)); verdicts+=("FAIL  $1: $3"); fi
}

# shellcheck disable=SC2016  # $1 and $@ are the inner shell's
start_helper "sipp-uas" "$work/uas.screen" bash -c 'cd "$1" && shift && exec "$@"' _ "$work" \
    sipp -sf uas-answer.xml -i 127.0.0.1 -p "$VB1_DEST_PORT" -mp "${VB1_DEST_MEDIA_PORT:-6200}" -nostdin -trace_err
uas_pid=$HELPER_PID
wait_udp_port "$VB1_DEST_PORT" 10 "$uas_pid" || die "the destination UAS did not start on 127.0.0.1:$VB1_DEST_PORT"
log "starting the talk bot on 127.0.0.1:$TALK_PORT"
start_talk_bot "$work/talk.jsonl"
talk_pid=$HELPER_PID
config="$(talk_config "$work")"
TALK_VB1_LOG="$work/voicebot1.log"
start_helper voicebot1 "$TALK_VB1_LOG" "$bin" "$config"
vb_pid=$HELPER_PID
wait_voicebot1_registered "$vb_pid" 30 || { tail -n 30 "$TALK_VB1_LOG" >&2; die "voicebot1 did not register its Stasis app"; }

# one_call NAME CHECK [talk_call options...]: the call, its timeline, its check.
one_call() {
    local name="$1" check="$2" rc=0 line; shift 2
    [[ ",$only," == *",$name,"* ]] || return 0
    echo
    echo "=== call: $name ==="
    talk_call "$work" "$name" "$@"
    [ "$CALL_RC" = 0 ] || judge "$name" 0 "the caller's SIPp exited $CALL_RC ($(tail -n 3 "$work/$name.sipp.out" | tr '\n' ' '))"
    talk_call_report "$work" "$name" --check "$check" --json "$work/$name.json" | tee "$work/$name.report" || rc=$?
    line="$(grep "^check $check: " "$work/$name.report" | head -n 1 | sed -E "s/^check $check: (PASS|FAIL)  //" || true)"
    judge "$name" "$([ "$rc" = 0 ] && echo 1 || echo 0)" "${line:-talk_call.py exited $rc without a verdict}"
    wait_asterisk_empty 10 || judge "$name: Asterisk empty after the call" 0 "$(ari GET /channels | jq -r '[.[].name] | join(" ")')"
}

# The greeting is 7.6 s; the caller's audio starts with the call, the greeting ~0.07 s later.
one_call agent agent --say "8.6:I want to talk to an agent" --length 14 --hold 14000
# In the greeting's 1.2 s without a pause (6.18-7.40 s of it): an onset there is a real barge-in.
one_call barge-in barge-in --say "6.6:I would like to speak to an operator" --length 13 --hold 13000
one_call goodbye goodbye --say "3.0:goodbye" --length 8 --hold 20000
one_call dtmf dtmf --key 3000:0 --length 8 --hold 8000
# pjsip.conf's softphone (README "Talk to it"): registers, dials 3308489, hears the greeting.
one_call softphone softphone --softphone --length 6 --hold 6000
if [[ ",$only," == *",bot-killed,"* ]]; then
    one_call bot-killed bot-killed --length 10 --hold 10000 --kill-bot "$talk_pid" --kill-after 3
    stop_helper "$talk_pid" 1; talk_pid=""
fi

echo
echo "=== the end: voicebot1 SIGTERM, Asterisk ==="
term_and_wait "$vb_pid" 15; vb_pid=""
judge "voicebot1 exits 0 on SIGTERM" "$([ "$TERM_RC" = 0 ] && echo 1 || echo 0)" "exit status $TERM_RC; $(grep -o 'shutdown complete.*' "$TALK_VB1_LOG" | tail -n 1 || true)"
leaks="$("$VB1_SCRIPTS_DIR/leakcheck.sh" 2>&1)" && ok=1 || ok=0
echo "$leaks"
judge "nothing left in Asterisk" "$ok" "$(tail -n 1 <<<"$leaks")"

echo
echo "=== talk bot end to end: measured ==="
printf '%s\n' "${verdicts[@]}"
verdict=ok
[ "$failed" = 0 ] || verdict=FAILED
echo "talk=e2e checks_passed=$passed checks_failed=$failed result=$verdict"
[ "$failed" = 0 ]
