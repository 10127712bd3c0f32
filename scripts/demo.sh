#!/usr/bin/env bash
# demo.sh -- one real call through voicebot1, to watch:
#   sandbox up -> destination UAS (answers) -> cargo build --release ->
#   voicebot1 conf/voicebot1.toml -> one 20 s SIPp call with audio to 3308487
#   (voicebot1's log is shown live) -> SIGTERM voicebot1 -> stop the UAS ->
#   leak check.
#
#   scripts/demo.sh [--seconds 20] [--down]
#     --seconds N   call length (default 20)
#     --down        take the sandbox down at the end (default: leave it up to poke at)
# Installs what it needs when missing (sip-tester, debootstrap, jq...: see
# ensure_host_packages in scripts/lib/common.sh).
# Ports: VB1_ARI_PORT / VB1_SIP_PORT / VB1_DEST_PORT as for asterisk-sandbox.sh;
# when the ARI port is moved, voicebot1 runs with a temporary copy of the
# configuration whose [ari] url points at it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

seconds=20 take_down=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?}"; shift 2 ;;
        --down) take_down=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds expects a positive integer"
require_root
# sipp and its g711a.pcap, debootstrap, jq... before anything needs them.
ensure_host_packages
[ -f "$VB1_REPO_DIR/Cargo.toml" ] || die "no Cargo.toml in $VB1_REPO_DIR: voicebot1 is not there to demo yet"
command -v cargo >/dev/null || die "cargo not found (the Rust toolchain is needed to build voicebot1)"
CALLER_PORT="${VB1_CALLER_PORT:-5070}"
CALLER_MEDIA_PORT="${VB1_CALLER_MEDIA_PORT:-6000}"
DEST_MEDIA_PORT="${VB1_DEST_MEDIA_PORT:-6200}"

work="$(sipp_workdir)"
uas_pid="" bot_pid="" tail_pid=""
stop_tail() {
    if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; tail_pid=""; fi
}
cleanup() {
    stop_tail
    [ -n "$bot_pid" ] && stop_helper "$bot_pid" 10
    [ -n "$uas_pid" ] && stop_helper "$uas_pid" 3
    rm -rf "$work"
    if [ "$take_down" = 1 ]; then "$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" down || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" up

log "building voicebot1 (cargo build --release)"
(cd "$VB1_REPO_DIR" && cargo build --release) || die "cargo build --release failed"
bin="$VB1_TARGET_DIR/release/voicebot1"
[ -x "$bin" ] || die "$bin not found after the build"
config="$(voicebot1_config "$work")"

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

log "placing one ${seconds}-second call with audio to 3308487"
set_scenario_hold "$work/uac-audio.xml" $((seconds * 1000)) $((seconds * 1000))
call_rc=0
(cd "$work" && timeout $((seconds + 90)) sipp 127.0.0.1:"$VB1_SIP_PORT" -sf uac-audio.xml -s 3308487 -i 127.0.0.1 \
    -p "$CALLER_PORT" -mp "$CALLER_MEDIA_PORT" -m 1 -nostdin -recv_timeout 30000 \
    -trace_err -trace_stat -stf "$work/call.csv" -fd 1 >"$work/caller.screen" 2>&1) || call_rc=$?
sleep 2   # let the last events reach voicebot1's log
log "call finished: sipp exit $call_rc, successful calls $(sipp_stat "$work/call.csv" "SuccessfulCall(C)")"

log "stopping voicebot1 (SIGTERM)"
term_and_wait "$bot_pid" 15; bot_rc=$TERM_RC; bot_pid=""
sleep 0.3; stop_tail
log "voicebot1 exit status: $bot_rc"
stop_helper "$uas_pid" 3; uas_pid=""

echo "--- leak check ---"
leak_rc=0
"$VB1_SCRIPTS_DIR/leakcheck.sh" || leak_rc=$?
[ "$take_down" = 1 ] || echo "(the sandbox is still up: scripts/asterisk-sandbox.sh status | cli \"...\" | down)"
[ "$call_rc" -eq 0 ] && [ "$bot_rc" -eq 0 ] && [ "$leak_rc" -eq 0 ]
