#!/usr/bin/env bash
# asterisk-sandbox.sh -- a real Asterisk (Debian sid's package) in a chroot on
# 127.0.0.1, configured with exactly the files in conf/asterisk/, for testing
# voicebot1 against.
#
#   scripts/asterisk-sandbox.sh up [--asterisk 16|22]
#                                        build the root (first time only), install
#                                        conf/asterisk/, start Asterisk, wait for ARI.
#                                        22: Debian sid's package (default); 16: Debian 11
#                                        bullseye's 16.28 (also VB1_ASTERISK=16)
#   scripts/asterisk-sandbox.sh down     stop Asterisk and every helper (SIPp, tcpdump)
#   scripts/asterisk-sandbox.sh status   up/down, version, channel and bridge counts
#   scripts/asterisk-sandbox.sh cli "pjsip show endpoints"
#   scripts/asterisk-sandbox.sh logs [-f]
#
# Ports: VB1_ARI_PORT (8088), VB1_SIP_PORT (5060), VB1_DEST_PORT (5080, the
# SIPp "Avaya side" behind AVAYA-endpoint), VB1_ARI_TLS_PORT (8089, ARI over
# TLS; its CA certificate is /run/voicebot1-sandbox/ari-ca.pem while up).
# Root: /var/lib/voicebot1-sandbox.
# VB1_REBUILD=1 forces a fresh debootstrap.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# "up --asterisk 16|22" (or VB1_ASTERISK) picks the version; the other commands
# follow the running one (see scripts/lib/common.sh).
if [ "${1:-}" = up ] && [ "${2:-}" = --asterisk ]; then
    VB1_ASTERISK="${3:?up --asterisk expects 16 or 22}"
    VB1_ROOT="$(sandbox_root "$VB1_ASTERISK")" || exit 2
    set -- up
fi

UP_TIMEOUT="${VB1_UP_TIMEOUT:-60}"
AST_PIDFILE="$VB1_RUN_DIR/asterisk.pid"
AST_OUT="$VB1_RUN_DIR/asterisk.console.log"

install_config() {
    local src="$VB1_REPO_DIR/conf/asterisk" etc="$VB1_ROOT/etc/asterisk" h
    [ -f "$src/pjsip.conf" ] || die "configuration not found: $src"
    # Exactly the files of conf/asterisk/: the Debian samples are removed so
    # nothing else shapes the sandbox's behaviour.
    rm -rf "$etc"
    mkdir -p "$etc"
    cp "$src"/*.conf "$etc/"
    subst_line "$etc/http.conf" "bindport=8088" "bindport=$VB1_ARI_PORT"
    subst_line "$etc/http.conf" "tlsbindaddr=127.0.0.1:8089" "tlsbindaddr=127.0.0.1:$VB1_ARI_TLS_PORT"
    make_tls_certificate "$etc/keys"
    subst_line "$etc/pjsip.conf" "bind=127.0.0.1:5060" "bind=127.0.0.1:$VB1_SIP_PORT"
    subst_line "$etc/pjsip.conf" "contact=sip:127.0.0.1:5080" "contact=sip:127.0.0.1:$VB1_DEST_PORT"
    # Asterisk resolves the host name and A.ROOT-SERVERS.NET for every call;
    # under concurrency those lookups stalled SIP for seconds and failed calls.
    # Answer both from /etc/hosts (loopback: the bench never leaves 127.0.0.1).
    h="$(hostname)"
    cat >"$VB1_ROOT/etc/hosts" <<HOSTS
127.0.0.1 localhost $h
127.0.0.1 A.ROOT-SERVERS.NET a.root-servers.net
::1 localhost ip6-localhost ip6-loopback
HOSTS
}

# A private CA and a certificate for 127.0.0.1 signed by it, made anew at every
# "up" (a certificate made at test time, never committed). The CA certificate
# is published as $VB1_RUN_DIR/ari-ca.pem for clients (voicebot1's [ari] ca_file).
make_tls_certificate() {  # make_tls_certificate KEYDIR
    local keys="$1" tmp
    tmp="$(mktemp -d)"
    mkdir -p "$keys" "$VB1_RUN_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=voicebot1 sandbox CA" \
        -keyout "$tmp/ca.key" -out "$tmp/ca.pem" >/dev/null 2>&1 || die "openssl: cannot make the sandbox CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$keys/asterisk.key" -out "$tmp/asterisk.csr" >/dev/null 2>&1 || die "openssl: cannot make the ARI key"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tmp/ext"
    openssl x509 -req -in "$tmp/asterisk.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 7 \
        -extfile "$tmp/ext" -out "$keys/asterisk.pem" >/dev/null 2>&1 || die "openssl: cannot sign the ARI certificate"
    cp "$tmp/ca.pem" "$VB1_RUN_DIR/ari-ca.pem"
    chmod 600 "$keys/asterisk.key"
    rm -rf "$tmp"
}

asterisk_pid() {
    local pid
    [ -f "$AST_PIDFILE" ] || return 1
    pid="$(cat "$AST_PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# Processes whose root directory is the sandbox root (Asterisk and anything
# it spawned). Matching on the root, not on a process name, stops exactly
# what this sandbox runs.
pids_in_root() {
    local p r real
    real="$(readlink -f "$VB1_ROOT" 2>/dev/null || echo "$VB1_ROOT")"
    for p in /proc/[0-9]*; do
        r="$(readlink "$p/root" 2>/dev/null)" || continue
        [ "$r" = "$real" ] && echo "${p#/proc/}"
    done
    return 0
}

ari_info_ok() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 -u "$VB1_ARI_USER:$VB1_ARI_PASS" \
        "$VB1_ARI_URL/asterisk/info" 2>/dev/null | grep -qx 200
}

log_tail() {
    echo "--- last lines of Asterisk's console ($AST_OUT) ---" >&2
    tail -n 25 "$AST_OUT" >&2 2>/dev/null || true
    echo "--- last lines of messages.log ---" >&2
    tail -n 10 "$VB1_ROOT/var/log/asterisk/messages.log" >&2 2>/dev/null || true
}

cmd_up() {
    local t0=$SECONDS pid
    require_root
    ensure_host_packages
    if asterisk_pid >/dev/null || [ -n "$(pids_in_root)" ]; then
        log "Asterisk is already running: restarting it with the current configuration"
        cmd_down >/dev/null
    fi
    if [ "${VB1_REBUILD:-0}" = 1 ] || ! asterisk_root_complete "$VB1_ASTERISK"; then
        build_asterisk_root "$VB1_ASTERISK"
    else
        log "reusing the Asterisk root in $VB1_ROOT"
    fi
    # Our listening ports must be free (another Asterisk, an old SIPp...).
    port_busy tcp "$VB1_ARI_PORT" 127.0.0.1 && die "TCP port $VB1_ARI_PORT (VB1_ARI_PORT) is already in use"
    port_busy udp "$VB1_SIP_PORT" 127.0.0.1 && die "UDP port $VB1_SIP_PORT (VB1_SIP_PORT) is already in use"
    port_busy tcp "$VB1_ARI_TLS_PORT" 127.0.0.1 && die "TCP port $VB1_ARI_TLS_PORT (VB1_ARI_TLS_PORT) is already in use"
    ensure_dev_nodes "$VB1_ROOT"
    install_config
    mkdir -p "$VB1_RUN_DIR" "$VB1_HELPER_DIR" "$VB1_ROOT/var/run/asterisk" "$VB1_ROOT/var/log/asterisk"
    rm -f "$VB1_ROOT/var/run/asterisk/asterisk.ctl" "$VB1_ROOT/var/run/asterisk/asterisk.pid"
    # One log per run, so "logs" shows this run.
    [ -f "$VB1_ROOT/var/log/asterisk/messages.log" ] && \
        mv -f "$VB1_ROOT/var/log/asterisk/messages.log" "$VB1_ROOT/var/log/asterisk/messages.log.1"
    # -f: foreground, so the pid we record is Asterisk's; -n: no colours in the
    # captured console. Run as root without -U (see conf/asterisk/asterisk.conf).
    # 3>&- … 9>&-: Asterisk must not inherit (and hold for ever) the up/down lock, nor a lock
    # its caller holds (e.g. `flock FILE scripts/asterisk-sandbox.sh up`).
    setsid chroot "$VB1_ROOT" /usr/sbin/asterisk -f -n </dev/null >"$AST_OUT" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$AST_PIDFILE"
    echo "VB1_ARI_PORT=$VB1_ARI_PORT VB1_SIP_PORT=$VB1_SIP_PORT VB1_DEST_PORT=$VB1_DEST_PORT VB1_ARI_TLS_PORT=$VB1_ARI_TLS_PORT" >"$VB1_RUN_DIR/ports"
    echo "$VB1_ASTERISK" >"$VB1_RUN_DIR/version"
    local deadline=$((SECONDS + UP_TIMEOUT))
    until ari_info_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail
            die "Asterisk exited during start-up (see the log lines above)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            log_tail
            die "Asterisk did not answer GET $VB1_ARI_URL/asterisk/info within ${UP_TIMEOUT} s"
        fi
        sleep 0.3
    done
    log "Asterisk $VB1_ASTERISK is up in $((SECONDS - t0)) s: ARI $VB1_ARI_URL (user $VB1_ARI_USER), SIP udp 127.0.0.1:$VB1_SIP_PORT, AVAYA-endpoint -> 127.0.0.1:$VB1_DEST_PORT"
}

# Wait up to N seconds for a pid to exit.
wait_gone() {  # wait_gone PID SECONDS
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

cmd_down() {
    local f pid stopped=0
    require_root
    # 1. Helpers the bench scripts registered (SIPp callers/UAS, tcpdump).
    if [ -d "$VB1_HELPER_DIR" ]; then
        for f in "$VB1_HELPER_DIR"/*.pid; do
            [ -e "$f" ] || continue
            pid="$(cat "$f")"
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null || true
                wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
                stopped=$((stopped + 1))
            fi
            rm -f "$f"
        done
    fi
    # 2. Asterisk: orderly stop first, then signals. Every version's root: the
    # running sandbox may be another version than the one asked for.
    local root wanted_root="$VB1_ROOT"
    for root in "$(sandbox_root 22)" "$(sandbox_root 16)"; do
    VB1_ROOT="$root"
    if [ -d "$VB1_ROOT" ]; then
        if pid="$(asterisk_pid)"; then
            timeout 10 chroot "$VB1_ROOT" /usr/sbin/asterisk -rx "core stop now" >/dev/null 2>&1 || true
            wait_gone "$pid" 15 || { kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; }
            stopped=$((stopped + 1))
        fi
        # 3. Anything else still running inside the root.
        for pid in $(pids_in_root); do
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
            stopped=$((stopped + 1))
        done
        # 4. Whatever is mounted inside the root (the sandbox itself mounts
        # nothing, but an interrupted debootstrap may have left /proc, /sys).
        unmount_under "$VB1_ROOT"
        [ -d "$VB1_ROOT.building" ] && unmount_under "$VB1_ROOT.building"
        rm -f "$VB1_ROOT/var/run/asterisk/asterisk.ctl"
    fi
    done
    VB1_ROOT="$wanted_root"
    rm -f "$AST_PIDFILE" "$VB1_RUN_DIR/ports" "$VB1_RUN_DIR/version"
    log "sandbox down (stopped $stopped process(es))"
}

cmd_status() {
    local pid ver chans bridges
    if ! pid="$(asterisk_pid)"; then
        echo "down"
        return 3
    fi
    ver="$(timeout 10 chroot "$VB1_ROOT" /usr/sbin/asterisk -rx "core show version" 2>/dev/null | head -n1)"
    if ! ari_info_ok; then
        echo "starting or broken: Asterisk pid $pid runs but ARI does not answer on $VB1_ARI_URL"
        return 1
    fi
    chans="$(ari GET /channels | jq length)"
    bridges="$(ari GET /bridges | jq length)"
    echo "up: pid $pid, ${ver:-version unknown}"
    echo "ARI $VB1_ARI_URL, SIP udp 127.0.0.1:$VB1_SIP_PORT, AVAYA-endpoint -> 127.0.0.1:$VB1_DEST_PORT"
    echo "channels=$chans bridges=$bridges"
}

cmd_cli() {
    [ $# -ge 1 ] || die "usage: $0 cli \"<asterisk CLI command>\""
    require_root
    asterisk_pid >/dev/null || die "the sandbox is down"
    timeout 30 chroot "$VB1_ROOT" /usr/sbin/asterisk -rx "$*"
}

cmd_logs() {
    local f="$VB1_ROOT/var/log/asterisk/messages.log"
    [ -f "$f" ] || die "no Asterisk log yet ($f)"
    if [ "${1:-}" = "-f" ]; then
        tail -n 50 -F "$f"
    else
        tail -n "${VB1_LOG_LINES:-200}" "$f"
    fi
}

# One up/down at a time (a test run and an operator, two load runs...).
lock() {
    mkdir -p "$VB1_STATE_DIR"
    exec 9>"$VB1_STATE_DIR/.lock"
    flock -w 600 9 || die "another asterisk-sandbox.sh up/down holds $VB1_STATE_DIR/.lock"
}

case "${1:-}" in
    up)     require_root; lock; cmd_up ;;
    down)   require_root; lock; cmd_down ;;
    status) cmd_status ;;
    cli)    shift; cmd_cli "$@" ;;
    logs)   shift; cmd_logs "$@" ;;
    *)      echo "usage: $0 up [--asterisk 16|22]|down|status|cli \"<command>\"|logs [-f]" >&2; exit 2 ;;
esac
