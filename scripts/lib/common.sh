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
# Where cargo writes its builds: CARGO_TARGET_DIR when set (relative to the
# repository, where the scripts run cargo), else target/.
VB1_TARGET_DIR="${CARGO_TARGET_DIR:-$VB1_REPO_DIR/target}"
case "$VB1_TARGET_DIR" in /*) ;; *) VB1_TARGET_DIR="$VB1_REPO_DIR/$VB1_TARGET_DIR" ;; esac

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it chroots, binds ports, captures on lo)"
}

# Install missing host tools. apt-get update runs at most once per call.
ensure_host_packages() {
    local -a missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    # sipp, and the g711a.pcap the SIPp scenarios replay (sipp_workdir).
    { command -v sipp >/dev/null && [ -r /usr/share/sip-tester/g711a.pcap ]; } || missing+=(sip-tester)
    command -v tcpdump >/dev/null     || missing+=(tcpdump)
    command -v curl >/dev/null        || missing+=(curl)
    command -v jq >/dev/null          || missing+=(jq)
    command -v openssl >/dev/null     || missing+=(openssl)
    command -v ss >/dev/null          || missing+=(iproute2)
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_install "${missing[@]}"
}

# Install the Debian packages that provide the commands missing here.
ensure_commands() {  # ensure_commands COMMAND:PACKAGE...
    local spec
    local -a missing=()
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_install "${missing[@]}"
}

apt_install() {  # apt_install PACKAGE...
    [ "$(id -u)" -eq 0 ] || die "missing host packages: $* (install them, or run as root to have them installed)"
    log "installing host packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed (mirror unreachable?)"
    apt-get install -y -qq "$@" >/dev/null 2>&1 || die "apt-get install $* failed"
}

# Kamailio from Debian (bookworm: 5.6, the dispatcher module in the main package), for
# cluster.sh. The package would start a kamailio service listening on port 5060 of every
# address (the sandbox's included): it is installed with a policy-rc.d that forbids starting
# services (unless the machine has one already), and where systemd runs its unit is disabled.
ensure_kamailio() {
    local guard=0 rc=0
    command -v kamailio >/dev/null && command -v kamcmd >/dev/null && return 0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# voicebot1 bench: no service starts while kamailio is installed.\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        guard=1
    fi
    (apt_install kamailio) || rc=$?
    [ "$guard" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || exit "$rc"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now kamailio.service >/dev/null 2>&1 || true
    fi
}

# --- Debian roots (chroots built with debootstrap) ---------------------------
# Shared by asterisk-sandbox.sh (the Asterisk root) and release-check.sh (a
# plain Debian 11 root the release is tried in).

# The Debian mirror this machine's apt already uses (never a hard-coded host).
mirror_uri() {
    local uri=""
    if [ -n "${VB1_MIRROR:-}" ]; then echo "$VB1_MIRROR"; return; fi
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        # First "URIs:" of a stanza that is not the security archive.
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/debian.sources \
               | grep -v -- '-security' | head -n1 || true)"
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|ftp|file):/) { print $i; break } }' \
               /etc/apt/sources.list | grep -v -- '-security' | head -n1 || true)"
    fi
    [ -n "$uri" ] || die "no Debian mirror URI found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set VB1_MIRROR)"
    echo "$uri"
}

# Mount points at or below a directory, deepest first.
mounts_under() {
    local dir="$1"
    awk -v d="$dir" '{ m = $2; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' /proc/mounts | sort -r
}

# Unmount everything below a directory. Must happen before any copy or rm of
# the root: a live /proc or a bound /dev inside it must never be archived or
# deleted through.
unmount_under() {
    local dir="$1" m
    for m in $(mounts_under "$dir"); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || die "cannot unmount $m"
    done
    [ -z "$(mounts_under "$dir")" ] || die "still mounted below $dir: $(mounts_under "$dir" | tr '\n' ' ')"
}

safe_rm_tree() {
    local dir="$1"
    [ -e "$dir" ] || return 0
    unmount_under "$dir"
    rm -rf --one-file-system "$dir"
}

# Build a Debian root with debootstrap (minbase) in DEST.building, make sure
# nothing is left mounted in it, move it to DEST and write MARKER last, so that
# a root with a marker is always complete.
build_debian_root() {  # build_debian_root WHAT SUITE PACKAGES DEST MARKER MARKER_CONTENT LOG
    local what="$1" suite="$2" pkgs="$3" dest="$4" marker="$5" content="$6" blog="$7"
    local tmp="$4.building" uri t0=$SECONDS
    local -a include=()
    [ -n "$pkgs" ] && include=(--include="$pkgs")
    uri="$(mirror_uri)"
    mkdir -p "$(dirname "$dest")"
    rm -f "$marker"
    safe_rm_tree "$tmp"
    safe_rm_tree "$dest"
    log "building $what: debootstrap $suite (${pkgs:-minbase only}) from $uri (about a minute; log: $blog)"
    if ! debootstrap --variant=minbase "${include[@]}" "$suite" "$tmp" "$uri" >"$blog" 2>&1; then
        unmount_under "$tmp" || true
        die "debootstrap of Debian $suite from $uri failed: $(grep -E '^(E|W):' "$blog" | tail -n1 || tail -n1 "$blog") (full log: $blog)"
    fi
    # debootstrap mounts /proc and /sys while it installs; make sure nothing is
    # left mounted before the tree is moved and reused.
    unmount_under "$tmp"
    # Keep the root small and deterministic.
    chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
    mv "$tmp" "$dest"
    echo "$content" >"$marker"
    log "root built in $((SECONDS - t0)) s ($(du -sh --one-file-system "$dest" | cut -f1))"
}

# --- Asterisk roots (asterisk-sandbox.sh, cluster.sh) ------------------------

# What goes into the Asterisk root of a version. Changing the package list
# changes the completion marker's content, which makes the next "up" rebuild it.
VB1_ASTERISK_ROOT_PACKAGES="asterisk,asterisk-modules,asterisk-config"
asterisk_root_suite() {  # asterisk_root_suite VERSION
    case "$1" in
        22) echo sid ;;
        # Debian 11: Asterisk 16.28, glibc 2.31.
        16) echo bullseye ;;
        *) echo "error: Asterisk version $1 is not in the bench (16 or 22)" >&2; return 1 ;;
    esac
}
asterisk_root_marker_content() {  # asterisk_root_marker_content VERSION
    echo "suite=$(asterisk_root_suite "$1") packages=$VB1_ASTERISK_ROOT_PACKAGES"
}
asterisk_root_complete() {  # asterisk_root_complete VERSION
    local root
    root="$(sandbox_root "$1")" || return 1
    [ -f "$root.complete" ] && [ "$(cat "$root.complete")" = "$(asterisk_root_marker_content "$1")" ] \
        && [ -x "$root/usr/sbin/asterisk" ]
}
build_asterisk_root() {  # build_asterisk_root VERSION
    local root
    root="$(sandbox_root "$1")" || exit 2
    build_debian_root "the Asterisk root" "$(asterisk_root_suite "$1")" "$VB1_ASTERISK_ROOT_PACKAGES" "$root" \
        "$root.complete" "$(asterisk_root_marker_content "$1")" "$VB1_STATE_DIR/debootstrap.log"
}

# Device nodes Asterisk needs. Created as real nodes in the root (no bind
# mount of the host's /dev, so there is nothing to unmount or to delete through).
ensure_dev_nodes() {  # ensure_dev_nodes ROOT
    local root="$1" spec name major minor
    mkdir -p "$root/dev"
    for spec in null:1:3 zero:1:5 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r name major minor <<<"$spec"
        if [ ! -c "$root/dev/$name" ]; then
            rm -f "$root/dev/$name"
            mknod -m 666 "$root/dev/$name" c "$major" "$minor" \
                || die "cannot create $root/dev/$name (mknod failed)"
        fi
    done
}

# Replace one exact line of a config file and check the result, so that a
# changed sample file cannot silently keep the default port.
subst_line() {  # subst_line FILE OLD NEW
    local f="$1" old="$2" new="$3"
    grep -qxF -- "$old" "$f" || die "$(basename "$f"): expected line '$old' not found (the bench rewrites it)"
    sed -i "s|^${old}\$|${new}|" "$f"
    grep -qxF -- "$new" "$f" || die "$(basename "$f"): could not set '$new'"
}

# --- Release (release.sh, release-check.sh) ----------------------------------

# The package version, from Cargo.toml's [package] section.
voicebot1_version() {
    local v
    v="$(awk '/^\[/ { in_pkg = ($0 == "[package]") } in_pkg && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' \
         "$VB1_REPO_DIR/Cargo.toml")"
    [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] || die "no usable [package] version in Cargo.toml (got '$v')"
    echo "$v"
}

# What release.sh writes for VERSION (a "-pre" suffix becomes "~pre": it sorts
# before the release in dpkg and rpm, and rpm allows no "-" in a version).
# Sets REL_NAME (the tarball's top directory), REL_TARBALL, REL_DEB, REL_RPM.
release_names() {  # release_names VERSION
    local pkg_version="${1//-/\~}"
    REL_NAME="voicebot1-$1-x86_64-linux-gnu"
    REL_TARBALL="$REL_NAME.tar.gz"
    REL_DEB="voicebot1_${pkg_version}_amd64.deb"
    REL_RPM="voicebot1-${pkg_version}-1.x86_64.rpm"
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
port_busy() {  # port_busy udp|tcp PORT [ADDR]: in use on ADDR (or on a wildcard), or on any address
    local proto="$1" port="$2" addr="${3:-}" flag
    [ "$proto" = udp ] && flag=-lnu || flag=-lnt
    if [ -z "$addr" ]; then
        ss -H $flag "sport = :$port" 2>/dev/null | grep -q .
    else
        ss -H $flag "sport = :$port" 2>/dev/null | awk -v a="$addr:$port" -v p=":$port" \
            '{ l = $4 } l == a || l == "0.0.0.0" p || l == "*" p || l == "[::]" p || l == "[::ffff:" a { f = 1 } END { exit !f }'
    fi
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

# A copy of voicebot1_config's file whose callers talk to a WebSocket bot: [bot] default = NAME,
# and a [bots.NAME] table (url = URL, then any further "key = value" lines given).
voicebot1_bot_config() {  # voicebot1_bot_config DIR NAME URL [TOML_LINE...]
    local dir="$1" name="$2" url="$3" src out; shift 3
    src="$(voicebot1_config "$dir")" || return 1
    out="$dir/voicebot1-bot-$name.toml"
    awk -v name="$name" '
        /^\[/ { section = $0 }
        section == "[bot]" && $0 ~ /^default = / { print "default = \"" name "\""; done = 1; next }
        { print }
        END { if (!done) exit 1 }' "$src" >"$out" || die "$src has no [bot] default line to change"
    { echo; echo "[bots.$name]"; echo "url = \"$url\""; local line; for line in "$@"; do echo "$line"; done; } >>"$out"
    echo "$out"
}

# Starts one of the reference bots (scripts/bots/reference/, its venv built or reused by
# scripts/bots/install.sh) on 127.0.0.1:PORT in the background; sets HELPER_PID. Waits until it
# listens.
start_reference_bot() {  # start_reference_bot twilio|asterisk PORT LOGFILE [BOT_OPTIONS...]
    local dialect="$1" port="$2" logf="$3" py i; shift 3
    py="$("$VB1_SCRIPTS_DIR/bots/install.sh" reference | tail -n 1)" || die "scripts/bots/install.sh reference failed"
    start_helper "$dialect-bot" "$logf.out" "$py" "$VB1_SCRIPTS_DIR/bots/reference/${dialect}_bot.py" \
        --listen "127.0.0.1:$port" --log "$logf" "$@"
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$HELPER_PID" 2>/dev/null || die "the $dialect reference bot exited: $(tail -n 3 "$logf.out")"
        sleep 0.1
    done
    die "the $dialect reference bot does not listen on 127.0.0.1:$port"
}

# Wait (bounded) until voicebot1's Stasis application is registered in Asterisk.
wait_voicebot1_registered() {  # wait_voicebot1_registered PID SECONDS
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        if ari GET /applications/voicebot1 >/dev/null 2>&1; then
            # Registered, but maybe by another voicebot1 while this one is refusing to start
            # (its metrics port taken, say): it must still be running a moment later.
            sleep 1
            kill -0 "$1" 2>/dev/null && return 0
            echo "error: voicebot1 (pid $1) exited; the Stasis app is registered by another process" >&2
            return 1
        fi
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# Set-up per call from Asterisk's own event timestamps in voicebot1's trace log (every ARI event
# is logged with them): the caller's StasisStart to its media channel's ChannelEnteredBridge.
# Prints "median p99 n" (ms; "- - 0" when no call was bridged). Needs python3.
setup_from_events() {  # setup_from_events LOG
    python3 - "$1" <<'PY'
import json, re, sys
from datetime import datetime
def ts(t):
    return datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
start, bridged = {}, {}
for line in open(sys.argv[1], errors="replace"):
    i = line.find("ARI event: ")
    if i < 0:
        continue
    try:
        ev = json.loads(line[i + 11:])
    except ValueError:
        continue
    ch = ev.get("channel", {}).get("id", "")
    if ev.get("type") == "StasisStart" and (ev.get("args") or [None])[0] == "inbound":
        start.setdefault(ch, ts(ev["timestamp"]))
    elif ev.get("type") == "ChannelEnteredBridge":
        m = re.fullmatch(r"voicebot1-(.+)-media", ch)
        if m:
            bridged.setdefault(m.group(1), ts(ev["timestamp"]))
d = sorted((bridged[c] - start[c]) * 1000 for c in bridged if c in start)
if not d:
    print("- - 0"); sys.exit()
p = lambda q: d[min(len(d) - 1, int(q * len(d) + 0.999) - 1)]
print(f"{p(0.5):.0f} {p(0.99):.0f} {len(d)}")
PY
}

# CPU time (user + system) a process has used so far, in ms, from /proc (0 once it is gone).
cpu_ms() {  # cpu_ms PID
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# CPU time the whole machine has been busy so far (every core, everything but idle and iowait),
# in ms, from /proc/stat: beside Asterisk's and voicebot1's, what the rest (SIPp) took.
machine_busy_ms() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%d", ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / hz; exit }' /proc/stat
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
