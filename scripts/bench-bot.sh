#!/usr/bin/env bash
# bench-bot.sh -- voicebot1's bot bridge (media::BotBridge) in each dialect beside its RTP echo,
# at the same load, in the same run:
#
#   scripts/bench-bot.sh [--quick] [options of `cargo bench --bench bot -- --help`]
#   scripts/bench-bot.sh --setup [--calls 100] [--rate 10] [--bin PATH]
#
# Without --setup, no Asterisk: the `bot` bench (scripts/bench/bot.rs) runs 500 sessions of the
# echo, of the twilio dialect and of the asterisk dialect in turn, each against a fake Asterisk
# (RTP as Asterisk sends it: PT 0, 160 bytes of μ-law every 20 ms) and, for the dialects, a load
# bot (a Rust WebSocket server that speaks the dialect and sends its own audio at 50 frames/s):
#   CPU per session-second       the session threads' (bot-*, echo-*; /proc/PID/task/*/schedstat)
#   RSS per session              the serving process's VmRSS with the sessions, less before
#   latency p50/p99              caller frame in → bot frame out (the echo: its round trip)
#   jitter p50/p99               |spacing − 20 ms| of the RTP voicebot1 plays, per session
#   frames after clear           5 s of audio queued, then clear / FLUSH_MEDIA: old frames that
#                                still arrived after the clear was written
# Rounds repeated; ratios taken within a round, median printed. ~3 min (--quick: ~20 s).
# The load generators run on the same machine: where it cannot keep up (offered% < 95; on 2
# cores the dialects at 500 sessions), a WARNING says the figures are an overload's; --sessions
# 200 then gives clean ratios. --audio caller|bot splits the cost by direction; --baseline PATH
# (the bench built from another commit) adds a before/after in the same run.
# Goals: CPU per session-second twilio <= 2x the echo's, asterisk <= 1.5x; latency p99 <= 1 ms;
# jitter p99 <= 2 ms; frames after a clear <= 1.
#
# --setup: set-up with a bot vs with the echo, --rate calls/s (10) for --calls calls (100) each,
# against the sandbox Asterisk, which must be up (scripts/asterisk-sandbox.sh up; this script
# never brings it up or down) and idle: it waits (up to 10 min) while Asterisk has channels or
# bridges, or another voicebot1 has registered the Stasis app. voicebot1 (--bin, default
# target/release/voicebot1, built here) runs with [bot] default = "echo", then "bench", a
# twilio bot served by the bench's load bot; SIPp callers hold 2-4 s (loadtest.sh). Set-up is
# bench.sh's: the caller's StasisStart to the media channel's ChannelEnteredBridge, Asterisk's
# own timestamps; also voicebot1's "caller and media bridged in N ms" and "bot connected in N ms".
set -euo pipefail
cd "$(dirname "$0")/.."

setup=0 calls=100 rate=10 bin="" args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --setup) setup=1; shift ;;
        --calls) calls="${2:?}"; shift 2 ;;
        --rate) rate="${2:?}"; shift 2 ;;
        --bin) bin="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done

# The bench's executable (the load bot of --setup runs it directly, as a registered helper).
bench_exe() {
    cargo bench --quiet --bench bot --no-run --message-format=json 2>/dev/null \
        | jq -r 'select(.executable != null and .target.name == "bot") | .executable' | tail -n 1
}

if [ "$setup" = 0 ]; then
    cargo bench --quiet --bench bot --no-run
    echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    exec cargo bench --quiet --bench bot -- "${args[@]}"
fi

# --- --setup -------------------------------------------------------------------------------------
source scripts/lib/common.sh
[ ${#args[@]} -eq 0 ] || die "--setup takes --calls, --rate, --bin (not ${args[*]})"
[[ "$calls" =~ ^[1-9][0-9]*$ ]] || die "--calls expects a positive integer"
require_root
ensure_host_packages
command -v python3 >/dev/null || die "python3 is needed to read the event timestamps"
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin="$VB1_TARGET_DIR/release/voicebot1"
fi
[ -x "$bin" ] || die "$bin not built"
exe="$(bench_exe)"
[ -x "$exe" ] || die "the bot bench did not build (cargo bench --bench bot --no-run)"

# The sandbox is shared: wait while someone else's calls or voicebot1 are in it.
sandbox_idle() {
    "$VB1_SCRIPTS_DIR/asterisk-sandbox.sh" status >/dev/null 2>&1 \
        && "$VB1_SCRIPTS_DIR/leakcheck.sh" --quiet >/dev/null 2>&1 \
        && ! ari GET /applications/voicebot1 >/dev/null 2>&1
}
wait_sandbox_idle() {
    local waited=0
    until sandbox_idle; do
        [ "$waited" -lt 600 ] || die "the sandbox stayed busy or down for 10 min (asterisk-sandbox.sh status, leakcheck.sh); try later"
        [ "$waited" -gt 0 ] || log "the sandbox is busy or down (status, leakcheck, or a voicebot1 registered); waiting"
        sleep 15
        waited=$((waited + 15))
    done
}
wait_sandbox_idle

work="$(mktemp -d /tmp/vb1-bench-bot.XXXXXX)"
vb_pid="" bot_pid=""
cleanup() {
    [ -z "$vb_pid" ] || stop_helper "$vb_pid" 10
    [ -z "$bot_pid" ] || stop_helper "$bot_pid" 5
    rm -rf "$work"
}
trap cleanup EXIT

bot_port=28765
while port_busy tcp "$bot_port"; do bot_port=$((bot_port + 1)); done
start_helper loadbot "$work/loadbot.log" "$exe" loadbot twilio "$bot_port"
bot_pid=$HELPER_PID
for _ in $(seq 50); do grep -q '^ready' "$work/loadbot.log" && break; sleep 0.1; done
grep -q '^ready' "$work/loadbot.log" || { cat "$work/loadbot.log" >&2; die "the load bot did not start"; }

config() {  # config DEFAULT_BOT: bench.sh's configuration, plus the bench bot
    cat >"$work/$1.toml" <<EOF
[ari]
url = "http://127.0.0.1:$VB1_ARI_PORT"
username = "$VB1_ARI_USER"
password = "$VB1_ARI_PASS"
app = "voicebot1"

[media]
port_min = 26500
port_max = 26999

[bot]
default = "$1"

[bots.bench]
url = "ws://127.0.0.1:$bot_port/bench"
protocol = "twilio"
format = "ulaw"

[transfer]
endpoint = "PJSIP/4438007@AVAYA-endpoint"

[service]
workers = 8
log_level = "trace"

[metrics]
listen = "127.0.0.1:0"
EOF
    echo "$work/$1.toml"
}

# "median p99 n" of the N in the log's lines "... PATTERN N ms".
log_ms() {  # log_ms LOG PATTERN
    python3 - "$1" "$2" <<'PY'
import re, sys
pat = re.compile(re.escape(sys.argv[2]) + r" (\d+) ms")
d = sorted(int(m.group(1)) for m in (pat.search(l) for l in open(sys.argv[1], errors="replace")) if m)
if not d:
    print("- - 0"); sys.exit()
p = lambda q: d[min(len(d) - 1, int(q * len(d) + 0.999) - 1)]
print(f"{p(0.5)} {p(0.99)} {len(d)}")
PY
}

declare -A events bridged connected refused
for who in echo bench; do
    wait_sandbox_idle
    vlog="$work/voicebot1-$who.log"
    start_helper voicebot1 "$vlog" "$bin" "$(config "$who")"
    vb_pid=$HELPER_PID
    wait_voicebot1_registered "$vb_pid" 30 || { tail -n 20 "$vlog" >&2; die "voicebot1 did not register its Stasis app"; }
    out="$work/load-$who.out"
    # A caller voicebot1's admission control turned away (cause 34: Asterisk answered slowly,
    # e.g. under a colleague's load) fails the run but not the set-up figures of the others.
    "$VB1_SCRIPTS_DIR/loadtest.sh" --calls "$calls" --rate "$rate" --hold 2-4 --dest answer >"$out" 2>&1 \
        || log "WARNING: loadtest.sh failed (bot $who); the set-up figures are those of the calls bridged"
    log "bot $who: $(tail -n 1 "$out")"
    term_and_wait "$vb_pid" 30
    vb_pid=""
    [ "$TERM_RC" = 0 ] || die "voicebot1 exited $TERM_RC after SIGTERM"
    events[$who]="$(setup_from_events "$vlog")"
    bridged[$who]="$(log_ms "$vlog" "caller and media bridged in")"
    connected[$who]="$(log_ms "$vlog" "bot bench connected in")"
    refused[$who]="$(grep -c 'rejected with congestion' "$vlog" || true)"
done
stop_helper "$bot_pid" 5
bot_pid=""
log "load bot:$(grep -o ' ([^)]*connections[^)]*)' "$work/loadbot.log" | tail -n 1)"

row() {  # row LABEL "median p99 n"
    local m p n
    read -r m p n <<<"$2"
    printf '| %s | %s ms | %s ms | %s |\n' "$1" "$m" "$p" "$n"
}
cat <<EOF

voicebot1 set-up, echo vs bot: $("$bin" --version), $calls calls at $rate calls/s each, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%d)
| figure | median | p99 | calls |
| --- | --- | --- | --- |
$(row "echo: StasisStart -> media in bridge (Asterisk timestamps)" "${events[echo]}")
$(row "twilio bot: StasisStart -> media in bridge (Asterisk timestamps)" "${events[bench]}")
$(row "echo: \"caller and media bridged in\" (voicebot1)" "${bridged[echo]}")
$(row "twilio bot: \"caller and media bridged in\" (voicebot1)" "${bridged[bench]}")
$(row "twilio bot: \"bot connected in\" (voicebot1)" "${connected[bench]}")
callers not taken by admission control: echo ${refused[echo]}, bot ${refused[bench]}
EOF
read -r em _ _ <<<"${events[echo]}"
read -r bm _ _ <<<"${events[bench]}"
if [[ "$em" =~ ^[0-9]+$ && "$bm" =~ ^[0-9]+$ ]]; then
    echo "set-up median, bot - echo: $((bm - em)) ms"
fi
