//! voicebot1's start-up sweep against the scripted fake ARI
//! (tests/support/fake_ari.rs): leftovers of a crashed earlier run are
//! pre-populated in the fake, which a real Asterisk cannot be set up with on
//! demand from a test.

mod support;

use support::*;

#[test]
fn fake_ari_startup_sweep_removes_leftover_voicebot1_resources() {
    let fake = FakeAri::start();
    fake.add_bridge("voicebot1-old-bridge");
    fake.add_channel("voicebot1-old-media", "UnicastRTP/127.0.0.1:27001-0x7f0000000001");
    fake.add_bridge("other-bridge");
    fake.add_channel("1763999999.7", "PJSIP/callers-00000007");
    let mut vb = launch("startup-sweep", &fake, Config::new());
    expect_request(&fake, "DELETE leftover bridge", |r| is_delete_bridge(r, "voicebot1-old-bridge"));
    expect_request(&fake, "DELETE leftover channel", |r| is_delete_channel(r, "voicebot1-old-media"));
    wait_no_voicebot1_resources(&fake);
    assert!(fake.has_bridge("other-bridge"), "unrelated bridge was destroyed");
    assert!(fake.has_channel("1763999999.7"), "unrelated channel was hung up");
    let touched = fake.requests_matching(|r| r.method == "DELETE" && !r.path.contains("voicebot1-"));
    assert!(touched.is_empty(), "unrelated resources were deleted: {touched:?}");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_second_signal_exits_at_once_even_while_cleanup_hangs() {
    use std::time::{Duration, Instant};
    // Asterisk answering hang-ups slowly is something the fake can do on demand.
    let (fake, mut vb) = start_pair("second-signal", Config::new());
    let _ids = call_to_media_phase(&fake, &vb, "1764000031.1");
    fake.set_rule(Rule::prefix("DELETE", "/ari/channels/", Action::Delay(Duration::from_secs(30))));
    let pid = vb.pid().to_string();
    let term = || std::process::Command::new("kill").arg("-TERM").arg(&pid).status().unwrap();
    term();
    assert!(vb.wait_log("shutdown requested", STEP).is_some(), "first signal not seen");
    std::thread::sleep(Duration::from_millis(300));
    assert!(vb.is_running(), "voicebot1 should still be cleaning up after the first signal");
    let t = Instant::now();
    term();
    while vb.is_running() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!vb.is_running(), "voicebot1 still running 5 s after the second signal");
    assert!(t.elapsed() < Duration::from_secs(2), "second signal took {:?}", t.elapsed());
    assert_eq!(vb.terminate(Duration::from_secs(1)).and_then(|s| s.code()), Some(130));
}
