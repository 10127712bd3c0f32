//! voicebot1's start-up sweep against the scripted fake ARI
//! (tests/support/fake_ari/): leftovers of a crashed earlier run are
//! pre-populated in the fake, which a real Asterisk cannot be set up with on
//! demand from a test.

use crate::support::*;

#[test]
fn fake_ari_startup_sweep_removes_leftover_voicebot1_resources() {
    let fake = FakeAri::start();
    fake.add_bridge("voicebot1-old-bridge");
    fake.add_channel(
        "voicebot1-old-media",
        "UnicastRTP/127.0.0.1:27001-0x7f0000000001",
    );
    fake.add_bridge("other-bridge");
    fake.add_channel("1763999999.7", "PJSIP/callers-00000007");
    let mut vb = launch("startup-sweep", &fake, Config::new());
    expect_request(&fake, "DELETE leftover bridge", |r| {
        is_delete_bridge(r, "voicebot1-old-bridge")
    });
    expect_request(&fake, "DELETE leftover channel", |r| {
        is_delete_channel(r, "voicebot1-old-media")
    });
    wait_no_voicebot1_resources(&fake);
    assert!(
        fake.has_bridge("other-bridge"),
        "unrelated bridge was destroyed"
    );
    assert!(
        fake.has_channel("1763999999.7"),
        "unrelated channel was hung up"
    );
    let touched =
        fake.requests_matching(|r| r.method == "DELETE" && !r.path.contains("voicebot1-"));
    assert!(
        touched.is_empty(),
        "unrelated resources were deleted: {touched:?}"
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_second_signal_exits_at_once_even_while_cleanup_hangs() {
    use std::time::{Duration, Instant};
    // Asterisk answering hang-ups slowly is something the fake can do on demand.
    let (fake, mut vb) = start_pair(
        "second-signal",
        Config {
            on_stop: "hangup".into(),
            ..Config::new()
        },
    );
    let _ids = call_to_media_phase(&fake, &vb, "1764000031.1");
    fake.set_rule(Rule::prefix(
        "DELETE",
        "/ari/channels/",
        Action::Delay(Duration::from_secs(30)),
    ));
    let pid = vb.pid().to_string();
    let term = || {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(&pid)
            .status()
            .unwrap()
    };
    term();
    assert!(
        vb.wait_log("shutdown requested", STEP).is_some(),
        "first signal not seen"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        vb.is_running(),
        "voicebot1 should still be cleaning up after the first signal"
    );
    let t = Instant::now();
    term();
    while vb.is_running() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !vb.is_running(),
        "voicebot1 still running 5 s after the second signal"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "second signal took {:?}",
        t.elapsed()
    );
    assert_eq!(
        vb.terminate(Duration::from_secs(1)).and_then(|s| s.code()),
        Some(130)
    );
}

#[test]
fn fake_ari_unsupported_asterisk_16_6_is_refused_with_one_clear_line_and_exit_1() {
    // A real 16.6 is not in the bench; the fake reports its version string.
    let fake = FakeAri::start();
    fake.set_asterisk_version("16.6.2");
    let mut vb = Voicebot::start("refuse-16-6", &fake, Config::new());
    let status = vb
        .wait_exit(STEP)
        .expect("voicebot1 kept running on Asterisk 16.6.2");
    assert_eq!(status.code(), Some(1), "{}", vb.log_text());
    let log = vb.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not supported"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].contains("Asterisk 16.6.2 is not supported") && refusals[0].contains("16.7"),
        "{log}"
    );
    assert_eq!(
        fake.ws_connections(),
        0,
        "voicebot1 connected the event WebSocket of an unsupported Asterisk"
    );
}

#[test]
fn fake_ari_asterisk_without_a_release_number_runs_with_a_warning() {
    let fake = FakeAri::start();
    fake.set_asterisk_version("GIT-master-4a1c2b");
    let mut vb = launch("git-version", &fake, Config::new());
    assert!(vb
        .wait_log(
            "cannot tell whether Asterisk \"GIT-master-4a1c2b\" is supported",
            STEP
        )
        .is_some());
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_startup_sweep_survives_get_bridges_500_of_asterisk_18_0_to_18_7() {
    // Asterisk 18.0-18.7 answers GET /bridges with 500 while another application has a
    // create+dial channel: something the fake does on demand.
    let fake = FakeAri::start();
    fake.add_bridge("voicebot1-old-bridge");
    fake.add_channel(
        "voicebot1-old-media",
        "UnicastRTP/127.0.0.1:27001-0x7f0000000001",
    );
    fake.add_bridge("other-bridge");
    fake.set_rule(Rule::when(
        "GET",
        "list bridges",
        |p| p == "/ari/bridges",
        crate::support::fake_ari::internal_error(),
    ));
    let mut vb = launch("bridges-500", &fake, Config::new());
    expect_request(&fake, "DELETE leftover channel", |r| {
        is_delete_channel(r, "voicebot1-old-media")
    });
    expect_request(&fake, "DELETE its bridge by id", |r| {
        is_delete_bridge(r, "voicebot1-old-bridge")
    });
    assert!(vb
        .wait_log(
            "looking up the bridges of voicebot1's calls by id instead",
            STEP
        )
        .is_some());
    assert!(
        fake.has_bridge("other-bridge"),
        "unrelated bridge was destroyed"
    );
    fake.clear_rules();
    finish(&fake, &mut vb);
}

/// Runs `voicebot1 --check --online` with `config` against `fake`; exit code and stdout.
fn preflight(fake: &FakeAri, config: &Config, name: &str) -> (Option<i32>, String) {
    let path =
        std::env::temp_dir().join(format!("vb1-preflight-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, config.to_toml(&fake.url())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot1"))
        .args(["--check", "--online"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l[6.min(l.len())..].starts_with(check))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

#[test]
fn fake_ari_preflight_passes_then_names_each_failing_check() {
    let fake = FakeAri::start();
    let config = Config::new();
    let (code, out) = preflight(&fake, &config, "pass");
    assert_eq!(code, Some(0), "{out}");
    for check in [
        "credentials",
        "version",
        "modules",
        "application",
        "transfer endpoint",
        "media ports",
        "metrics listen",
    ] {
        assert!(line(&out, check).starts_with("PASS"), "{out}");
    }

    // The metrics address held by someone else.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = Config {
        metrics_listen: held.local_addr().unwrap().to_string(),
        ..config.clone()
    };
    let (code, out) = preflight(&fake, &busy, "metrics");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "metrics listen")
            .starts_with("FAIL  metrics listen: cannot listen on TCP 127.0.0.1:"),
        "{out}"
    );
    drop(held);

    fake.set_asterisk_version("16.6.0");
    let unknown = Config {
        endpoint: "PJSIP/4438007@no-such-endpoint".into(),
        ..config.clone()
    };
    let (code, out) = preflight(&fake, &unknown, "fail");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "version").starts_with("FAIL") && line(&out, "version").contains("16.6.0"),
        "{out}"
    );
    assert!(
        line(&out, "transfer endpoint").contains("no endpoint PJSIP/no-such-endpoint"),
        "{out}"
    );
    assert!(line(&out, "credentials").starts_with("PASS"), "{out}");

    // The port range held by someone else, and the application name taken by a running voicebot1.
    fake.set_asterisk_version("22.0.0");
    let _held: Vec<_> = (config.port_min..=config.port_max)
        .map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).unwrap())
        .collect();
    let (code, out) = preflight(&fake, &config, "ports");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "media ports").starts_with("FAIL")
            && line(&out, "media ports").contains("4 of 4"),
        "{out}"
    );
    drop(_held);
    let mut vb = launch("preflight-running", &fake, config.clone());
    let (code, out) = preflight(&fake, &Config::new(), "taken");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "application").contains("already registered"),
        "{out}"
    );
    finish(&fake, &mut vb);

    let wrong = Config {
        password: "wrong".into(),
        ..Config::new()
    };
    let (code, out) = preflight(&fake, &wrong, "password");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "credentials").starts_with("FAIL") && line(&out, "credentials").contains("401"),
        "{out}"
    );
}

/// SIGKILL, as a crash or `systemctl kill` would.
fn kill_hard(vb: &mut Voicebot) {
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(vb.pid().to_string())
        .status();
    assert!(vb.wait_exit(STEP).is_some(), "voicebot1 survived SIGKILL");
}

#[test]
fn fake_ari_restarted_voicebot1_adopts_connected_ringing_and_bot_calls_without_hanging_up() {
    // A fake, because the test needs a destination that rings for ever and one that answers,
    // chosen call by call around the restart.
    use std::time::Duration;
    let config = Config {
        phase_ms: 1500,
        dial_timeout_s: 60,
        ..Config::new()
    };
    let (fake, mut first) = start_pair("adopt-first", config.clone());
    let connected = call_to_media_phase(&fake, &first, "1764000300.1");
    transfer_to_destination(&fake, &first, &connected);
    fake.set_destination(Destination::Never);
    let ringing = call_to_media_phase(&fake, &first, "1764000300.2");
    expect_request(&fake, "originate of the ringing call", |r| {
        is_originate(r, &ringing.dest)
    });
    let with_bot = call_to_media_phase(&fake, &first, "1764000300.3");
    kill_hard(&mut first);
    let before = fake.requests().len();

    let mut second = Voicebot::start("adopt-second", &fake, config);
    for (call, what) in [
        (&connected, "left as they are"),
        (&ringing, "waiting for its answer"),
        (&with_bot, "transferring now"),
    ] {
        let needle = format!("call {}: adopted from an earlier voicebot1", call.call);
        let line = second
            .wait_log(&needle, STEP)
            .unwrap_or_else(|| panic!("{} not adopted:\n{}", call.call, second.log_text()));
        assert!(line.contains(what), "{line}");
    }
    // The bot died with the first instance: that caller goes on to the transfer.
    expect_request(&fake, "the adopted bot call's media hung up", |r| {
        is_delete_channel(r, &with_bot.media)
    });
    expect_request(&fake, "the adopted bot call transferred", |r| {
        is_originate(r, &with_bot.dest)
    });
    std::thread::sleep(Duration::from_millis(500));
    let hung_up: Vec<_> = fake.requests()[before..]
        .iter()
        .filter(|r| {
            r.method == "DELETE"
                && [&connected, &ringing, &with_bot]
                    .iter()
                    .any(|c| r.path.ends_with(&format!("/{}", c.call)) || r.path.ends_with(&c.dest))
        })
        .cloned()
        .collect();
    assert!(
        hung_up.is_empty(),
        "the restart hung up callers or destinations: {hung_up:?}"
    );
    // The connected call's legs are linked again (the first instance may have died before).
    for leg in [&connected.call, &connected.dest] {
        let linked = fake.requests()[before..].iter().any(|r| {
            r.is("POST", &format!("/ari/channels/{leg}/variable"))
                && r.q("variable") == Some("CHANNEL(hangup_handler_push)")
        });
        assert!(
            linked,
            "{leg}: no hang-up handler pushed by the adopting instance"
        );
    }
    assert!(
        fake.bridge_members(&connected.bridge)
            .is_some_and(|m| m.len() == 2),
        "the connected call's bridge changed"
    );

    // Adopted calls end as any call does.
    assert!(fake.caller_hangs_up(&connected.call));
    expect_request(
        &fake,
        "the connected destination hung up with its caller",
        |r| is_delete_channel(r, &connected.dest),
    );
    expect_request(&fake, "the connected call's bridge destroyed", |r| {
        is_delete_bridge(r, &connected.bridge)
    });
    for call in [&ringing, &with_bot] {
        assert!(fake.caller_hangs_up(&call.call));
        expect_request(
            &fake,
            "the ringing destination hung up with its caller",
            |r| is_delete_channel(r, &call.dest),
        );
    }
    finish(&fake, &mut second);
    assert!(
        second.log_text().contains("3 calls adopted"),
        "{}",
        second.log_text()
    );
}

#[test]
fn fake_ari_voicebot1_killed_while_its_originate_is_on_the_way_leaves_the_caller_to_be_transferred()
{
    // A fake, because the kill must land while one request is in flight: the originate of the
    // transfer reaches "Asterisk" only after the kill (answered 500 after 5 s, nothing created).
    use std::time::Duration;
    let config = Config {
        phase_ms: 1000,
        ..Config::new()
    };
    let (fake, mut first) = start_pair("kill-mid-transfer-first", config.clone());
    let call = call_to_media_phase(&fake, &first, "1764000400.1");
    let late = Action::DelayThenRespond {
        delay: Duration::from_secs(5),
        status: 500,
        body: serde_json::json!({"message": "late"}),
    };
    fake.set_rule(Rule::originate(late).times(1));
    expect_request(&fake, "the transfer's originate", |r| {
        is_originate(r, &call.dest)
    });
    kill_hard(&mut first);
    // The bot was not let go before the destination was called: the caller is still with it.
    assert!(
        fake.has_channel(&call.media),
        "the media channel was hung up before the destination was called"
    );
    let before = fake.requests().len();

    let mut second = Voicebot::start("kill-mid-transfer-second", &fake, config);
    let needle = format!("call {}: adopted from an earlier voicebot1", call.call);
    let line = second
        .wait_log(&needle, STEP)
        .unwrap_or_else(|| panic!("not adopted:\n{}", second.log_text()));
    assert!(line.contains("transferring now"), "{line}");
    expect_request(&fake, "the adopted call transferred", |r| {
        is_originate(r, &call.dest)
    });
    let caller_hung_up = fake.requests()[before..]
        .iter()
        .any(|r| is_delete_channel(r, &call.call));
    assert!(!caller_hung_up, "the restart hung the caller up");
    assert!(fake.caller_hangs_up(&call.call));
    finish(&fake, &mut second);
}
