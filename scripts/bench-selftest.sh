#!/usr/bin/env bash
# bench-selftest.sh -- checks the test bench itself, without voicebot1:
#   1. a SIPp call with G.711 a-law audio to the Echo() extension (600)
#      completes, and the caller receives RTP back from Asterisk (counted with
#      tcpdump on lo, on the caller's media port);
#   2. leakcheck.sh reports zero after that call, reports a deliberately left
#      channel pair and bridge (ids vb1-selftest-*), and zero again once they
#      are deleted;
#   3. the caller scenario counts crossing BYEs (glare) as a normal end
#      (against scripts/sipp/uas-glare.xml; no Asterisk involved).
# Needs the sandbox up (scripts/asterisk-sandbox.sh up).
#
#   scripts/bench-selftest.sh [--exten 600]    (or VB1_SELFTEST_EXTEN=600)
# Pointing it at an extension that does not exist must make it fail; that
# is how the self-test itself is tested.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

exten="${VB1_SELFTEST_EXTEN:-600}"
while [ $# -gt 0 ]; do
    case "$1" in
        --exten) exten="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
HOLD_MS=4000          # call length; g711a.pcap plays 30 ms frames
MIN_RTP_BACK=50       # 4 s of echo is ~130 packets; 50 leaves room for start-up
CALLER_PORT="${VB1_SELFTEST_SIP_PORT:-5090}"
MEDIA_PORT="${VB1_SELFTEST_MEDIA_PORT:-6400}"

require_root
ensure_host_packages
ari GET /asterisk/info >/dev/null 2>&1 || die "ARI does not answer on $VB1_ARI_URL: run scripts/asterisk-sandbox.sh up first"

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

work="$(sipp_workdir)"
tcpdump_pid=""
cleanup() {
    [ -n "$tcpdump_pid" ] && stop_helper "$tcpdump_pid" 3
    # Never leave the deliberate leak behind, whatever happened.
    ari DELETE /channels/vb1-selftest-1 >/dev/null 2>&1 || true
    ari DELETE /bridges/vb1-selftest-bridge >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. Echo call with audio -------------------------------------------------
set_scenario_hold "$work/uac-hold.xml" "$HOLD_MS" "$HOLD_MS"
# Capture both directions on the caller's media port; -U writes each packet
# at once so nothing is lost when tcpdump is stopped.
start_helper tcpdump "$work/tcpdump.err" tcpdump -i lo -n -U -w "$work/rtp.pcap" udp port "$MEDIA_PORT"
tcpdump_pid=$HELPER_PID
for _ in $(seq 50); do grep -q "listening on" "$work/tcpdump.err" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$work/tcpdump.err" || die "tcpdump did not start on lo: $(head -n1 "$work/tcpdump.err")"

log "calling $exten from 127.0.0.1:$CALLER_PORT (media $MEDIA_PORT) for $((HOLD_MS / 1000)) s"
sipp_rc=0
(cd "$work" && timeout 60 sipp 127.0.0.1:"$VB1_SIP_PORT" -sf uac-hold.xml -s "$exten" -i 127.0.0.1 \
    -p "$CALLER_PORT" -mp "$MEDIA_PORT" -m 1 -nostdin -recv_timeout 10000 -timeout 45s -timeout_error \
    -trace_err -trace_stat -stf "$work/call.csv" -fd 1 >"$work/sipp.screen" 2>&1) || sipp_rc=$?
sleep 0.5
stop_helper "$tcpdump_pid" 3; tcpdump_pid=""

ok=$(sipp_stat "$work/call.csv" "SuccessfulCall(C)")
if [ "$sipp_rc" -eq 0 ] && [ "$ok" -eq 1 ]; then
    pass "SIPp call to $exten completed (INVITE/200/ACK, audio, BYE/200)"
else
    fail "SIPp call to $exten did not complete (sipp exit $sipp_rc, successful calls $ok): $(grep -v 'The following events' "$work"/*_errors.log 2>/dev/null | grep -v 'delete FD from epoll' | head -n1 | cut -c1-200)"
fi
# Packets towards the caller's media port came from Asterisk's RTP range.
rtp_back=$(tcpdump -r "$work/rtp.pcap" -n "udp and dst port $MEDIA_PORT" 2>/dev/null | wc -l)
rtp_sent=$(tcpdump -r "$work/rtp.pcap" -n "udp and src port $MEDIA_PORT" 2>/dev/null | wc -l)
if [ "$rtp_back" -ge "$MIN_RTP_BACK" ]; then
    pass "caller received $rtp_back RTP packets back from Asterisk (sent $rtp_sent)"
else
    fail "caller received $rtp_back RTP packets back from Asterisk (sent $rtp_sent; need >= $MIN_RTP_BACK)"
fi

# --- 2. Leak check -------------------------------------------------------------
lk=$("$VB1_SCRIPTS_DIR/leakcheck.sh" 2>&1) && lrc=0 || lrc=$?
if [ "$lrc" -eq 0 ]; then pass "leakcheck after the call: $(tail -n1 <<<"$lk")"; else fail "leakcheck after the call: $(tail -n1 <<<"$lk")"; fi

# A channel pair that stays up (Local/600 running Echo on both halves) and an
# empty bridge: what a leaky application leaves behind.
ari POST "/channels?endpoint=Local/600@from-callers&context=from-callers&extension=600&priority=1&channelId=vb1-selftest-1&otherChannelId=vb1-selftest-2" >/dev/null \
    || die "could not originate the deliberate leak channel over ARI"
ari POST "/bridges?type=mixing&bridgeId=vb1-selftest-bridge&name=vb1-selftest" >/dev/null \
    || die "could not create the deliberate leak bridge over ARI"
sleep 0.5
lk=$("$VB1_SCRIPTS_DIR/leakcheck.sh" 2>&1) && lrc=0 || lrc=$?
if [ "$lrc" -eq 1 ] && grep -q "vb1-selftest-1" <<<"$lk" && grep -q "vb1-selftest-bridge" <<<"$lk"; then
    pass "leakcheck reports the deliberate leak (exit 1): $(tail -n1 <<<"$lk")"
else
    fail "leakcheck did not report the deliberate leak (exit $lrc): $(tail -n1 <<<"$lk")"
fi
lk=$("$VB1_SCRIPTS_DIR/leakcheck.sh" --prefix vb1-selftest-none 2>&1) && lrc=0 || lrc=$?
if [ "$lrc" -eq 0 ]; then pass "leakcheck --prefix ignores other ids"; else fail "leakcheck --prefix counted other ids: $(tail -n1 <<<"$lk")"; fi

ari DELETE /channels/vb1-selftest-1 >/dev/null 2>&1 || true   # hangs up both Local halves
ari DELETE /bridges/vb1-selftest-bridge >/dev/null 2>&1 || true
clean=0
for _ in $(seq 20); do
    "$VB1_SCRIPTS_DIR/leakcheck.sh" --quiet >/dev/null 2>&1 && { clean=1; break; }
    sleep 0.25
done
if [ "$clean" = 1 ]; then pass "leakcheck back to zero after cleaning up"; else fail "leak still there after DELETE: $("$VB1_SCRIPTS_DIR/leakcheck.sh" 2>&1 | tail -n1)"; fi

# --- 3. Glare -------------------------------------------------------------------
# A caller and the far end hanging up at the same moment is a normal end of a call (it happens
# in load runs: the destination hangs up as the caller's hold time ends). uas-glare.xml answers
# the caller's BYE with a BYE of its own first, then the 200; the caller must count it as ok.
glare_port=5290
cp "$work/uac-hold.xml" "$work/uac-glare.xml"
set_scenario_hold "$work/uac-glare.xml" 500 500
(cd "$work" && exec timeout 30 sipp -sf uas-glare.xml -i 127.0.0.1 -p "$glare_port" -mp 7300 -m 3 -nostdin \
    -trace_err >"$work/glare-uas.out" 2>&1) &
glare_uas=$!
wait_udp_port "$glare_port" 10 "$glare_uas" || true
if (cd "$work" && timeout 30 sipp "127.0.0.1:$glare_port" -sf uac-glare.xml -s 3308487 -i 127.0.0.1 -p 5291 -mp 6300 \
        -m 3 -r 3 -nostdin -trace_err >"$work/glare-uac.out" 2>&1); then
    pass "callers count crossing BYEs (glare) as a normal end (3 calls)"
else
    fail "callers failed on crossing BYEs: $(grep -m1 -o 'Aborting call[^:]*: [^,]*' "$work"/uac-glare_*_errors.log 2>/dev/null)"
fi
wait "$glare_uas" 2>/dev/null || true

echo "bench-selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
