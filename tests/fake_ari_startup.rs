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
