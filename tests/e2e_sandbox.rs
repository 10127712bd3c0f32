//! End-to-end tests against the real Asterisk 22 sandbox and real SIPp callers and destinations.
//!
//! They need `scripts/asterisk-sandbox.sh up` (root, loopback ports 5060/5080/8088 or the
//! VB1_*_PORT variables), so they are `#[ignore]`d in a plain `cargo test`; `scripts/test.sh`
//! brings the sandbox up and runs them with `--include-ignored --test-threads=1` (they share the
//! one Asterisk and the destination's SIP port, and each ends by asserting Asterisk is empty).

#[path = "e2e/bots.rs"]
mod bots;
#[path = "support/process.rs"]
mod process;
#[path = "e2e/sandbox.rs"]
mod sandbox;

use std::time::{Duration, Instant};

use sandbox::*;

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_call_with_audio_is_echoed_then_transferred_and_bridged() {
    require_sandbox();
    let dir = workdir("audio");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26500, 26519, 7000));
    let t0 = Instant::now();
    let mut caller = caller(&dir, 14_000, 5171, 6100);

    // During the media phase everything the caller hears comes from the bot (a mixing bridge
    // does not return a channel's own audio), so RTP to the caller's media port is the echo.
    vb.expect_log("caller and media bridged", Duration::from_secs(10));
    let echoed = count_udp_to(6100, Duration::from_secs(3));
    assert!(
        echoed > 50,
        "the caller received only {echoed} RTP packets in 3 s of media phase"
    );

    let ended_media = vb.expect_log("bot media ended", Duration::from_secs(10));
    let since = t0.elapsed();
    assert!(
        since >= Duration::from_secs(6) && since < Duration::from_secs(11),
        "media phase lasted {since:?}"
    );
    let rx = number_after(&ended_media, "rx ");
    let tx = number_after(&ended_media, "tx ");
    assert!(
        rx > 100 && tx > 100,
        "echo counted rx {rx} tx {tx}: {ended_media}"
    );

    vb.expect_log("caller and destination bridged", Duration::from_secs(10));
    let bridges = ari().list_bridges().unwrap();
    assert_eq!(bridges.len(), 1, "{bridges:?}");
    let b = &bridges[0];
    assert!(
        b.id.starts_with("voicebot1-") && b.channels.len() == 2,
        "{b:?}"
    );
    assert!(b.channels.iter().any(|c| c.ends_with("-dest")), "{b:?}");

    let status = caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_caller_hangs_up_at_3s_and_the_destination_is_never_called() {
    require_sandbox();
    let dir = workdir("early-hangup");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26520, 26539, 7000));
    let mut caller = caller(&dir, 3_000, 5172, 6110);
    let status = caller
        .wait(Duration::from_secs(20))
        .expect("caller still running");
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));
    // Past the moment the transfer would have happened.
    std::thread::sleep(Duration::from_secs(6));
    let log = vb.log_text();
    assert!(
        !log.contains("transferring"),
        "voicebot1 transferred after the caller left:\n{log}"
    );
    let seen = sip_messages(&dir, "dest");
    assert!(
        !seen.contains("INVITE sip:"),
        "the destination received an INVITE:\n{seen}"
    );
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_destination_hangs_up_first_and_the_caller_is_hung_up() {
    require_sandbox();
    let dir = workdir("dest-hangup");
    let _dest = destination(&dir, "uas-hangup.xml", Some(2_000));
    let vb = Voicebot::start(&dir, &config_text(26540, 26559, 3000));
    let t0 = Instant::now();
    let mut caller = caller(&dir, 60_000, 5173, 6120);
    vb.expect_log("ended (destination hung up)", Duration::from_secs(20));
    assert_caller_hung_up(&mut caller, t0, &dir);
    assert!(
        sip_messages(&dir, "caller").contains("BYE sip:"),
        "the caller got no BYE"
    );
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_destination_busy_and_the_caller_is_hung_up() {
    require_sandbox();
    let dir = workdir("dest-busy");
    let _dest = destination(&dir, "uas-busy.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26560, 26579, 3000));
    let t0 = Instant::now();
    let mut caller = caller(&dir, 60_000, 5174, 6130);
    let line = vb.expect_log("destination did not answer", Duration::from_secs(20));
    assert!(line.contains("cause 17"), "{line}");
    assert_caller_hung_up(&mut caller, t0, &dir);
    assert!(
        sip_messages(&dir, "dest").contains("486 Busy"),
        "the destination did not answer busy"
    );
    finish(vb);
}

/// The number after `key` in a log line (`rx 350 pkts` → 350).
fn number_after(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_echo_ignores_packets_from_anyone_but_asterisk() {
    use std::net::UdpSocket;
    require_sandbox();
    let dir = workdir("hostile");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26580, 26599, 8000));
    let _caller = caller(&dir, 7_000, 5175, 6140);
    let leased = vb.expect_log("leased port", Duration::from_secs(10));
    let port: u16 = leased
        .rsplit(' ')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("port in log line");
    vb.expect_log("caller and media bridged", Duration::from_secs(10));

    // A stranger on another loopback address, and one on Asterisk's own address but another port,
    // both sending well-formed RTP: neither may get an answer.
    let mut rtp = vec![0x80u8, 8, 0, 1, 0, 0, 0, 160, 9, 9, 9, 9];
    rtp.extend_from_slice(&[0xd5; 160]);
    for from in ["127.0.0.2:0", "127.0.0.1:0"] {
        let s = UdpSocket::bind(from).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for _ in 0..20 {
            s.send_to(&rtp, ("127.0.0.1", port)).unwrap();
            s.send_to(b"garbage, not RTP", ("127.0.0.1", port)).unwrap();
        }
        let mut buf = [0u8; 512];
        assert!(
            s.recv_from(&mut buf).is_err(),
            "a packet from {from} was answered by the echo on port {port}"
        );
    }
    // The socket is connected to Asterisk's end of the media since the externalMedia answer: the
    // kernel drops the strangers' packets before the echo sees them, and every packet the echo
    // got came from Asterisk and was answered.
    let ended = vb.expect_log("bot media ended", Duration::from_secs(15));
    let (rx, tx) = (number_after(&ended, "rx "), number_after(&ended, "tx "));
    assert!(rx > 100 && rx == tx, "{ended}");
    assert!(!ended.contains("from other addresses"), "{ended}");
    vb.expect_log("ended (caller hung up)", Duration::from_secs(15));
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_full_call_at_trace_level_never_logs_the_password() {
    require_sandbox();
    let dir = workdir("secret");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let config =
        config_text(26600, 26609, 2000).replace("log_level = \"debug\"", "log_level = \"trace\"");
    let vb = Voicebot::start(&dir, &config);
    let mut caller = caller(&dir, 5_000, 5176, 6150);
    caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    vb.expect_log("ended (", Duration::from_secs(15));
    let log = finish(vb);
    assert!(
        log.contains("[TRACE] ARI event"),
        "the log is not at trace level"
    );
    assert!(
        log.contains("caller and destination bridged"),
        "the call did not reach the transfer:\n{log}"
    );
    assert!(
        !log.contains("voicebot1-sandbox"),
        "the password appears in the log"
    );
    // Nor its basic-auth form.
    assert!(!log.contains(&voicebot1::ari::rest::basic_auth("voicebot1", "voicebot1-sandbox")[6..]));
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_calls_beyond_the_pool_skip_the_bot_and_are_transferred() {
    require_sandbox();
    let dir = workdir("exhausted");
    let _dest = destination(&dir, "uas-answer.xml", None);
    // Two ports, three simultaneous callers.
    let vb = Voicebot::start(&dir, &config_text(26610, 26611, 4000));
    let remote = format!("127.0.0.1:{}", sip_port());
    let mut callers = sipp(
        &dir,
        "caller",
        "uac-audio.xml",
        Some(8_000),
        &[
            &remote,
            "-s",
            "3308487",
            "-i",
            "127.0.0.1",
            "-p",
            "5177",
            "-mp",
            "6160",
            "-m",
            "3",
            "-l",
            "3",
            "-r",
            "10",
            "-timeout",
            "60s",
        ],
    );
    let line = vb.expect_log("no free port in the pool", Duration::from_secs(10));
    assert!(line.contains("skipping the bot, transferring"), "{line}");
    let status = callers
        .wait(Duration::from_secs(40))
        .expect("callers still running");
    assert!(
        status.success(),
        "callers failed:\n{}",
        read(&dir.join("caller.out"))
    );
    let log = vb.log_text();
    assert_eq!(
        log.matches("caller and destination bridged").count(),
        3,
        "{log}"
    );
    assert_eq!(log.matches("caller and media bridged").count(), 2, "{log}");
    let log = finish(vb);
    assert!(log.contains("1 without a free port"), "{log}");
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_https_and_wss_with_the_sandbox_ca_carry_a_full_call() {
    require_sandbox();
    let ca = "/run/voicebot1-sandbox/ari-ca.pem";
    assert!(
        std::path::Path::new(ca).exists(),
        "{ca} missing: the sandbox makes it at every up"
    );
    let tls_url = format!("https://127.0.0.1:{}", env_port("VB1_ARI_TLS_PORT", 8089));
    let plain_url = format!("http://127.0.0.1:{}", ari_port());

    // Without the CA the certificate is refused; voicebot1 says so and keeps retrying.
    let dir = workdir("tls-untrusted");
    let config = config_text(26620, 26629, 2000).replace(&plain_url, &tls_url);
    let mut untrusted = Voicebot::spawn(&dir, &config);
    let line = untrusted.expect_log("reconnecting in", Duration::from_secs(15));
    assert!(
        line.contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    assert!(
        untrusted.is_running(),
        "voicebot1 exited on an untrusted certificate"
    );
    drop(untrusted);

    let dir = workdir("tls");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let config = config_text(26620, 26629, 2000)
        .replace(&plain_url, &tls_url)
        .replace("[media]", &format!("ca_file = \"{ca}\"\n[media]"));
    let vb = Voicebot::start(&dir, &config);
    assert!(
        vb.log_text().contains("at wss://127.0.0.1:"),
        "{}",
        vb.log_text()
    );
    let mut caller = caller(&dir, 5_000, 5178, 6170);
    caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    vb.expect_log("caller and destination bridged", Duration::from_secs(10));
    vb.expect_log("ended (", Duration::from_secs(15));
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_caller_hears_ringback_while_the_destination_rings() {
    require_sandbox();
    let dir = workdir("ringback");
    let _dest = destination(&dir, "uas-noanswer.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26630, 26639, 2000));
    let _caller = caller(&dir, 9_000, 5179, 6180);
    vb.expect_log("transferring to", Duration::from_secs(10));
    // The bot is gone and the destination does not answer: what reaches the caller is ringback.
    let ringback = count_udp_to(6180, Duration::from_secs(3));
    assert!(
        ringback > 50,
        "the caller received only {ringback} RTP packets in 3 s of ringing"
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(15));
    assert!(!vb.log_text().contains("no ringback"), "{}", vb.log_text());
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_unreachable_destination_endpoint_hangs_up_the_caller() {
    require_sandbox();
    let dir = workdir("unreachable");
    let config = config_text(26640, 26649, 1000).replace(
        "[transfer]\n",
        "[transfer]\nendpoint = \"PJSIP/4438007@no-such-endpoint\"\n",
    );
    let vb = Voicebot::start(&dir, &config);
    let t0 = Instant::now();
    let mut caller = caller(&dir, 60_000, 5180, 6190);
    let line = vb.expect_log("ended (", Duration::from_secs(15));
    assert!(
        line.contains("Originate failed") && line.contains("Allocation failed"),
        "{line}"
    );
    // No ringback for a destination never called: started and cut within a millisecond, it
    // froze the caller in Asterisk 22.10.1 for 10 minutes (about 1 call in 600).
    assert!(
        !vb.log_text().contains("/play/"),
        "ringback started for a refused origination:\n{}",
        vb.log_text()
    );
    assert_caller_hung_up(&mut caller, t0, &dir);
    finish(vb);
}

/// `voicebot1 --check --online` with `config`: exit code and stdout.
fn preflight(dir: &std::path::Path, name: &str, config: &str) -> (Option<i32>, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot1"))
        .args(["--check", "--online"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn check_line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_preflight_passes_and_names_a_wrong_password_and_an_unknown_endpoint() {
    require_sandbox();
    let dir = workdir("preflight");
    let good = config_text(26650, 26659, 1000);
    let (code, out) = preflight(&dir, "good", &good);
    assert_eq!(code, Some(0), "{out}");
    for check in [
        "credentials",
        "version",
        "modules",
        "application",
        "transfer endpoint",
        "media ports",
    ] {
        assert!(check_line(&out, check).starts_with("PASS"), "{out}");
    }

    let (code, out) = preflight(
        &dir,
        "password",
        &good.replace("voicebot1-sandbox", "not-the-password"),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        check_line(&out, "credentials").starts_with("FAIL  credentials: HTTP 401"),
        "{out}"
    );

    let unknown = good.replace(
        "[transfer]\n",
        "[transfer]\nendpoint = \"PJSIP/4438007@no-such-endpoint\"\n",
    );
    let (code, out) = preflight(&dir, "endpoint", &unknown);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        check_line(&out, "transfer endpoint").contains("no endpoint PJSIP/no-such-endpoint"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{out}"
    );

    // A voicebot1 running under the same application name makes the name check fail.
    let vb = Voicebot::start(&dir, &good);
    let (code, out) = preflight(&dir, "taken", &config_text(26660, 26669, 1000));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        check_line(&out, "application").contains("already registered"),
        "{out}"
    );
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_connected_call_ends_when_the_destination_hangs_up_with_no_voicebot1_running() {
    require_sandbox();
    let dir = workdir("no-voicebot1");
    // The destination hangs up 6 s after answering, long after voicebot1 is gone.
    let _dest = destination(&dir, "uas-hangup.xml", Some(6_000));
    let config = config_text(26670, 26679, 1000);
    let mut vb = Voicebot::start(&dir, &config);
    let t0 = Instant::now();
    let mut caller = caller(&dir, 60_000, 5181, 6200);
    vb.expect_log("caller and destination bridged", Duration::from_secs(15));
    vb.signal("KILL");
    assert!(
        vb.wait_exit(Duration::from_secs(5)).is_some(),
        "voicebot1 survived SIGKILL"
    );
    // Asterisk itself hangs the caller up (the hang-up handler voicebot1 put on the legs).
    assert_caller_hung_up(&mut caller, t0, &dir);
    // What is left is at most the empty bridge, which the next voicebot1 removes at start-up.
    let channels = ari().list_channels().unwrap();
    assert!(channels.is_empty(), "{channels:?}");
    let next = Voicebot::start(&dir, &config);
    next.expect_log("sweep: 0 calls adopted", Duration::from_secs(5));
    finish(next);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_sigterm_hands_a_connected_call_to_the_next_voicebot1() {
    require_sandbox();
    let dir = workdir("handover");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let config = config_text(26680, 26689, 1000);
    let vb = Voicebot::start(&dir, &config);
    let mut caller = caller(&dir, 12_000, 5182, 6210);
    vb.expect_log("caller and destination bridged", Duration::from_secs(15));
    let log = vb.stop_clean();
    assert!(
        log.contains("handed over to the next voicebot1 (caller and destination connected)"),
        "{log}"
    );
    assert!(caller.is_running(), "the stop hung the caller up");
    let next = Voicebot::start(&dir, &config);
    next.expect_log("adopted from an earlier voicebot1", Duration::from_secs(5));
    // The caller hangs up at 12 s as planned; the adopted call ends cleanly.
    let status = caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    next.expect_log("ended (caller hung up)", Duration::from_secs(10));
    finish(next);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_metrics_agree_with_the_log_after_a_call_with_audio() {
    require_sandbox();
    let dir = workdir("metrics");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let vb = Voicebot::start(&dir, &config_text(26690, 26699, 3000));
    assert!(vb
        .expect_health(200, Duration::from_secs(5))
        .starts_with("ok: ARI connected"));
    let mut caller = caller(&dir, 6_000, 5183, 6220);
    let status = caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    let media = vb.expect_log("bot media ended", Duration::from_secs(10));
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));

    let (code, text) = vb.get_metrics_path("/metrics");
    assert_eq!(code, 200, "{text}");
    // What the log says of the echo, the counters say too.
    assert_eq!(
        metric(&text, "voicebot1_echo_packets_received_total"),
        number_after(&media, "rx ")
    );
    assert_eq!(
        metric(&text, "voicebot1_echo_packets_sent_total"),
        number_after(&media, "tx ")
    );
    assert!(
        metric(&text, "voicebot1_echo_packets_received_total") > 50,
        "{media}"
    );
    assert_eq!(metric(&text, "voicebot1_bot_sessions_total"), 1);
    assert_eq!(
        metric(&text, r#"voicebot1_calls_started_total{origin="inbound"}"#),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"voicebot1_calls_ended_total{outcome="caller_hangup"}"#
        ),
        1
    );
    assert_eq!(metric(&text, "voicebot1_call_setup_seconds_count"), 1);
    for op in ["create_bridge", "external_media", "originate"] {
        assert_eq!(
            metric(
                &text,
                &format!("voicebot1_ari_requests_total{{operation=\"{op}\",class=\"2xx\"}}")
            ),
            1,
            "{op}"
        );
    }
    assert_eq!(metric(&text, "voicebot1_pool_ports_free"), 10);
    finish(vb);
}

/// Starts the sandbox Asterisk again if a test stopped it and failed before it came back.
struct AsteriskBack;

impl Drop for AsteriskBack {
    fn drop(&mut self) {
        if ari().asterisk_version().is_err() {
            eprintln!("starting the sandbox Asterisk again (the test stopped it)");
            let _ = sandbox_script(&["up"]);
        }
    }
}

/// Stops and starts the sandbox's Asterisk: run it only where nobody else uses the sandbox.
#[test]
#[ignore = "needs the Asterisk sandbox, and stops it: scripts/test.sh runs it"]
fn sandbox_health_is_503_while_asterisk_is_stopped_and_200_when_it_is_back() {
    require_sandbox();
    let dir = workdir("health-restart");
    // A short reconnect backoff, so the return is seen within 2 s.
    let config =
        config_text(26700, 26709, 2000).replace("[ari]\n", "[ari]\nreconnect_max_ms = 2000\n");
    let vb = Voicebot::start(&dir, &config);
    assert!(vb
        .expect_health(200, Duration::from_secs(5))
        .starts_with("ok: ARI connected"));

    let _back = AsteriskBack;
    // Its exit status says little (the CLI connection ends with Asterisk): /health tells.
    let _ = sandbox_script(&["cli", "core stop now"]);
    let down = vb.expect_health(503, Duration::from_secs(15));
    assert!(down.contains("WebSocket not connected"), "{down}");
    assert_eq!(
        metric(
            &vb.get_metrics_path("/metrics").1,
            "voicebot1_ari_websocket_connected"
        ),
        0
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        vb.get_metrics_path("/health").0,
        503,
        "healthy again with Asterisk stopped"
    );

    assert!(
        sandbox_script(&["up"]).success(),
        "scripts/asterisk-sandbox.sh up failed"
    );
    let up = vb.expect_health(200, Duration::from_secs(20));
    assert!(up.starts_with("ok: ARI connected"), "{up}");
    let text = vb.get_metrics_path("/metrics").1;
    assert_eq!(metric(&text, "voicebot1_ari_websocket_connected"), 1);
    assert!(
        metric(&text, "voicebot1_ari_websocket_reconnects_total") >= 1,
        "{text}"
    );
    finish(vb);
}

/// `config_text` with bots: `[bots.NAME]` tables (TOML text), and `sales` in `[transfer.to]`
/// (the same answering destination, so that a named transfer is heard to work).
fn bot_config(port_min: u16, port_max: u16, bots: &str) -> String {
    format!(
        "{}{bots}\n[transfer.to]\nsales = \"PJSIP/4438007@AVAYA-endpoint\"\n",
        config_text(port_min, port_max, 7000)
    )
}

/// The share of a 1 kHz tone in what the caller received (a-law RTP) in its first `window`.
fn tone_heard(packets: &[(Duration, Vec<u8>)], window: Duration) -> f64 {
    let samples: Vec<i16> = packets
        .iter()
        .filter(|(t, _)| *t < window)
        .flat_map(|(_, p)| p.iter().map(|b| bots::alaw_to_linear(*b)))
        .collect();
    bots::tone_share(&samples, 1000.0)
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_twilio_reference_bot_hears_the_caller_is_heard_gets_keys_and_its_named_transfer_connects(
) {
    use bots::{bot_caller, capture_rtp_to, Bot, Key};
    require_sandbox();
    let dir = workdir("bot-twilio");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let bot = Bot::reference(&dir, "twilio", 8781, &[]);
    let config = bot_config(
        26600,
        26619,
        "[bots.ref]\nurl = \"ws://127.0.0.1:8781/\"\nmax_s = 60\n",
    );
    let vb = Voicebot::start(&dir, &config);
    // Key 1: the reference bot asks for a transfer to "sales".
    let mut caller = bot_caller(
        &dir,
        "ref",
        "lang=fr,campaign=x",
        4_000,
        &[Key {
            after_ms: 4_000,
            digit: '1',
        }],
        5181,
        6150,
    );
    vb.expect_log("bot ref connected in", Duration::from_secs(10));
    let heard = capture_rtp_to(&dir, 6150, Duration::from_secs(3));
    let share = tone_heard(&heard, Duration::from_millis(1400));
    assert!(share > 0.5, "the caller did not hear the bot's 1 kHz tone (its share of the audio {share:.2}, {} packets)", heard.len());

    let start = bot.expect("start", Duration::from_secs(5), |_| true);
    let params = &start["start"]["customParameters"];
    assert_eq!(
        (
            params["lang"].as_str(),
            params["campaign"].as_str(),
            params["exten"].as_str()
        ),
        (Some("fr"), Some("x"), Some("3308488")),
        "{start}"
    );
    assert!(
        params["call_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{start}"
    );
    bot.expect("first_audio", Duration::from_secs(5), |_| true);
    let key = bot.expect("dtmf", Duration::from_secs(10), |_| true);
    assert_eq!(key["digit"], "1", "{key}");
    vb.expect_log(
        "bot ref asked for transfer to sales",
        Duration::from_secs(5),
    );
    vb.expect_log(
        "transferring to PJSIP/4438007@AVAYA-endpoint",
        Duration::from_secs(5),
    );
    vb.expect_log("caller and destination bridged", Duration::from_secs(10));
    // The bot was told the call left it, and heard the caller all along.
    bot.expect("stop", Duration::from_secs(5), |_| true);
    let summary = bot.expect("audio_summary", Duration::from_secs(5), |_| true);
    assert!(
        summary["frames"].as_u64().unwrap_or(0) > 150,
        "the bot heard little of the caller: {summary}"
    );
    let ended = vb.expect_log("bot media ended", Duration::from_secs(5));
    assert!(ended.contains("frames to the bot"), "{ended}");
    assert!(
        caller
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_asterisk_dialect_bot_in_slin16_is_heard_gets_keys_and_its_hangup_ends_the_call() {
    use bots::{bot_caller, capture_rtp_to, Bot, Key};
    require_sandbox();
    let dir = workdir("bot-asterisk");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let bot = Bot::reference(&dir, "asterisk", 8782, &[]);
    let config = bot_config(
        26620,
        26639,
        "[bots.ast]\nurl = \"ws://127.0.0.1:8782/media\"\nprotocol = \"asterisk\"\nformat = \"slin16\"\nwhen_done = \"hangup\"\n",
    );
    let vb = Voicebot::start(&dir, &config);
    let t0 = Instant::now();
    // The bot sends HANGUP 5 s in: its end, and when_done hangs the caller up.
    let mut caller = bot_caller(
        &dir,
        "ast",
        "action=hangup,after_ms=5000",
        30_000,
        &[Key {
            after_ms: 2_500,
            digit: '9',
        }],
        5182,
        6160,
    );
    vb.expect_log("bot ast connected in", Duration::from_secs(10));
    let heard = capture_rtp_to(&dir, 6160, Duration::from_secs(3));
    let share = tone_heard(&heard, Duration::from_millis(1400));
    assert!(
        share > 0.5,
        "the caller did not hear the bot's tone in slin16 (share {share:.2}, {} packets)",
        heard.len()
    );
    let start = bot.expect("media_start", Duration::from_secs(5), |_| true);
    assert_eq!(start["message"]["format"], "slin16", "{start}");
    assert_eq!(start["message"]["optimal_frame_size"], 640, "{start}");
    let key = bot.expect("dtmf", Duration::from_secs(10), |_| true);
    assert_eq!(key["digit"], "9", "{key}");
    vb.expect_log("bot ast closed: hanging up", Duration::from_secs(10));
    vb.expect_log("ended (the bot hung up)", Duration::from_secs(5));
    assert_caller_hung_up(&mut caller, t0, &dir);
    let summary = bot.expect("audio_summary", Duration::from_secs(5), |_| true);
    assert!(
        summary["frames"].as_u64().unwrap_or(0) > 100,
        "the bot heard little of the caller: {summary}"
    );
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_a_bot_cannot_dial_an_unlisted_name_its_hangup_works_and_an_unreachable_bot_sends_the_caller_on(
) {
    use bots::{bot_caller, Bot};
    require_sandbox();
    let dir = workdir("bot-requests");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let _bot = Bot::reference(&dir, "twilio", 8783, &[]);
    let config = bot_config(
        26640,
        26659,
        "[bots.ref]\nurl = \"ws://127.0.0.1:8783/\"\nmax_s = 5\n\
         [bots.gone]\nurl = \"ws://127.0.0.1:9/\"\nconnect_timeout_ms = 500\n",
    );
    let vb = Voicebot::start(&dir, &config);

    // A transfer to "nowhere": refused and counted, the caller stays until max_s, then the
    // default destination.
    let mut caller = bot_caller(
        &dir,
        "ref",
        "action=refused_transfer,after_ms=1000",
        8_000,
        &[],
        5183,
        6170,
    );
    let refused = vb.expect_log("does not list: refused", Duration::from_secs(10));
    assert!(refused.contains("nowhere"), "{refused}");
    let transfer = vb.expect_log("transferring to", Duration::from_secs(10));
    assert!(
        transfer.contains("PJSIP/4438007@AVAYA-endpoint") && transfer.contains("after 5."),
        "{transfer}"
    );
    vb.expect_log("caller and destination bridged", Duration::from_secs(10));
    assert!(
        caller
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));

    // The hangup extension.
    let t0 = Instant::now();
    let mut caller = bot_caller(
        &dir,
        "ref",
        "action=hangup,after_ms=1500",
        30_000,
        &[],
        5184,
        6171,
    );
    vb.expect_log("bot ref asked to hang up", Duration::from_secs(10));
    vb.expect_log("ended (the bot hung up)", Duration::from_secs(5));
    assert_caller_hung_up(&mut caller, t0, &dir);

    // Nobody listens: on_failure (transfer) within connect_timeout.
    let mut caller = bot_caller(&dir, "gone", "", 4_000, &[], 5185, 6172);
    let failed = vb.expect_log("bot gone unreachable", Duration::from_secs(10));
    assert!(failed.contains("transferring"), "{failed}");
    let second = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while vb.count_log(needle) < 2 {
            assert!(
                Instant::now() < deadline,
                "no second {needle:?}:\n{}",
                vb.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    second("caller and destination bridged");
    assert!(
        caller
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    second("ended (caller hung up)");
    let metrics = vb.scrape().0;
    assert_eq!(
        metric(
            &metrics,
            "voicebot1_bot_requests_total{bot=\"ref\",request=\"refused_transfer\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "voicebot1_bot_requests_total{bot=\"ref\",request=\"hangup\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "voicebot1_bot_failures_total{bot=\"gone\",reason=\"unreachable\"}"
        ),
        1
    );
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox and pipecat-ai from PyPI: scripts/test.sh runs it"]
fn sandbox_pipecat_bot_with_its_own_twilio_serializer_hears_the_caller_is_heard_and_its_end_transfers(
) {
    use bots::{bot_caller, capture_rtp_to, Bot};
    require_sandbox();
    let dir = workdir("bot-pipecat");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let bot = Bot::pipecat(&dir, 8784, &["--end-after-s", "5"]);
    let config = bot_config(
        26660,
        26679,
        "[bots.pipecat]\nurl = \"ws://127.0.0.1:8784/ws\"\n",
    );
    let vb = Voicebot::start(&dir, &config);
    let mut caller = bot_caller(&dir, "pipecat", "lang=en", 9_000, &[], 5186, 6173);
    vb.expect_log("bot pipecat connected in", Duration::from_secs(10));
    let heard = capture_rtp_to(&dir, 6173, Duration::from_secs(3));
    let share = tone_heard(&heard, Duration::from_millis(1400));
    assert!(
        share > 0.5,
        "the caller did not hear the pipeline's tone (share {share:.2}, {} packets)",
        heard.len()
    );
    let start = bot.expect("start", Duration::from_secs(5), |_| true);
    assert_eq!(start["custom_parameters"]["lang"], "en", "{start}");
    bot.expect("first_audio", Duration::from_secs(5), |_| true);
    // The pipeline ends (auto hang-up off): the socket closes, when_done sends the caller on.
    vb.expect_log("bot pipecat closed: transferring", Duration::from_secs(15));
    vb.expect_log("caller and destination bridged", Duration::from_secs(10));
    let summary = bot.expect("audio_summary", Duration::from_secs(10), |_| true);
    assert!(
        summary["frames"].as_u64().unwrap_or(0) > 20,
        "little caller audio reached the pipeline: {summary}"
    );
    assert!(
        caller
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    vb.expect_log("ended (caller hung up)", Duration::from_secs(10));
    finish(vb);
}

#[test]
#[ignore = "needs the Asterisk sandbox: scripts/test.sh runs it"]
fn sandbox_sigterm_transfers_a_caller_talking_to_a_bot_the_bot_hears_stop_and_the_next_voicebot1_adopts_the_call(
) {
    use bots::{bot_caller, Bot};
    require_sandbox();
    let dir = workdir("bot-handover");
    let _dest = destination(&dir, "uas-answer.xml", None);
    let bot = Bot::reference(&dir, "twilio", 8785, &[]);
    let config = bot_config(
        26690,
        26699,
        "[bots.ref]\nurl = \"ws://127.0.0.1:8785/\"\nmax_s = 60\n",
    );
    let vb = Voicebot::start(&dir, &config);
    let mut caller = bot_caller(&dir, "ref", "", 12_000, &[], 5187, 6174);
    vb.expect_log("bot ref connected in", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    // A handover stop: the caller with the bot is transferred (the bot is told `stop`), then
    // left connected for the next instance.
    let log = vb.stop_clean();
    assert!(
        log.contains("transferring to PJSIP/4438007@AVAYA-endpoint"),
        "{log}"
    );
    assert!(log.contains("handed over to the next voicebot1"), "{log}");
    bot.expect("stop", Duration::from_secs(5), |_| true);
    assert!(caller.is_running(), "the stop hung the caller up");
    let next = Voicebot::start(&dir, &config);
    next.expect_log("adopted from an earlier voicebot1", Duration::from_secs(5));
    let status = caller
        .wait(Duration::from_secs(30))
        .expect("caller still running");
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(&dir, "caller")
    );
    next.expect_log("ended (caller hung up)", Duration::from_secs(10));
    finish(next);
}
