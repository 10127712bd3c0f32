#!/usr/bin/env bash
# cluster.sh -- several Asterisk + voicebot1 boxes behind Kamailio's dispatcher, on loopback
# addresses of this machine, driven by SIPp: the tested recipe of conf/kamailio/.
#
#   scripts/cluster.sh up [--boxes N]     N boxes (default 2, at most 6) and Kamailio in front.
#                                         Each box: its own Asterisk 22 (the sandbox's root,
#                                         its own config/run/log/spool dirs), its own voicebot1
#                                         (config generated from conf/voicebot1.toml, checked
#                                         with --check) and its own destination UAS (SIPp).
#   scripts/cluster.sh status             every process, each box's state in Kamailio, channels
#   scripts/cluster.sh down               stop everything the cluster started; safe to repeat
#   scripts/cluster.sh load --calls N --rate R [--hold A-B]
#                                         SIPp callers to Kamailio only (hold in seconds,
#                                         default 1-15); per-box call counts and the usual
#                                         summary, leaks summed over every box. Exit 1 on a
#                                         failed call or a leak.
#   scripts/cluster.sh kill-box I         SIGKILL box I's Asterisk (its calls are lost); prints
#                                         how many calls it had and when Kamailio set it inactive
#   scripts/cluster.sh revive-box I       start box I's Asterisk again; prints when its voicebot1
#                                         reconnected (on its own) and when Kamailio took it back
#   scripts/cluster.sh failover [--calls N] [--rate R] [--hold A-B] [--kill-at S] [--down-for S]
#                                         the failover scenario, judged: a load run with
#                                         kill-box 1 at S s (default 10) and revive-box 1 after
#                                         --down-for s (default 15), then a check run in which
#                                         box 1 must take calls again. Last line "failover: ...
#                                         result=ok|FAILED".
#
# Addresses and ports. Nothing listens on 127.0.0.1: the single-box sandbox
# (asterisk-sandbox.sh) may run there at the same time, with its RTP range 10000-20000 and
# voicebot1's 26500-26999, which no range below overlaps.
#   Kamailio           udp 127.0.0.10:5060; control socket /run/voicebot1-cluster/kamailio_ctl
#   callers (SIPp)     127.0.0.11:5070, media 6000
#   box I (1..6)       address 127.0.0.(I+1): Asterisk SIP udp :5060, ARI http :8088 (no TLS),
#                      destination UAS :5080 (media 6200), Asterisk RTP 20100+1000*(I-1)
#                      .. +999, voicebot1's UDP pool 27000+250*(I-1) .. +249, and voicebot1's
#                      [metrics] listen (when the config has one) on the box's address.
#                      The RTP ranges differ even though the addresses do: Asterisk binds an
#                      externalMedia channel's RTP to 127.0.0.1 (the kernel's source address
#                      towards 127.0.0.N), whatever the box's address.
# The boxes' Asterisk runs in a hard-linked copy of the sandbox's Asterisk 22 root
# (/var/lib/voicebot1-sandbox/root-cluster), so the sandbox's "down", which stops every process
# inside its own root, never touches the cluster (and the reverse).
# Run-time state and logs: /run/voicebot1-cluster (box I: boxI/{asterisk.console.log,
# voicebot1.log, voicebot1.toml, uas.screen}; kamailio.log; events).
set -euo pipefail
# The cluster's own run directory: never the sandbox's (whose "down" stops the helpers it lists).
VB1_RUN_DIR=/run/voicebot1-cluster
VB1_ASTERISK=22
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

CL_RUN="$VB1_RUN_DIR"
CL_ROOT="$VB1_STATE_DIR/root-cluster"
CL_SRC_ROOT="$(sandbox_root 22)"
CL_MAX_BOXES=6
CL_LB_ADDR=127.0.0.10
CL_LB_PORT=5060
CL_CALLER_ADDR=127.0.0.11
CL_CALLER_PORT=5070
CL_CALLER_MEDIA_PORT=6000
CL_SIP_PORT=5060
CL_ARI_PORT=8088
CL_DEST_PORT=5080
CL_DEST_MEDIA_PORT=6200
CL_CTL="unix:$CL_RUN/kamailio_ctl"
CL_EVENTS="$CL_RUN/events"
CL_UP_TIMEOUT=60
KAMAILIO_CFG="$VB1_REPO_DIR/conf/kamailio/kamailio.cfg"
VOICEBOT1_BIN="$VB1_TARGET_DIR/release/voicebot1"

box_addr() { echo "127.0.0.$(($1 + 1))"; }
box_uri() { echo "sip:$(box_addr "$1"):$CL_SIP_PORT"; }
box_rtp_start() { echo $((20100 + 1000 * ($1 - 1))); }
box_pool_min() { echo $((27000 + 250 * ($1 - 1))); }
box_run() { echo "$CL_RUN/box$1"; }
# A box's Asterisk directories, as seen inside the root and from the host.
box_dir_in_root() { echo "/cluster/box$1"; }
box_dir() { echo "$CL_ROOT/cluster/box$1"; }
box_ari_url() { echo "http://$(box_addr "$1"):$CL_ARI_PORT/ari"; }

# Number of boxes of the running cluster (0 when down).
boxes() { cat "$CL_RUN/boxes" 2>/dev/null || echo 0; }

now_ms() { date +%s%3N; }

# --- processes: started by us, tracked by pid files, checked by name before any signal -------

# The pid in FILE if that process is alive and is COMMAND (a reused pid is not ours).
pidfile_alive() {  # pidfile_alive FILE COMMAND
    local pid
    [ -f "$1" ] || return 1
    pid="$(cat "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    echo "$pid"
}

# Start a long-lived process detached from this shell, its pid in PIDFILE.
start_daemon() {  # start_daemon PIDFILE LOGFILE cmd args...
    local pidf="$1" logf="$2"; shift 2
    setsid "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
    echo $! >"$pidf"
}

wait_gone() {  # wait_gone PID SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Processes whose root directory is the cluster's root: only the boxes' Asterisk run there.
pids_in_cluster_root() {
    local p r real
    [ -d "$CL_ROOT" ] || return 0
    real="$(readlink -f "$CL_ROOT")"
    for p in /proc/[0-9]*; do
        r="$(readlink "$p/root" 2>/dev/null)" || continue
        [ "$r" = "$real" ] && echo "${p#/proc/}"
    done
    return 0
}

# --- the root ------------------------------------------------------------------------------

# The cluster root: a hard-linked copy of the sandbox's Asterisk 22 root (seconds, no extra
# space). The boxes write only below /cluster/boxI in it, so nothing they write is shared with
# the sandbox. Made again when the sandbox root was rebuilt.
prepare_root() {
    local src_marker="$CL_SRC_ROOT.complete" want
    (
        # The sandbox's up/down lock: no rebuild of its root while we copy it.
        exec 9>"$VB1_STATE_DIR/.lock"
        flock -w 600 9 || die "another asterisk-sandbox.sh up/down holds $VB1_STATE_DIR/.lock"
        if ! asterisk_root_complete 22; then
            build_asterisk_root 22
        fi
        want="copy of $CL_SRC_ROOT: $(cat "$src_marker") built $(stat -c %Y "$src_marker")"
        if [ -x "$CL_ROOT/usr/sbin/asterisk" ] && [ "$(cat "$CL_ROOT.complete" 2>/dev/null)" = "$want" ]; then
            exit 0
        fi
        [ -z "$(mounts_under "$CL_SRC_ROOT")" ] || die "something is mounted below $CL_SRC_ROOT: not copying it"
        log "making the cluster's Asterisk root: hard-linked copy of $CL_SRC_ROOT"
        rm -f "$CL_ROOT.complete"
        safe_rm_tree "$CL_ROOT"
        cp -al --one-file-system "$CL_SRC_ROOT" "$CL_ROOT.building"
        # What belongs to the sandbox's own Asterisk is unlinked from the copy.
        rm -rf "$CL_ROOT.building/etc/asterisk" "$CL_ROOT.building/var/run/asterisk"/* \
            "$CL_ROOT.building/var/log/asterisk"/* "$CL_ROOT.building/var/lib/asterisk/astdb.sqlite3"
        mv "$CL_ROOT.building" "$CL_ROOT"
        echo "$want" >"$CL_ROOT.complete"
    ) || exit 1
    ensure_dev_nodes "$CL_ROOT"
    # Asterisk resolves the host name and A.ROOT-SERVERS.NET for every call (see
    # asterisk-sandbox.sh): both answered from /etc/hosts. rm first: the file is a hard link.
    rm -f "$CL_ROOT/etc/hosts"
    cat >"$CL_ROOT/etc/hosts" <<HOSTS
127.0.0.1 localhost $(hostname)
127.0.0.1 A.ROOT-SERVERS.NET a.root-servers.net
::1 localhost ip6-localhost ip6-loopback
HOSTS
}

# --- one box -------------------------------------------------------------------------------

# Box I's Asterisk configuration: conf/asterisk/*.conf with its address, ports and directories.
install_box_config() {  # install_box_config I
    local i="$1" addr dir etc in_root rtp
    addr="$(box_addr "$i")" dir="$(box_dir "$i")" in_root="$(box_dir_in_root "$i")" rtp="$(box_rtp_start "$i")"
    etc="$dir/etc"
    rm -rf "$dir"
    mkdir -p "$etc" "$dir/run" "$dir/log" "$dir/spool" "$dir/lib" "$dir/cache"
    cp "$VB1_REPO_DIR"/conf/asterisk/*.conf "$etc/"
    subst_line "$etc/http.conf" "bindaddr=127.0.0.1" "bindaddr=$addr"
    subst_line "$etc/http.conf" "bindport=8088" "bindport=$CL_ARI_PORT"
    # No ARI over TLS on the boxes (the sandbox tests it): no certificate, no port 8089.
    subst_line "$etc/http.conf" "tlsenable=yes" "tlsenable=no"
    subst_line "$etc/pjsip.conf" "bind=127.0.0.1:5060" "bind=$addr:$CL_SIP_PORT"
    subst_line "$etc/pjsip.conf" "contact=sip:127.0.0.1:5080" "contact=sip:$addr:$CL_DEST_PORT"
    # Calls (and the probes) come from the balancer.
    subst_line "$etc/pjsip.conf" "match=127.0.0.1" "match=$CL_LB_ADDR"
    subst_line "$etc/rtp.conf" "rtpstart=10000" "rtpstart=$rtp"
    subst_line "$etc/rtp.conf" "rtpend=20000" "rtpend=$((rtp + 999))"
    cat >>"$etc/asterisk.conf" <<DIRS

; cluster.sh: this box's own directories (the other ones are the package's, read only).
[directories]
astetcdir => $in_root/etc
astrundir => $in_root/run
astlogdir => $in_root/log
astspooldir => $in_root/spool
astdbdir => $in_root/lib
astcachedir => $in_root/cache
DIRS
}

# Box I's voicebot1 configuration: conf/voicebot1.toml with the box's addresses and ports.
# Every key rewritten must be found, so a changed sample cannot silently keep 127.0.0.1.
# [media] asterisk_host stays 127.0.0.1: an externalMedia channel's RTP leaves Asterisk from the
# source address the kernel picks towards 127.0.0.N, which is 127.0.0.1 (the echo pins the exact
# address from UNICASTRTP_LOCAL_ADDRESS anyway).
write_box_voicebot1_config() {  # write_box_voicebot1_config I OUT
    local i="$1" out="$2" pmin
    pmin="$(box_pool_min "$i")"
    awk -v addr="$(box_addr "$i")" -v ari_port="$CL_ARI_PORT" -v pmin="$pmin" -v pmax="$((pmin + 249))" '
        /^\[/ { section = $0 }
        function line(text, key) { print text; seen[key]++ }
        section == "[ari]" && $1 == "url" && $2 == "=" { line("url = \"http://" addr ":" ari_port "\"", "ari.url"); next }
        # The balancer takes a box back as soon as its Asterisk answers OPTIONS; voicebot1 must
        # be connected again by then (the dialplan retries Stasis() for 10 s), not after a
        # back-off of up to 30 s.
        section == "[ari]" && $1 == "reconnect_max_ms" && $2 == "=" { line("reconnect_max_ms = 2000", "ari.reconnect_max_ms"); next }
        section == "[media]" && $1 == "advertise_host" && $2 == "=" { line("advertise_host = \"" addr "\"", "media.advertise_host"); next }
        section == "[media]" && $1 == "bind_host" && $2 == "=" { line("bind_host = \"" addr "\"", "media.bind_host"); next }
        section == "[media]" && $1 == "port_min" && $2 == "=" { line("port_min = " pmin, "media.port_min"); next }
        section == "[media]" && $1 == "port_max" && $2 == "=" { line("port_max = " pmax, "media.port_max"); next }
        # [metrics] listen = "HOST:PORT" (when the config has it): the same port on the box address.
        section == "[metrics]" && $1 == "listen" && $2 == "=" && match($0, /:[0-9]+"/) {
            line("listen = \"" addr substr($0, RSTART, RLENGTH), "metrics.listen"); next }
        { print }
        END {
            n = split("ari.url ari.reconnect_max_ms media.advertise_host media.bind_host media.port_min media.port_max", k, " ")
            for (j = 1; j <= n; j++) if (seen[k[j]] != 1) { print "missing or repeated key " k[j] > "/dev/stderr"; exit 1 }
        }' "$VB1_REPO_DIR/conf/voicebot1.toml" >"$out" \
        || die "cannot make box $i's voicebot1 configuration from conf/voicebot1.toml (see above)"
    "$VOICEBOT1_BIN" --check "$out" >"$out.check" 2>&1 \
        || die "voicebot1 --check refuses box $i's configuration $out: $(tail -n 3 "$out.check" | tr '\n' ' ')"
}

box_asterisk_pid() { pidfile_alive "$(box_run "$1")/asterisk.pid" asterisk; }
box_voicebot1_pid() { pidfile_alive "$(box_run "$1")/voicebot1.pid" voicebot1; }
box_uas_pid() { pidfile_alive "$(box_run "$1")/uas.pid" sipp; }

# The box's Asterisk CLI (through its own control socket).
box_cli() {  # box_cli I "command"
    timeout 10 chroot "$CL_ROOT" /usr/sbin/asterisk -C "$(box_dir_in_root "$1")/etc/asterisk.conf" -rx "$2"
}

box_ari() {  # box_ari I METHOD PATH
    curl -sS --fail --max-time 5 -u "$VB1_ARI_USER:$VB1_ARI_PASS" -X "$2" "$(box_ari_url "$1")$3"
}

box_ari_ok() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 -u "$VB1_ARI_USER:$VB1_ARI_PASS" \
        "$(box_ari_url "$1")/asterisk/info" 2>/dev/null | grep -qx 200
}

box_registered() { box_ari "$1" GET /applications/voicebot1 >/dev/null 2>&1; }

start_box_asterisk() {  # start_box_asterisk I
    local i="$1" run pid deadline
    run="$(box_run "$i")"
    rm -f "$(box_dir "$i")/run/asterisk.ctl" "$(box_dir "$i")/run/asterisk.pid"
    start_daemon "$run/asterisk.pid" "$run/asterisk.console.log" \
        chroot "$CL_ROOT" /usr/sbin/asterisk -f -n -C "$(box_dir_in_root "$i")/etc/asterisk.conf"
    pid="$(cat "$run/asterisk.pid")"
    deadline=$((SECONDS + CL_UP_TIMEOUT))
    until box_ari_ok "$i"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$run/asterisk.console.log" >&2
            die "box $i: Asterisk exited during start-up (console log above)"
        fi
        [ $SECONDS -lt $deadline ] || die "box $i: ARI did not answer on $(box_ari_url "$i") within ${CL_UP_TIMEOUT} s"
        sleep 0.2
    done
}

stop_box_asterisk() {  # stop_box_asterisk I
    local i="$1" pid
    if pid="$(box_asterisk_pid "$i")"; then
        box_cli "$i" "core stop now" >/dev/null 2>&1 || true
        wait_gone "$pid" 15 || { kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$(box_run "$i")/asterisk.pid"
}

wait_registered() {  # wait_registered I SECONDS
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        box_registered "$1" && return 0
        box_voicebot1_pid "$1" >/dev/null || return 1
        sleep 0.2
    done
    return 1
}

start_box() {  # start_box I
    local i="$1" run addr work
    run="$(box_run "$i")" addr="$(box_addr "$i")"
    rm -rf "$run"
    mkdir -p "$run"
    install_box_config "$i"
    write_box_voicebot1_config "$i" "$run/voicebot1.toml"
    start_box_asterisk "$i"
    # The destination behind AVAYA-endpoint: answers every call, audio until Asterisk's BYE.
    work="$run/sipp"
    mkdir -p "$work/pcap"
    cp "$VB1_PCAP_SRC" "$work/pcap/g711a.pcap"
    cp "$VB1_SCRIPTS_DIR/sipp/uas-answer.xml" "$work/"
    # shellcheck disable=SC2016  # expanded by the inner shell
    start_daemon "$run/uas.pid" "$run/uas.screen" \
        bash -c 'cd "$1" && shift && exec "$@"' _ "$work" \
        sipp -sf uas-answer.xml -i "$addr" -p "$CL_DEST_PORT" -mp "$CL_DEST_MEDIA_PORT" -nostdin \
             -recv_timeout 130000 -trace_err -fd 1
    wait_udp_port_on "$addr" "$CL_DEST_PORT" 10 || die "box $i: the destination UAS did not start on $addr:$CL_DEST_PORT: $(tail -n 3 "$run/uas.screen" | tr '\n' ' ')"
    start_daemon "$run/voicebot1.pid" "$run/voicebot1.log" "$VOICEBOT1_BIN" "$run/voicebot1.toml"
    wait_registered "$i" 30 || { tail -n 20 "$run/voicebot1.log" >&2; die "box $i: voicebot1 did not register its Stasis application"; }
    log "box $i up: $addr (SIP :$CL_SIP_PORT, ARI :$CL_ARI_PORT, RTP $(box_rtp_start "$i")-$(($(box_rtp_start "$i") + 999)), voicebot1 pool $(box_pool_min "$i")-$(($(box_pool_min "$i") + 249)), destination :$CL_DEST_PORT)"
}

# Is something listening on ADDR:PORT, or on the same port of every address?
addr_port_busy() {  # addr_port_busy udp|tcp ADDR PORT
    local flag=-lnt
    [ "$1" = udp ] && flag=-lnu
    ss -H "$flag" "sport = :$3" 2>/dev/null | awk -v a="$2:$3" -v p=":$3" '
        $4 == a || $4 == "0.0.0.0" p || $4 == "*" p || $4 == "[::]" p { found = 1 } END { exit !found }'
}

udp_bound() {  # udp_bound ADDR PORT
    ss -H -lnu "sport = :$2" 2>/dev/null | awk -v a="$1:$2" '$4 == a { f = 1 } END { exit !f }'
}

wait_udp_port_on() {  # wait_udp_port_on ADDR PORT SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        udp_bound "$1" "$2" && return 0
        sleep 0.1
    done
    return 1
}

# --- Kamailio ------------------------------------------------------------------------------

kamailio_pid() { pidfile_alive "$CL_RUN/kamailio.pid" kamailio; }
kam() { kamcmd -s "$CL_CTL" "$@"; }

# "URI FLAGS" per box, from kamcmd dispatcher.list (FLAGS: AP active, IP inactive, ...).
kamailio_states() {
    kam dispatcher.list 2>/dev/null | awk '$1 == "URI:" { uri = $2 } $1 == "FLAGS:" { print uri, $2 }'
}

box_state() {  # box_state I -> AP, IP, TP, DX... or "?" (Kamailio not answering)
    local s
    s="$(kamailio_states | awk -v u="$(box_uri "$1")" '$1 == u { print $2 }')"
    echo "${s:-?}"
}

write_dispatcher_list() {  # write_dispatcher_list N FILE
    local i
    {
        echo "# Generated by scripts/cluster.sh up --boxes $1 (format: conf/kamailio/dispatcher.list)."
        for ((i = 1; i <= $1; i++)); do
            echo "1 $(box_uri "$i") 0 0 duid=box$i"
        done
    } >"$2"
}

start_kamailio() {  # start_kamailio N
    local deadline
    write_dispatcher_list "$1" "$CL_RUN/dispatcher.list"
    kamailio -c -f "$KAMAILIO_CFG" -A "LB_LISTEN=udp:$CL_LB_ADDR:$CL_LB_PORT" -A "DS_LIST=\"$CL_RUN/dispatcher.list\"" \
        -A "CTL_SOCKET=\"$CL_CTL\"" -Y "$CL_RUN" >"$CL_RUN/kamailio.check" 2>&1 \
        || { tail -n 5 "$CL_RUN/kamailio.check" >&2; die "kamailio -c refuses $KAMAILIO_CFG"; }
    # -DD: the main process stays in the foreground (its pid is the one recorded); -E: log to
    # stderr, i.e. to kamailio.log.
    start_daemon "$CL_RUN/kamailio.pid" "$CL_RUN/kamailio.log" \
        kamailio -DD -E -f "$KAMAILIO_CFG" -m 64 -M 8 -Y "$CL_RUN" \
            -A "LB_LISTEN=udp:$CL_LB_ADDR:$CL_LB_PORT" -A "DS_LIST=\"$CL_RUN/dispatcher.list\"" -A "CTL_SOCKET=\"$CL_CTL\""
    deadline=$((SECONDS + 20))
    until kam dispatcher.list >/dev/null 2>&1 && udp_bound "$CL_LB_ADDR" "$CL_LB_PORT"; do
        kamailio_pid >/dev/null || { tail -n 20 "$CL_RUN/kamailio.log" >&2; die "Kamailio exited during start-up (log above)"; }
        [ $SECONDS -lt $deadline ] || die "Kamailio did not answer on $CL_CTL within 20 s"
        sleep 0.2
    done
    log "Kamailio up: udp $CL_LB_ADDR:$CL_LB_PORT, dispatcher set 1 = $1 box(es), OPTIONS every 2 s"
}

# Wait until Kamailio shows box I in a state matching PATTERN; prints the seconds it took since
# SINCE_MS (epoch milliseconds, default now).
wait_box_state() {  # wait_box_state I PATTERN SECONDS [SINCE_MS]
    local t0 s
    t0="${4:-$(now_ms)}"
    while [ $(($(now_ms) - t0)) -lt $(($3 * 1000)) ]; do
        s="$(box_state "$1")"
        # shellcheck disable=SC2053  # PATTERN is a glob on purpose
        if [[ "$s" == $2 ]]; then
            awk -v ms="$(($(now_ms) - t0))" 'BEGIN { printf "%.1f\n", ms / 1000 }'
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# --- commands ------------------------------------------------------------------------------

lock() {
    mkdir -p "$VB1_STATE_DIR" "$CL_RUN"
    exec 8>"$VB1_STATE_DIR/.cluster.lock"
    flock -w 300 8 || die "another cluster.sh up/down/kill-box/revive-box holds $VB1_STATE_DIR/.cluster.lock"
}

cmd_up() {
    local n=2 i t0=$SECONDS
    while [ $# -gt 0 ]; do
        case "$1" in
            --boxes) n="${2:?--boxes needs a number}"; shift 2 ;;
            *) die "up: unknown option $1 (up [--boxes N])" ;;
        esac
    done
    if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt "$CL_MAX_BOXES" ]; then
        die "--boxes expects 1 to $CL_MAX_BOXES"
    fi
    require_root
    ensure_host_packages
    ensure_kamailio
    [ -x "$VOICEBOT1_BIN" ] || die "$VOICEBOT1_BIN not built (cargo build --release)"
    if [ -n "$(running_pids)" ]; then
        log "the cluster is already running: taking it down first"
        cmd_down
    fi
    # The addresses and ports must be free (an old run, the packaged kamailio on every address...).
    addr_port_busy udp "$CL_LB_ADDR" "$CL_LB_PORT" && die "udp $CL_LB_ADDR:$CL_LB_PORT (Kamailio) is in use"
    addr_port_busy udp "$CL_CALLER_ADDR" "$CL_CALLER_PORT" && die "udp $CL_CALLER_ADDR:$CL_CALLER_PORT (callers) is in use"
    for ((i = 1; i <= n; i++)); do
        addr_port_busy udp "$(box_addr "$i")" "$CL_SIP_PORT" && die "udp $(box_addr "$i"):$CL_SIP_PORT (box $i SIP) is in use"
        addr_port_busy tcp "$(box_addr "$i")" "$CL_ARI_PORT" && die "tcp $(box_addr "$i"):$CL_ARI_PORT (box $i ARI) is in use"
        addr_port_busy udp "$(box_addr "$i")" "$CL_DEST_PORT" && die "udp $(box_addr "$i"):$CL_DEST_PORT (box $i destination) is in use"
    done
    prepare_root
    mkdir -p "$CL_RUN"
    rm -f "$CL_EVENTS" "$CL_RUN/kamailio.log"
    echo "$n" >"$CL_RUN/boxes"
    for ((i = 1; i <= n; i++)); do
        start_box "$i"
    done
    start_kamailio "$n"
    for ((i = 1; i <= n; i++)); do
        wait_box_state "$i" 'A*' 10 >/dev/null || die "Kamailio does not show box $i active: $(box_state "$i")"
    done
    log "cluster up in $((SECONDS - t0)) s: $n box(es) behind Kamailio on $CL_LB_ADDR:$CL_LB_PORT (call sip:3308487@$CL_LB_ADDR:$CL_LB_PORT)"
}

# Every pid the cluster runs now (pid files, and anything inside the cluster root).
running_pids() {
    local f
    for f in "$CL_RUN"/box*/asterisk.pid; do [ -e "$f" ] && { pidfile_alive "$f" asterisk || true; }; done
    for f in "$CL_RUN"/box*/voicebot1.pid; do [ -e "$f" ] && { pidfile_alive "$f" voicebot1 || true; }; done
    for f in "$CL_RUN"/box*/uas.pid "$CL_RUN"/helpers/*.pid; do [ -e "$f" ] && { pidfile_alive "$f" sipp || true; }; done
    kamailio_pid || true
    pids_in_cluster_root
}

# TERM every process of the pid files that is still COMMAND, then wait for all of them (GRACE s
# in all), KILL what is left; the pid files are removed. Adds the number stopped to STOPPED.
stop_pidfiles() {  # stop_pidfiles COMMAND GRACE FILE...
    local comm="$1" grace="$2" f pid deadline
    local -a pids=()
    shift 2
    for f in "$@"; do
        [ -e "$f" ] || continue
        pid="$(pidfile_alive "$f" "$comm")" || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    deadline=$((SECONDS + grace))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || true
        fi
    done
    rm -f "$@"
    STOPPED=$((STOPPED + ${#pids[@]}))
}

cmd_down() {
    local f i pid
    STOPPED=0
    require_root
    # 1. Callers of a load run (SIPp), then Kamailio: no new calls.
    stop_pidfiles sipp 3 "$CL_RUN"/helpers/*.pid
    stop_pidfiles kamailio 10 "$CL_RUN/kamailio.pid"
    # 2. Every voicebot1 (SIGTERM: a handover stop, immediate without calls).
    stop_pidfiles voicebot1 40 "$CL_RUN"/box*/voicebot1.pid
    # 3. The boxes' Asterisk: an orderly stop of all at once, signals for what is left; then the
    # destinations.
    for f in "$CL_RUN"/box*/asterisk.pid; do
        [ -e "$f" ] || continue
        i="${f%/asterisk.pid}"; i="${i##*/box}"
        box_asterisk_pid "$i" >/dev/null && { box_cli "$i" "core stop now" >/dev/null 2>&1 & }
    done
    wait
    stop_pidfiles asterisk 15 "$CL_RUN"/box*/asterisk.pid
    stop_pidfiles sipp 5 "$CL_RUN"/box*/uas.pid
    # 4. Anything still running inside the cluster root (only our Asterisks run there).
    for pid in $(pids_in_cluster_root); do
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
        STOPPED=$((STOPPED + 1))
    done
    rm -f "$CL_RUN/boxes" "$CL_RUN/kamailio_ctl"
    log "cluster down (stopped $STOPPED process(es)); logs kept in $CL_RUN"
}

cmd_status() {
    local n i pid rc=0 chans bridges
    n="$(boxes)"
    if [ "$n" = 0 ] && [ -z "$(running_pids)" ]; then
        echo "down"
        return 3
    fi
    if pid="$(kamailio_pid)"; then
        echo "kamailio: up, pid $pid, udp $CL_LB_ADDR:$CL_LB_PORT, log $CL_RUN/kamailio.log"
    else
        echo "kamailio: DOWN"; rc=1
    fi
    for ((i = 1; i <= n; i++)); do
        local ast="down" bot="down" uas="down" reg="" calls=""
        pid="$(box_asterisk_pid "$i")" && ast="pid $pid"
        pid="$(box_voicebot1_pid "$i")" && bot="pid $pid"
        pid="$(box_uas_pid "$i")" && uas="pid $pid"
        if box_ari_ok "$i"; then
            chans="$(box_ari "$i" GET /channels | jq length)"
            bridges="$(box_ari "$i" GET /bridges | jq length)"
            calls=" channels=$chans bridges=$bridges"
            if box_registered "$i"; then reg=" (registered)"; else reg=" (NOT registered)"; fi
        fi
        echo "box $i $(box_addr "$i"): kamailio state $(box_state "$i"), asterisk $ast, voicebot1 $bot$reg, destination $uas$calls"
    done
    return "$rc"
}

# Channels and bridges left on box I: prints "CHANNELS BRIDGES".
box_leaks() {  # box_leaks I
    local c b
    c="$(box_ari "$1" GET /channels 2>/dev/null | jq length)" || c=-1
    b="$(box_ari "$1" GET /bridges 2>/dev/null | jq length)" || b=-1
    echo "${c:--1} ${b:--1}"
}

# CPU time (clock ticks) of a process and its children (Kamailio's workers).
cpu_ticks() {  # cpu_ticks PID...
    local p total=0 t
    for p in "$@"; do
        t="$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null)" || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
kamailio_pids() { local p; p="$(kamailio_pid)" || return 0; echo "$p"; pgrep -P "$p" || true; }

cmd_load() {
    local calls="" rate="" hold="1-15" n i work caller_pid caller_rc=0 t0 t0_ms elapsed created ok failed
    while [ $# -gt 0 ]; do
        case "$1" in
            --calls) calls="${2:?}"; shift 2 ;;
            --rate) rate="${2:?}"; shift 2 ;;
            --hold) hold="${2:?}"; shift 2 ;;
            *) die "load: unknown option $1 (load --calls N --rate R [--hold A-B])" ;;
        esac
    done
    [[ "$calls" =~ ^[1-9][0-9]*$ ]] || die "load: --calls expects a positive integer"
    [[ "$rate" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "load: --rate expects calls per second"
    parse_range_s --hold "$hold"
    local hold_min=$RANGE_MIN_MS hold_max=$RANGE_MAX_MS
    require_root
    n="$(boxes)"
    if [ "$n" -lt 1 ] || ! kamailio_pid >/dev/null; then die "the cluster is not up (scripts/cluster.sh up)"; fi
    addr_port_busy udp "$CL_CALLER_ADDR" "$CL_CALLER_PORT" && die "udp $CL_CALLER_ADDR:$CL_CALLER_PORT (callers) is in use: another load running?"

    work="$(sipp_workdir)"
    caller_pid=""
    # shellcheck disable=SC2064  # the paths are fixed now
    trap "[ -z \"\${caller_pid:-}\" ] || stop_helper \"\$caller_pid\" 3; rm -rf '$work'" EXIT
    set_scenario_hold "$work/uac-hold.xml" "$hold_min" "$hold_max"

    # Where each box's voicebot1 log and Kamailio's log stand now, and CPU times.
    local -a log_off ast_pid0 ast_ticks0
    for ((i = 1; i <= n; i++)); do
        log_off[i]="$(stat -c %s "$(box_run "$i")/voicebot1.log" 2>/dev/null || echo 0)"
        ast_pid0[i]="$(box_asterisk_pid "$i" || echo none)"
        ast_ticks0[i]="$(cpu_ticks "${ast_pid0[i]}")"
    done
    local kam_off kam_ticks0
    kam_off="$(stat -c %s "$CL_RUN/kamailio.log" 2>/dev/null || echo 0)"
    # shellcheck disable=SC2046  # one pid per word
    kam_ticks0="$(cpu_ticks $(kamailio_pids))"

    local run_limit
    run_limit=$(awk -v n="$calls" -v r="$rate" -v h="$hold_max" 'BEGIN { printf "%d", n / (r > 0 ? r : 1) + h / 1000 + 120 }')
    log "placing $calls calls to 3308487 via Kamailio $CL_LB_ADDR:$CL_LB_PORT at $rate/s, hold ${hold}s, $n box(es); at most ${run_limit}s"
    t0=$SECONDS t0_ms="$(now_ms)"
    # shellcheck disable=SC2016  # expanded by the inner shell
    start_helper "sipp-caller" "$work/caller.screen" bash -c 'cd "$1" && shift && exec "$@"' _ "$work" \
        sipp "$CL_LB_ADDR:$CL_LB_PORT" -sf uac-hold.xml -s 3308487 -i "$CL_CALLER_ADDR" -p "$CL_CALLER_PORT" \
             -mp "$CL_CALLER_MEDIA_PORT" -m "$calls" -r "$rate" -nostdin -recv_timeout 90000 -timeout "${run_limit}s" \
             -timeout_error -trace_err -trace_stat -stf "$work/caller.csv" -fd 1 -trace_logs
    caller_pid=$HELPER_PID
    wait "$caller_pid" || caller_rc=$?
    rm -f "$VB1_HELPER_DIR"/*."$caller_pid".pid
    caller_pid=""
    elapsed=$((SECONDS - t0))
    local t1_ms; t1_ms="$(now_ms)"

    created=$(sipp_stat "$work/caller.csv" "TotalCallCreated")
    ok=$(sipp_stat "$work/caller.csv" "SuccessfulCall(C)")
    failed=$(sipp_stat "$work/caller.csv" "FailedCall(C)")
    [ $((ok + failed)) -lt "$calls" ] && failed=$((calls - ok))

    # Drain: every box that is up must end with no channel and no bridge (bounded).
    local t1=$SECONDS drained=0 left
    while [ $((SECONDS - t1)) -lt 30 ]; do
        left=0
        for ((i = 1; i <= n; i++)); do
            box_asterisk_pid "$i" >/dev/null || continue
            read -r c b <<<"$(box_leaks "$i")"
            [ "$c" = 0 ] && [ "$b" = 0 ] || left=1
        done
        [ "$left" = 0 ] && { drained=1; break; }
        sleep 0.5
    done

    : >"$CL_RUN/load.failed-ids"
    echo "--- cluster load summary ---"
    echo "calls=$calls rate=$rate/s hold=${hold}s boxes=$n via kamailio $CL_LB_ADDR:$CL_LB_PORT"
    echo "callers: sipp exit=$caller_rc created=$created successful=$ok failed=$failed in ${elapsed}s"
    local lc=0 lb=0 unknown_leaks=0 got total_got=0 share cpu c b pid kam_cpu secs
    secs=$(( (t1_ms - t0_ms + 999) / 1000 ))
    for ((i = 1; i <= n; i++)); do
        got="$(tail -c +"$((log_off[i] + 1))" "$(box_run "$i")/voicebot1.log" 2>/dev/null | grep -c ': inbound from ' || true)"
        total_got=$((total_got + got))
        share="$(awk -v g="$got" -v n="$calls" 'BEGIN { printf "%.1f", 100 * g / n }')"
        if pid="$(box_asterisk_pid "$i")"; then
            # Average over the callers' run; not known for an Asterisk (re)started during it.
            cpu="n/a"
            [ "$pid" = "${ast_pid0[i]}" ] && cpu="$(awk -v a="$(cpu_ticks "$pid")" -v b="${ast_ticks0[i]}" \
                -v hz="$(getconf CLK_TCK)" -v s="$secs" 'BEGIN { printf "%d%%", 100 * (a - b) / hz / (s > 0 ? s : 1) }')"
            read -r c b <<<"$(box_leaks "$i")"
            # ARI did not answer: unknown, counted as a failure of the run.
            if [ "$c" -lt 0 ] || [ "$b" -lt 0 ]; then c=0 b=0 unknown_leaks=1; fi
            lc=$((lc + c)) lb=$((lb + b))
            echo "box=$i addr=$(box_addr "$i") calls=$got share=$share% asterisk_cpu=$cpu leaked_channels=$c leaked_bridges=$b state=$(box_state "$i")"
        else
            echo "box=$i addr=$(box_addr "$i") calls=$got share=$share% asterisk=down (its calls died with it; nothing to check) state=$(box_state "$i")"
        fi
    done
    # shellcheck disable=SC2046
    kam_cpu="$(awk -v a="$(cpu_ticks $(kamailio_pids))" -v b="$kam_ticks0" -v hz="$(getconf CLK_TCK)" -v s="$secs" \
               'BEGIN { printf "%d%%", 100 * (a - b) / hz / (s > 0 ? s : 1) }')"
    local kam_new failovers
    kam_new="$(tail -c +"$((kam_off + 1))" "$CL_RUN/kamailio.log" 2>/dev/null || true)"
    failovers="$(grep -c ' failover callid=' <<<"$kam_new" || true)"
    echo "kamailio: cpu=$kam_cpu failovers=$failovers box_state_changes=$(grep -cE ' box-(down|up) ' <<<"$kam_new" || true)"
    # Box kills and revivals during the run (kill-box / revive-box from another shell).
    if [ -f "$CL_EVENTS" ]; then
        awk -v a="$t0_ms" -v b="$t1_ms" '$1 >= a && $1 <= b { printf "event at +%.1fs: %s\n", ($1 - a) / 1000, substr($0, index($0, " ") + 1) }' "$CL_EVENTS"
    fi
    [ "$drained" = 1 ] || echo "not drained after 30 s"
    if [ "$failed" -gt 0 ]; then
        echo "caller errors (first lines of SIPp's error log):"
        cat "$work"/*_errors.log 2>/dev/null | grep -v '^The following events occurred' | grep -v 'Failed to delete FD from epoll' | head -n 6 | cut -c1-240 || true
        # Which box each failed call had been sent to (Kamailio's log, by Call-ID).
        cat "$work"/*_errors.log 2>/dev/null | grep -oE "[0-9]+-[0-9]+@$CL_CALLER_ADDR" | sort -u >"$work/failed.ids" || true
        cp "$work/failed.ids" "$CL_RUN/load.failed-ids"
        echo "failed calls by box (first INVITE): $(awk 'NR == FNR { failed[$1] = 1; next }
            / invite callid=/ { id = $0; sub(/.* callid=/, "", id); sub(/ .*/, "", id)
                                box = $0; sub(/.* box=/, "", box); sub(/ .*/, "", box)
                                if ((id in failed) && !(id in seen)) { seen[id] = 1; n[box]++ } }
            END { for (b in n) printf "%s%s=%d", sep, b, n[b]; sep = " " }' "$work/failed.ids" - <<<"$kam_new")"
    fi
    echo "hung up by the far side: $(cat "$work"/*_logs.log 2>/dev/null | grep -c '^far_bye call' || true)"
    echo "calls placed $calls, calls that reached a voicebot1: $total_got"
    echo "calls=$calls ok=$ok failed=$failed leaked_channels=$lc leaked_bridges=$lb"
    [ "$failed" -eq 0 ] && [ "$lc" -eq 0 ] && [ "$lb" -eq 0 ] && [ "$unknown_leaks" = 0 ]
}

check_box_number() {  # check_box_number COMMAND I
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt "$(boxes)" ]; then
        die "$1 expects a box number of the running cluster, 1 to $(boxes)"
    fi
}

cmd_kill_box() {
    local i="${1:-}" pid calls chans t_ms took
    check_box_number kill-box "$i"
    require_root
    pid="$(box_asterisk_pid "$i")" || die "box $i's Asterisk is not running"
    # The calls this kill loses: callers' channels on the box now.
    chans="$(box_ari "$i" GET /channels 2>/dev/null || echo '[]')"
    calls="$(jq '[.[] | select(.name | startswith("PJSIP/callers-"))] | length' <<<"$chans")"
    t_ms="$(now_ms)"
    kill -KILL "$pid"
    wait_gone "$pid" 10 || die "box $i's Asterisk (pid $pid) survived SIGKILL"
    rm -f "$(box_run "$i")/asterisk.pid"
    echo "$t_ms kill-box $i: Asterisk SIGKILLed with $calls call(s) on it" >>"$CL_EVENTS"
    log "box $i ($(box_addr "$i")): Asterisk (pid $pid) killed with $calls call(s) on it; voicebot1 keeps running and retries"
    if took="$(wait_box_state "$i" 'I*' 15 "$t_ms")"; then
        log "Kamailio set box $i inactive $took s after the kill (no new calls go to it)"
    else
        log "Kamailio still shows box $i as $(box_state "$i") 15 s after the kill"
        return 1
    fi
}

cmd_revive_box() {
    local i="${1:-}" t0 up_s reg_s act_s
    check_box_number revive-box "$i"
    require_root
    box_asterisk_pid "$i" >/dev/null && die "box $i's Asterisk is running"
    box_voicebot1_pid "$i" >/dev/null || die "box $i's voicebot1 is not running (it should have been waiting for its Asterisk)"
    t0="$(now_ms)"
    echo "$t0 revive-box $i: Asterisk started" >>"$CL_EVENTS"
    start_box_asterisk "$i"
    up_s="$(awk -v ms="$(($(now_ms) - t0))" 'BEGIN { printf "%.1f", ms / 1000 }')"
    log "box $i: Asterisk answers ARI ${up_s} s after the start"
    wait_registered "$i" 60 || die "box $i: voicebot1 did not reconnect within 60 s"
    reg_s="$(awk -v ms="$(($(now_ms) - t0))" 'BEGIN { printf "%.1f", ms / 1000 }')"
    log "box $i: voicebot1 reconnected on its own ${reg_s} s after the start"
    wait_box_state "$i" 'A*' 20 "$t0" >/dev/null || die "Kamailio still shows box $i as $(box_state "$i") 20 s after the start"
    act_s="$(awk -v ms="$(($(now_ms) - t0))" 'BEGIN { printf "%.1f", ms / 1000 }')"
    echo "$(now_ms) revive-box $i: voicebot1 reconnected after ${reg_s}s, Kamailio active after ${act_s}s" >>"$CL_EVENTS"
    log "box $i back: Kamailio set it active ${act_s} s after the start"
}

# Kamailio's "t=EPOCH.US WHAT field=..." lines from stdin as "MS WHAT field=...", MS being
# milliseconds since SINCE_MS (negative before it).
kam_rel() {  # kam_rel SINCE_MS
    awk -v t="$1" 'match($0, / t=[0-9]+\.[0-9]+ /) {
        printf "%d %s\n", substr($0, RSTART + 3, RLENGTH - 4) * 1000 - t, substr($0, RSTART + RLENGTH) }'
}

# The failover scenario: a load run with box 1 killed in it, revived later, then a check run.
cmd_failover() {
    local calls=300 rate=10 hold="1-15" kill_at=10 down_for=15 out verdict=ok
    while [ $# -gt 0 ]; do
        case "$1" in
            --calls) calls="${2:?}"; shift 2 ;;
            --rate) rate="${2:?}"; shift 2 ;;
            --hold) hold="${2:?}"; shift 2 ;;
            --kill-at) kill_at="${2:?}"; shift 2 ;;
            --down-for) down_for="${2:?}"; shift 2 ;;
            *) die "failover: unknown option $1" ;;
        esac
    done
    [ "$(boxes)" -ge 2 ] || die "failover needs a cluster of 2 boxes or more (scripts/cluster.sh up)"
    out="$(mktemp -d /tmp/vb1-failover.XXXXXX)"
    local kam_off load_pid lost kam_new
    kam_off="$(stat -c %s "$CL_RUN/kamailio.log" 2>/dev/null || echo 0)"
    "$0" load --calls "$calls" --rate "$rate" --hold "$hold" >"$out/load.out" 2>&1 &
    load_pid=$!
    sleep "$kill_at"
    "$0" kill-box 1 2>&1 | tee "$out/kill.out" || verdict=FAILED
    # The moment of the SIGKILL, as kill-box recorded it.
    local t_kill
    t_kill="$(awk '$2 == "kill-box" && $3 == "1:" { t = $1 } END { print t }' "$CL_EVENTS")"
    sleep "$down_for"
    "$0" revive-box 1 2>&1 | tee "$out/revive.out" || verdict=FAILED
    wait "$load_pid" || true
    cat "$out/load.out"
    kam_new="$(tail -c +"$((kam_off + 1))" "$CL_RUN/kamailio.log" | kam_rel "$t_kill")"
    lost="$(sed -n 's/.* killed with \([0-9]*\) call.*/\1/p' "$out/kill.out")"
    # Kamailio's view, in milliseconds since the kill: when it set box 1 down, the INVITEs it sent
    # to box 1 until then (each failed over after fr_timer), and the first box of every call.
    local b1 down_ms down_s after last_s
    b1="$(box_uri 1)"
    down_ms="$(awk -v u="$b1" '$1 >= 0 && $2 == "box-down" && $3 == "box=" u && d == "" { d = $1 } END { print d }' <<<"$kam_new")"
    down_s="$(awk -v v="$down_ms" 'BEGIN { if (v != "") printf "%.1f", v / 1000 }')"
    after="$(awk -v u="$b1" -v d="${down_ms:-999999}" '$1 >= 0 && $1 <= d && $2 == "invite" && $4 == "box=" u { n++ } END { print n + 0 }' <<<"$kam_new")"
    last_s="$(awk -v u="$b1" -v d="${down_ms:-999999}" '$1 >= 0 && $1 <= d && $2 == "invite" && $4 == "box=" u { l = $1 }
        END { if (l != "") printf "%.1f", l / 1000; else print "none" }' <<<"$kam_new")"
    # Each failed call (Call-IDs from the load run) by where Kamailio first sent it: to box 1
    # before the kill (a call the kill was bound to lose), or anything else (a failure not
    # explained by the kill).
    local line failed on_b1 other offered_after
    line="$(tail -n 1 "$out/load.out")"
    failed="$(sed -n 's/.* failed=\([0-9]*\) .*/\1/p' <<<"$line")"
    read -r on_b1 other offered_after < <(awk -v u="$b1" 'NR == FNR { failed[$1] = 1; next }
        $2 == "invite" { id = substr($3, 8); if (id in first) next; first[id] = 1
                         if ($1 >= 0) after++
                         if (id in failed) { if ($1 < 0 && $4 == "box=" u) b1++; else other++ } }
        END { print b1 + 0, other + 0, after + 0 }' "$CL_RUN/load.failed-ids" - <<<"$kam_new")
    echo "--- failover figures ---"
    echo "box 1 killed at +${kill_at}s with ${lost:-?} caller channel(s) on it (Asterisk's list just before SIGKILL)"
    echo "Kamailio set box 1 down ${down_s:-?} s after the kill; INVITEs it sent to box 1 in between: $after (last ${last_s} s after the kill), each failed over to box 2 after fr_timer (2 s)"
    echo "failed calls: ${failed:-?}: $on_b1 sent to box 1 before the kill (lost with it), $other other"
    echo "calls offered after the kill: $offered_after, failed: $other"
    # Judged: the only failures are calls that were on box 1 when it died.
    if [ "${failed:-x}" != "$on_b1" ] || [ "$other" != 0 ]; then
        echo "FAILED: failures other than the calls on box 1 at the kill"; verdict=FAILED
    fi
    grep -q 'leaked_channels=0 leaked_bridges=0$' <<<"$line" || { echo "FAILED: leaks: $line"; verdict=FAILED; }
    # After the revival: box 1 takes calls again, none fails.
    local check b1_calls
    "$0" load --calls 40 --rate 10 --hold 1-5 >"$out/check.out" 2>&1 || verdict=FAILED
    check="$(tail -n 1 "$out/check.out")"
    b1_calls="$(sed -n 's/^box=1 .* calls=\([0-9]*\) share=\([0-9.]*%\).*/\1 (\2)/p' "$out/check.out")"
    echo "check run after revive-box 1: $check; box 1 took ${b1_calls:-?} of the calls"
    case "$check" in *" failed=0 leaked_channels=0 leaked_bridges=0") ;; *) echo "FAILED: check run: $check"; verdict=FAILED ;; esac
    [ "${b1_calls%% *}" -gt 0 ] 2>/dev/null || { echo "FAILED: box 1 took no call after its revival"; verdict=FAILED; }
    rm -rf "$out"
    echo "failover: lost=$on_b1 failed=${failed:-?} down_after=${down_s:-?}s invites_to_dead_box=$after box1_after_revive=${b1_calls%% *} result=$verdict"
    [ "$verdict" = ok ]
}

cmd="${1:-}"; shift || true
case "$cmd" in
    up) require_root; lock; cmd_up "$@" ;;
    down) require_root; lock; cmd_down ;;
    status) cmd_status ;;
    load) cmd_load "$@" ;;
    kill-box) require_root; lock; cmd_kill_box "$@" ;;
    revive-box) require_root; lock; cmd_revive_box "$@" ;;
    failover) require_root; cmd_failover "$@" ;;
    -h|--help) sed -n '2,40p' "$0" ;;
    *) echo "usage: $0 up [--boxes N] | status | down | load --calls N --rate R [--hold A-B] | kill-box I | revive-box I | failover [...]" >&2; exit 2 ;;
esac
