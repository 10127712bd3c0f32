# shellcheck shell=bash disable=SC2034  # CALL_RC etc. are read by the scripts that source this
# scripts/lib/talk.sh -- callers who talk to the talk bot (scripts/bots/talk/), for
# scripts/demo.sh --bot talk and scripts/talk-e2e.sh. Sourced after scripts/lib/common.sh.
#
# A call here: SIPp dials 3308488 with "X-VB1-Bot: talk" (the sandbox dialplan runs
# Stasis(voicebot1,inbound,bot=talk,...)), plays a caller's voice made by speech.py caller-pcap
# (espeak-ng, a-law RTP) and optional RFC 4733 keys, while tcpdump captures the caller's SIP and
# RTP ports on lo (both directions). scripts/lib/talk_call.py then tells and judges the call.

TALK_DIR="$VB1_SCRIPTS_DIR/bots/talk"
TALK_PORT="${VB1_TALK_PORT:-8765}"

# Host packages (sip-tester, tcpdump, espeak-ng, sox...) and the bot's venv; sets TALK_PY.
talk_prepare() {
    ensure_host_packages
    ensure_commands espeak-ng:espeak-ng sox:sox tcpdump:tcpdump python3:python3
    TALK_PY="$("$VB1_SCRIPTS_DIR/bots/install.sh" talk | tail -n 1)" || die "scripts/bots/install.sh talk failed"
    [ -x "$TALK_PY" ] || die "scripts/bots/install.sh talk gave no python ($TALK_PY)"
}

# Starts the talk bot on 127.0.0.1:TALK_PORT (its own process group: setsid), logging JSON lines to
# LOGFILE; sets HELPER_PID and TALK_BOT_LOG. Waits until it listens (its recognition processes
# are up then).
start_talk_bot() {  # start_talk_bot LOGFILE
    local i
    TALK_BOT_LOG="$1"
    : >"$TALK_BOT_LOG"
    start_helper talk-bot "$TALK_BOT_LOG.out" "$TALK_PY" "$TALK_DIR/bot.py" \
        --listen "127.0.0.1:$TALK_PORT" --log "$TALK_BOT_LOG"
    for ((i = 0; i < 300; i++)); do
        grep -q '"event":"listening"' "$TALK_BOT_LOG" 2>/dev/null && return 0
        kill -0 "$HELPER_PID" 2>/dev/null || die "the talk bot exited: $(tail -n 5 "$TALK_BOT_LOG.out")"
        sleep 0.1
    done
    die "the talk bot does not listen on 127.0.0.1:$TALK_PORT after 30 s: $(tail -n 5 "$TALK_BOT_LOG.out")"
}

# voicebot1's configuration for the talk bot: [bot] default = "talk" and [bots.talk] (twilio).
talk_config() {  # talk_config DIR
    voicebot1_bot_config "$1" talk "ws://127.0.0.1:$TALK_PORT" 'protocol = "twilio"' 'max_s = 120'
}

# Waits (bounded) until Asterisk holds no channel: one call's legs are gone before the next.
wait_asterisk_empty() {  # wait_asterisk_empty SECONDS
    local i n
    for ((i = 0; i < $1 * 5; i++)); do
        n="$(ari GET /channels 2>/dev/null | jq length 2>/dev/null || echo "?")"
        [ "$n" = 0 ] && return 0
        sleep 0.2
    done
    return 1
}

# One caller talking to the talk bot. Needs voicebot1 (log TALK_VB1_LOG) and the bot (log
# TALK_BOT_LOG) running, and the destination UAS.
#   talk_call DIR NAME [--say SECONDS:TEXT]... [--key MS:DIGIT]... [--length S] [--hold MS]
#             [--voice V] [--kill-bot PGID --kill-after S] [--softphone]
#   --say      the caller says TEXT at SECONDS into its audio (which starts with the call)
#   --key      a key pressed MS after the previous step (the call's start, or the last key)
#   --length   seconds of caller audio (default 16)
#   --hold     the caller hangs up this long after its last key, unless hung up first (20000)
#   --kill-bot SIGKILL process group PGID (the bot) --kill-after S seconds after its first prompt
#   --softphone the caller is pjsip.conf's endpoint "softphone" instead (scripts/sipp/uac-softphone.xml):
#              registers with its password, dials 3308489 ([from-softphone]: bot=talk), unregisters
# Writes DIR/NAME.pcap (the capture), NAME.script.json (caller-pcap's output), NAME.bot.jsonl
# and NAME.vb1.log (this call's lines of both logs), NAME.msg (SIPp's SIP trace). Sets CALL_RC
# (SIPp's exit status) and CALL_KILLED_AT (epoch of the kill, or empty).
talk_call() {
    local dir="$1" name="$2"; shift 2
    local -a says=() keys=()
    local length=16 hold=20000 voice="en-us+klatt4" kill_pgid="" kill_after=3
    local scenario=uac-bot.xml exten=3308488
    local -a auth=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --say) says+=(--script "$2"); shift 2 ;;
            --key) keys+=("$2"); shift 2 ;;
            --length) length="$2"; shift 2 ;;
            --hold) hold="$2"; shift 2 ;;
            --voice) voice="$2"; shift 2 ;;
            --kill-bot) kill_pgid="$2"; shift 2 ;;
            --kill-after) kill_after="$2"; shift 2 ;;
            --softphone) scenario=uac-softphone.xml exten=3308489 auth=(-au softphone -ap softphone-sandbox); shift ;;
            *) die "talk_call: unknown option $1" ;;
        esac
    done
    local caller_port="${CALLER_PORT:-5070}" media_port="${CALLER_MEDIA_PORT:-6000}"
    mkdir -p "$dir/pcap"
    CALL_RC=0 CALL_KILLED_AT=""
    # The caller's voice: a-law RTP, 20 ms packets, silence (0xd5) around the phrases.
    "$TALK_PY" "$TALK_DIR/speech.py" caller-pcap --out "$dir/pcap/$name.pcap" --codec alaw \
        --voice "$voice" --length "$length" "${says[@]}" >"$dir/$name.script.json" \
        || die "speech.py caller-pcap failed"
    # The scenario: uac-bot.xml naming bot talk (or the softphone's), playing this voice, pressing
    # these keys.
    local steps="" k ms digit pcap
    for k in "${keys[@]}"; do
        ms="${k%%:*}" digit="${k#*:}"
        case "$digit" in '*') pcap=dtmf_2833_star.pcap ;; '#') pcap=dtmf_2833_pound.pcap ;; *) pcap="dtmf_2833_$digit.pcap" ;; esac
        cp "/usr/share/sip-tester/$pcap" "$dir/pcap/$pcap" || die "sip-tester's $pcap not found"
        steps+="  <pause milliseconds=\"$ms\"/>\n  <nop><action><exec play_pcap_audio=\"pcap/$pcap\"/></action></nop>\n"
    done
    awk -v steps="$steps" -v voice="pcap/$name.pcap" '
        $0 == "  <!-- KEYS -->" { printf "%s", steps; next }
        { gsub(/@BOT@/, "talk"); gsub(/@ARGS@/, "from=talk-demo"); gsub(/pcap\/g711a\.pcap/, voice); print }' \
        "$VB1_SCRIPTS_DIR/sipp/$scenario" >"$dir/$name.xml"
    set_scenario_hold "$dir/$name.xml" "$hold" "$hold"
    grep -q "play_pcap_audio=\"pcap/$name.pcap\"" "$dir/$name.xml" || die "could not point $scenario at the caller's voice"

    local vb_off bot_off cap_pid sipp_pid i
    vb_off="$(stat -c %s "$TALK_VB1_LOG")" bot_off="$(stat -c %s "$TALK_BOT_LOG")"
    start_helper tcpdump "$dir/$name.tcpdump.err" tcpdump -i lo -n -U -s 0 -w "$dir/$name.pcap" \
        "udp and (port $caller_port or port $media_port)"
    cap_pid=$HELPER_PID
    for ((i = 0; i < 50; i++)); do
        grep -q "listening on" "$dir/$name.tcpdump.err" 2>/dev/null && break
        kill -0 "$cap_pid" 2>/dev/null || die "tcpdump exited: $(cat "$dir/$name.tcpdump.err")"
        sleep 0.1
    done
    (cd "$dir" && exec timeout 120 sipp "127.0.0.1:$VB1_SIP_PORT" -sf "$name.xml" -s "$exten" "${auth[@]}" -i 127.0.0.1 \
        -p "$caller_port" -mp "$media_port" -m 1 -nostdin -recv_timeout 60000 \
        -trace_err -trace_msg -message_file "$name.msg" >"$dir/$name.sipp.out" 2>&1) &
    sipp_pid=$!
    if [ -n "$kill_pgid" ]; then
        # The moment: KILL_AFTER seconds after the bot's first prompt of this call.
        for ((i = 0; i < 100; i++)); do
            tail -c +"$((bot_off + 1))" "$TALK_BOT_LOG" | grep -q '"event":"said"' && break
            sleep 0.1
        done
        sleep "$kill_after"
        CALL_KILLED_AT="$(date +%s.%N)"
        log "SIGKILL to the talk bot's process group $kill_pgid"
        kill -KILL -- "-$kill_pgid" 2>/dev/null || true
        wait "$kill_pgid" 2>/dev/null || true   # reaped here, without the shell's "Killed" notice
    fi
    wait "$sipp_pid" || CALL_RC=$?
    sleep 1   # the last lines of both logs, the capture's last packets
    stop_helper "$cap_pid" 3
    tail -c +"$((vb_off + 1))" "$TALK_VB1_LOG" >"$dir/$name.vb1.log"
    tail -c +"$((bot_off + 1))" "$TALK_BOT_LOG" >"$dir/$name.bot.jsonl"
}

# talk_call_report DIR NAME [talk_call.py options...]: the call's timeline (and checks).
talk_call_report() {
    local dir="$1" name="$2"; shift 2
    local -a killed=()
    [ -z "$CALL_KILLED_AT" ] || killed=(--killed-at "$CALL_KILLED_AT")
    "$TALK_PY" "$VB1_SCRIPTS_DIR/lib/talk_call.py" --capture "$dir/$name.pcap" \
        --caller-sip "${CALLER_PORT:-5070}" --caller-media "${CALLER_MEDIA_PORT:-6000}" \
        --bot-log "$dir/$name.bot.jsonl" --vb1-log "$dir/$name.vb1.log" \
        --script "$dir/$name.script.json" "${killed[@]}" "$@"
}
