//! End-to-end with WebSocket bots: the real Asterisk sandbox, real SIPp callers and destinations,
//! and real bot processes — the reference bots of `scripts/bots/reference/` (written from the
//! public protocol docs alone) and a Pipecat pipeline (`scripts/bots/pipecat/`, pipecat-ai from
//! PyPI with its unmodified `TwilioFrameSerializer`).
//!
//! A caller dials 3308488, whose dialplan names the bot and its parameters from the caller's SIP
//! headers (`Stasis(voicebot1,inbound,bot=…,…)`, see conf/asterisk/extensions.conf). What the bot
//! heard and did is read from its JSON-lines log; what the caller heard from an RTP capture.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sandbox::{repo, set_sample, sip_port, sipp_xml, Proc};

/// The venv python for one of `scripts/bots/` (built or reused by `scripts/bots/install.sh`).
pub fn bot_python(name: &str) -> PathBuf {
    let out = Command::new(repo().join("scripts/bots/install.sh"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/bots/install.sh");
    assert!(
        out.status.success(),
        "scripts/bots/install.sh {name} failed"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().unwrap_or_default().trim())
}

/// A bot process listening on 127.0.0.1:`port`, killed when dropped; its log in `dir`.
pub struct Bot {
    pub log: PathBuf,
    _proc: Proc,
}

impl Bot {
    /// A reference bot: `dialect` "twilio" or "asterisk", with extra command-line options.
    pub fn reference(dir: &Path, dialect: &str, port: u16, extra: &[&str]) -> Bot {
        let script = repo().join(format!("scripts/bots/reference/{dialect}_bot.py"));
        Bot::spawn(
            dir,
            &format!("{dialect}-bot"),
            &bot_python("reference"),
            &script,
            port,
            extra,
        )
    }

    /// The Pipecat bot (its WebSocket at `/ws`).
    pub fn pipecat(dir: &Path, port: u16, extra: &[&str]) -> Bot {
        let script = repo().join("scripts/bots/pipecat/bot.py");
        Bot::spawn(
            dir,
            "pipecat-bot",
            &bot_python("pipecat"),
            &script,
            port,
            extra,
        )
    }

    fn spawn(
        dir: &Path,
        name: &str,
        python: &Path,
        script: &Path,
        port: u16,
        extra: &[&str],
    ) -> Bot {
        let log = dir.join(format!("{name}.jsonl"));
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(python)
            .arg(script)
            .args(["--listen", &listen, "--log"])
            .arg(&log)
            .args(extra)
            .stdout(fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("the bot's python");
        let proc = Proc::from_child(name, child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "bot {name} does not listen on {listen}; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Bot { log, _proc: proc }
    }

    /// Every JSON line the bot logged so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let Ok(file) = fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// The first event whose `event` is `name` (and that `matches`), waiting up to `timeout`.
    pub fn expect(
        &self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["event"] == name && matches(e))
            {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "bot never logged {name:?} within {timeout:?}; its log:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A key pressed `at_ms` after the previous step (the call's start, or the last key).
pub struct Key {
    pub after_ms: u64,
    pub digit: char,
}

/// One caller to 3308488 for bot `bot` with `args` (`key=value,…`), audio both ways, the keys
/// pressed as given, hanging up after `hold_ms` (after the keys) unless hung up first.
pub fn bot_caller(
    dir: &Path,
    bot: &str,
    args: &str,
    hold_ms: u64,
    keys: &[Key],
    sip: u16,
    media: u16,
) -> Proc {
    let mut steps = String::new();
    for key in keys {
        let pcap = match key.digit {
            '*' => "dtmf_2833_star.pcap".to_string(),
            '#' => "dtmf_2833_pound.pcap".to_string(),
            d => format!("dtmf_2833_{d}.pcap"),
        };
        let to = dir.join("pcap").join(&pcap);
        if !to.exists() {
            fs::copy(Path::new("/usr/share/sip-tester").join(&pcap), &to)
                .expect("sip-tester's DTMF pcaps");
        }
        steps.push_str(&format!(
            "  <pause milliseconds=\"{}\"/>\n  <nop><action><exec play_pcap_audio=\"pcap/{pcap}\"/></action></nop>\n",
            key.after_ms
        ));
    }
    let xml = fs::read_to_string(repo().join("scripts/sipp/uac-bot.xml")).unwrap();
    let xml = xml
        .replace("@BOT@", bot)
        .replace("@ARGS@", args)
        .replace("  <!-- KEYS -->\n", &steps);
    let remote = format!("127.0.0.1:{}", sip_port());
    let (sip, media) = (sip.to_string(), media.to_string());
    let args = [
        remote.as_str(),
        "-s",
        "3308488",
        "-i",
        "127.0.0.1",
        "-p",
        &sip,
        "-mp",
        &media,
        "-m",
        "1",
        "-timeout",
        "120s",
    ];
    sipp_xml(dir, "caller", &set_sample(&xml, hold_ms), &args)
}

/// The RTP packets sent to `port` on loopback during `duration` (captured with tcpdump): when
/// (since the first) and their payload.
pub fn capture_rtp_to(dir: &Path, port: u16, duration: Duration) -> Vec<(Duration, Vec<u8>)> {
    let file = dir.join(format!("rtp-to-{port}.pcap"));
    let status = Command::new("timeout")
        .arg(format!("{}", duration.as_secs_f64()))
        .args(["tcpdump", "-i", "lo", "-n", "-q", "-U", "-w"])
        .arg(&file)
        .arg(format!("udp and dst port {port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tcpdump (apt-get install tcpdump)");
    let _ = status;
    rtp_in_pcap(&fs::read(&file).unwrap_or_default())
}

/// RTP payloads from a pcap file (Ethernet or Linux cooked capture, IPv4/UDP).
pub fn rtp_in_pcap(pcap: &[u8]) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    if pcap.len() < 24 {
        return out;
    }
    let link = u32::from_le_bytes([pcap[20], pcap[21], pcap[22], pcap[23]]);
    let l2 = match link {
        1 => 14,
        113 => 16,
        _ => return out,
    };
    let mut at = 24;
    let mut first = None;
    while at + 16 <= pcap.len() {
        let word = |i: usize| {
            u32::from_le_bytes([
                pcap[at + i],
                pcap[at + i + 1],
                pcap[at + i + 2],
                pcap[at + i + 3],
            ])
        };
        let (sec, usec, len) = (word(0), word(4), word(8) as usize);
        let packet = &pcap[(at + 16).min(pcap.len())..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        let t = Duration::from_secs(sec.into()) + Duration::from_micros(usec.into());
        let first = *first.get_or_insert(t);
        let Some(ip) = packet.get(l2..) else { continue };
        let ihl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
        let Some(rtp) = ip.get(ihl + 8..) else {
            continue;
        };
        if rtp.len() > 12 && rtp[0] >> 6 == 2 {
            out.push((t.saturating_sub(first), rtp[12..].to_vec()));
        }
    }
    out
}

/// G.711 a-law to linear.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// How much of `samples`' power is at `hz` (8 kHz audio), 0 to 1: a Goertzel filter over the
/// whole stretch against its total energy.
pub fn tone_share(samples: &[i16], hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        let s0 = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += x * x;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        (2.0 * power / samples.len() as f64 / energy).min(1.0)
    }
}
