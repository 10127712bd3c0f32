# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file
# scripts/lib/common.sh -- shared settings and helpers for the voicebot1 bench.
# Sourced by the scripts in scripts/; not meant to be run.

# Ports (movable so the bench can run beside something else on the machine).
# Precedence: environment, then the ports the running sandbox was started
# with (so "status", "loadtest.sh"... follow an "up" with moved ports), then
# the defaults.
if [ -r "${VB1_RUN_DIR:-/run/voicebot1-sandbox}/ports" ]; then
    while read -r _kv; do
        case "$_kv" in
            VB1_ARI_PORT=[0-9]*)  [ -n "${VB1_ARI_PORT:-}" ]  || VB1_ARI_PORT="${_kv#*=}" ;;
            VB1_SIP_PORT=[0-9]*)  [ -n "${VB1_SIP_PORT:-}" ]  || VB1_SIP_PORT="${_kv#*=}" ;;
            VB1_DEST_PORT=[0-9]*) [ -n "${VB1_DEST_PORT:-}" ] || VB1_DEST_PORT="${_kv#*=}" ;;
            VB1_ARI_TLS_PORT=[0-9]*) [ -n "${VB1_ARI_TLS_PORT:-}" ] || VB1_ARI_TLS_PORT="${_kv#*=}" ;;
        esac
    done < <(tr ' ' '\n' <"${VB1_RUN_DIR:-/run/voicebot1-sandbox}/ports")
    unset _kv
fi
VB1_ARI_PORT="${VB1_ARI_PORT:-8088}"
VB1_SIP_PORT="${VB1_SIP_PORT:-5060}"
VB1_DEST_PORT="${VB1_DEST_PORT:-5080}"
# ARI over TLS (https/wss), with a certificate made at every "up".
VB1_ARI_TLS_PORT="${VB1_ARI_TLS_PORT:-8089}"

# ARI credentials of the sample configuration (conf/asterisk/ari.conf).
VB1_ARI_USER="${VB1_ARI_USER:-voicebot1}"
VB1_ARI_PASS="${VB1_ARI_PASS:-voicebot1-sandbox}"
VB1_ARI_URL="http://127.0.0.1:${VB1_ARI_PORT}/ari"

# Where the sandbox lives. The root (Debian sid + Asterisk) persists across
# runs so that a second "up" takes seconds; run-time state (pid files) does not.
VB1_STATE_DIR="${VB1_STATE_DIR:-/var/lib/voicebot1-sandbox}"
VB1_RUN_DIR="${VB1_RUN_DIR:-/run/voicebot1-sandbox}"
# Which Asterisk: 22 (Debian sid, the default) or 16 (Debian 11 bullseye's 16.28).
# Precedence: environment, then the version the running sandbox was started
# with (so "status", "cli", the load scripts... follow an "up --asterisk 16").
if [ -z "${VB1_ASTERISK:-}" ] && [ -r "$VB1_RUN_DIR/version" ]; then
    VB1_ASTERISK="$(cat "$VB1_RUN_DIR/version")"
fi
VB1_ASTERISK="${VB1_ASTERISK:-22}"
# Each version has its own root, kept between runs (22's is "root" for the caches made before
# 16 was in the bench).
sandbox_root() {  # sandbox_root VERSION
    case "$1" in
        22) echo "$VB1_STATE_DIR/root" ;;
        16) echo "$VB1_STATE_DIR/root-16" ;;
        *) echo "error: Asterisk version $1 is not in the bench (16 or 22)" >&2; return 1 ;;
    esac
}
VB1_ROOT="$(sandbox_root "$VB1_ASTERISK")" || exit 2
# Helper processes (SIPp, tcpdump) write their pid here so "down" can stop them.
VB1_HELPER_DIR="$VB1_RUN_DIR/helpers"

VB1_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VB1_REPO_DIR="$(cd "$VB1_SCRIPTS_DIR/.." && pwd)"

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it chroots, binds ports, captures on lo)"
}

# Install missing host tools. apt-get update runs at most once per call.
ensure_host_packages() {
    local -a missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v sipp >/dev/null        || missing+=(sip-tester)
    command -v tcpdump >/dev/null     || missing+=(tcpdump)
    command -v curl >/dev/null        || missing+=(curl)
    command -v jq >/dev/null          || missing+=(jq)
    command -v openssl >/dev/null     || missing+=(openssl)
    command -v ss >/dev/null          || missing+=(iproute2)
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed (mirror unreachable?)"
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || die "apt-get install ${missing[*]} failed"
}

# curl against ARI; prints the body, fails on HTTP errors.
ari() {  # ari METHOD PATH [curl args...]
    local method="$1" path="$2"; shift 2
    curl -sS --fail --max-time 10 -u "$VB1_ARI_USER:$VB1_ARI_PASS" -X "$method" "$VB1_ARI_URL$path" "$@"
}

# The g711a.pcap that ships with Debian's sip-tester. SIPp scenarios refer to
# it as pcap/g711a.pcap relative to the working directory, so callers run SIPp
# from a directory that has it (see sipp_workdir).
VB1_PCAP_SRC="${VB1_PCAP_SRC:-/usr/share/sip-tester/g711a.pcap}"

# Make a scratch directory with pcap/g711a.pcap and the scenarios in it.
sipp_workdir() {
    local d
    d="$(mktemp -d /tmp/vb1-sipp.XXXXXX)"
    mkdir -p "$d/pcap"
    [ -r "$VB1_PCAP_SRC" ] || die "$VB1_PCAP_SRC not found (package sip-tester)"
    cp "$VB1_PCAP_SRC" "$d/pcap/g711a.pcap"
    cp "$VB1_SCRIPTS_DIR"/sipp/*.xml "$d/"
    echo "$d"
}

# Start a helper in the background, detached from the terminal, and register
# its pid so that "asterisk-sandbox.sh down" stops it even if we die.
# Usage: start_helper NAME LOGFILE cmd args...   (sets HELPER_PID)
start_helper() {
    local name="$1" logf="$2"; shift 2
    mkdir -p "$VB1_HELPER_DIR"
    setsid "$@" </dev/null >"$logf" 2>&1 &
    HELPER_PID=$!
    echo "$HELPER_PID" >"$VB1_HELPER_DIR/$name.$HELPER_PID.pid"
}

# Stop a helper started with start_helper: TERM, then KILL after a grace time.
stop_helper() {  # stop_helper PID [grace_seconds]
    local pid="$1" grace="${2:-5}" i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$VB1_HELPER_DIR"/*."$pid".pid
}

# Is a UDP/TCP port on 127.0.0.1 (or any address) already bound?
port_busy() {  # port_busy udp|tcp PORT
    local proto="$1" port="$2" flag
    [ "$proto" = udp ] && flag=-lnu || flag=-lnt
    ss -H $flag "sport = :$port" 2>/dev/null | grep -q .
}

# Rewrite the hold time of a scenario (the <sample assign_to="hold"> line,
# uniform between min and max milliseconds) and check that it took.
set_scenario_hold() {  # set_scenario_hold FILE MIN_MS MAX_MS
    local f="$1" mn="$2" mx="$3"
    grep -q '<sample assign_to="hold" distribution="uniform" min="[0-9]*" max="[0-9]*"/>' "$f" \
        || die "$(basename "$f") has no hold time line to rewrite"
    sed -i "s|<sample assign_to=\"hold\" distribution=\"uniform\" min=\"[0-9]*\" max=\"[0-9]*\"/>|<sample assign_to=\"hold\" distribution=\"uniform\" min=\"$mn\" max=\"$mx\"/>|" "$f"
    grep -q "<sample assign_to=\"hold\" distribution=\"uniform\" min=\"$mn\" max=\"$mx\"/>" "$f" \
        || die "could not set the hold time of $(basename "$f")"
}

# Parse "A-B" (seconds, may be fractional) into milliseconds: sets RANGE_MIN_MS RANGE_MAX_MS.
parse_range_s() {  # parse_range_s OPTION VALUE
    local opt="$1" v="$2" a b
    [[ "$v" =~ ^([0-9]+(\.[0-9]+)?)(-([0-9]+(\.[0-9]+)?))?$ ]] || die "$opt expects MIN-MAX in seconds (e.g. 1-12), got '$v'"
    a="${BASH_REMATCH[1]}"; b="${BASH_REMATCH[4]:-$a}"
    RANGE_MIN_MS="$(awk -v x="$a" 'BEGIN { printf "%d", x * 1000 }')"
    RANGE_MAX_MS="$(awk -v x="$b" 'BEGIN { printf "%d", x * 1000 }')"
    [ "$RANGE_MIN_MS" -le "$RANGE_MAX_MS" ] || die "$opt: MIN must not exceed MAX ('$v')"
}

# Value of a column of the last line of a SIPp statistics csv (-trace_stat).
sipp_stat() {  # sipp_stat FILE COLUMN_NAME
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
                           { last = $0 } END { if (!c || last == "") { print 0; exit } split(last, a, ";"); print a[c] + 0 }' "$1" 2>/dev/null || echo 0
}

# Wait until a UDP port is bound (a helper SIPp is listening), bounded.
wait_udp_port() {  # wait_udp_port PORT SECONDS PID
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_busy udp "$1" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# voicebot1's configuration for the current ARI port: conf/voicebot1.toml as
# is for 8088, else a copy in DIR whose [ari] url line points at VB1_ARI_PORT.
# Prints the path to use.
voicebot1_config() {  # voicebot1_config DIR
    local src="$VB1_REPO_DIR/conf/voicebot1.toml" out="$1/voicebot1.toml"
    [ -f "$src" ] || die "$src not found"
    if [ "$VB1_ARI_PORT" = 8088 ]; then echo "$src"; return; fi
    awk -v port="$VB1_ARI_PORT" '
        /^\[/ { section = $0 }
        section == "[ari]" && $0 == "url = \"http://127.0.0.1:8088\"" { print "url = \"http://127.0.0.1:" port "\""; done = 1; next }
        { print }
        END { if (!done) exit 1 }' "$src" >"$out" \
        || die "conf/voicebot1.toml has no [ari] line 'url = \"http://127.0.0.1:8088\"' to point at port $VB1_ARI_PORT"
    echo "$out"
}

# Wait (bounded) until voicebot1's Stasis application is registered in Asterisk.
wait_voicebot1_registered() {  # wait_voicebot1_registered PID SECONDS
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        ari GET /applications/voicebot1 >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# SIGTERM a process we started and wait (bounded) for it; sets TERM_RC to
# its exit status (124 if it had to be killed). Not to be called in $(...):
# only this shell can wait for its own child.
term_and_wait() {  # term_and_wait PID SECONDS
    local pid="$1" i rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rc=124
    else
        wait "$pid" 2>/dev/null || rc=$?
    fi
    rm -f "$VB1_HELPER_DIR"/*."$pid".pid
    TERM_RC=$rc
}
