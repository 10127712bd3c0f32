//! Benchmark: voicebot1's RTP echo against the smallest echo that does the same job
//! (`scripts/bench/echo.c`: a thread per session, a connected UDP socket, recv/send). Run by
//! `scripts/bench-echo.sh`; `cargo bench --bench echo -- --help` for the options.
//!
//! Each echo runs in a process of its own so that its CPU time can be read from /proc apart from
//! the packet generator's: `echo serve …` is voicebot1's (the product's `SocketPool` and `Echo`,
//! the code a call's echo thread runs), the compiled C program the minimal one; both take the
//! same arguments and print `ready`. The generator (this process) sends RTP-shaped packets (a
//! 12-byte header and 160 bytes of a-law) and times every round trip.
//!
//! The machine is shared and noisy, so the two echoes are always measured under the same
//! conditions and ratios are taken within a round, then the median over rounds:
//! - ping-pong: one session, one packet in flight, the echoes in turn (the order alternates every
//!   round) — CPU per packet (the echo process's on-CPU time, `/proc/PID/task/*/schedstat`, ns)
//!   and round-trip median/p99;
//! - load: N sessions at R packets/s each on both echoes at once, packets alternating between
//!   them — CPU% of one core, CPU per packet, RSS and round trip of each.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot1::media::{Echo, SocketPool};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// 12 bytes of RTP header and 20 ms of a-law.
const PACKET: usize = 172;

const USAGE: &str = "\
echo [--minimal PATH] [--rounds 7] [--pings 20000] [--cpu N]
     [--sessions 500] [--pps 50] [--seconds 10] [--load-rounds 3] [--load-cpu LIST] [--port 23000]
  --minimal PATH  the minimal echo (scripts/bench/echo.c, compiled); without it only voicebot1's
  --cpu N         ping-pong: the generator's thread and the echoes on CPU N only (taskset), so a
                  round trip costs a wake-up on one CPU rather than an inter-processor interrupt
                  and a return from idle, which on a VM vary several-fold between packets
  --load-cpu LIST load: run both echoes on these CPUs (taskset -c LIST); default: not pinned
echo serve HOST FIRST_PORT SESSIONS PEER_HOST PEER_PORT
  voicebot1's echo, with the arguments of the C program
";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("-h" | "--help") => print!("{USAGE}"),
        _ => run(&Options::parse(&args)),
    }
}

/// `serve`: voicebot1's echo, one `Echo` per session, each pinned to the generator's address as a
/// call's echo is pinned to Asterisk's RTP address. Exits, dropping every echo, when stdin closes.
fn serve(args: &[String]) {
    let [host, first, sessions, peer_host, peer_port] = args else {
        usage_error("serve takes 5 arguments")
    };
    let parse_err = |what: &str| -> ! { usage_error(&format!("serve: bad {what}")) };
    let host: IpAddr = host.parse().unwrap_or_else(|_| parse_err("HOST"));
    let first: u16 = first.parse().unwrap_or_else(|_| parse_err("FIRST_PORT"));
    let sessions: u16 = sessions.parse().unwrap_or_else(|_| parse_err("SESSIONS"));
    let peer_ip: IpAddr = peer_host.parse().unwrap_or_else(|_| parse_err("PEER_HOST"));
    let peer = SocketAddr::new(
        peer_ip,
        peer_port.parse().unwrap_or_else(|_| parse_err("PEER_PORT")),
    );
    let (pool, failures) = SocketPool::bind(host, first, first + sessions - 1);
    if let Some(f) = failures.first() {
        eprintln!("serve: cannot bind port {}: {}", f.port, f.error);
        std::process::exit(1);
    }
    let echos: Vec<Echo> = (0..sessions)
        .map(|i| {
            let lease = pool.lease().expect("a free socket");
            let echo = Echo::start(lease, peer.ip(), &format!("bench.{i}")).expect("echo thread");
            echo.set_peer(peer);
            echo
        })
        .collect();
    println!("ready");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    let (rx, tx) = echos
        .iter()
        .map(Echo::counts)
        .fold((0, 0), |(r, t), c| (r + c.rx_packets, t + c.tx_packets));
    let stopping = Instant::now();
    drop(echos);
    eprintln!(
        "  (voicebot1 serve: rx {rx} tx {tx}; {sessions} echoes stopped in {} ms, pool {}/{} free)",
        stopping.elapsed().as_millis(),
        pool.free(),
        pool.total()
    );
}

struct Options {
    minimal: Option<String>,
    rounds: usize,
    pings: usize,
    cpu: Option<String>,
    sessions: u16,
    pps: u32,
    seconds: u64,
    load_rounds: usize,
    load_cpu: Option<String>,
    port: u16,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut o = Options {
            minimal: None,
            rounds: 7,
            pings: 20_000,
            cpu: None,
            sessions: 500,
            pps: 50,
            seconds: 10,
            load_rounds: 3,
            load_cpu: None,
            port: 23_000,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")));
            let num = || {
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| usage_error(&format!("{flag} {value}: not a number")))
            };
            match flag.as_str() {
                "--minimal" => o.minimal = Some(value.clone()),
                "--rounds" => o.rounds = num() as usize,
                "--pings" => o.pings = num() as usize,
                "--cpu" => o.cpu = Some(value.clone()),
                "--sessions" => o.sessions = num().clamp(1, 5000) as u16,
                "--pps" => o.pps = num().max(1) as u32,
                "--seconds" => o.seconds = num().max(1),
                "--load-rounds" => o.load_rounds = num() as usize,
                "--load-cpu" => o.load_cpu = Some(value.clone()),
                "--port" => o.port = num() as u16,
                _ => usage_error(&format!("unknown option {flag}")),
            }
        }
        o
    }
}

fn usage_error(msg: &str) -> ! {
    eprint!("echo: {msg}\n{USAGE}");
    std::process::exit(2);
}

/// One echo under test: its name and how to start it.
struct Impl {
    name: &'static str,
    program: String,
    pre_args: Vec<String>,
}

/// A running echo process; closing its stdin stops it.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Server {
    fn start(
        imp: &Impl,
        cpus: Option<&str>,
        first: u16,
        sessions: u16,
        peer: SocketAddr,
    ) -> Server {
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, &imp.program]);
                c
            }
            None => Command::new(&imp.program),
        };
        let mut child = command
            .args(&imp.pre_args)
            .args([
                "127.0.0.1",
                &first.to_string(),
                &sessions.to_string(),
                &peer.ip().to_string(),
                &peer.port().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", imp.program));
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("read ready");
        assert_eq!(ready.trim(), "ready", "{} did not start", imp.name);
        let stdin = child.stdin.take();
        Server { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On-CPU time of every live thread of `pid`, in ns (`schedstat`'s first field: exact, where
/// `stat`'s utime + stime count 10 ms ticks).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of the whole process, in ns: the cross-check of `cpu_ns`.
fn cpu_ticks_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| {
        after_comm
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11) + field(12)) * 10_000_000 // USER_HZ is 100 on Linux
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Pins the calling thread to `cpus` (`taskset -p` on its thread id).
fn pin_this_thread(cpus: &str) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
    let ok = tid.is_some_and(|tid| {
        Command::new("taskset")
            .args(["-p", "-c", cpus, &tid.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        usage_error("--cpu needs taskset (util-linux) and a valid CPU");
    }
}

/// An RTP-shaped packet; the SSRC says which session, the first payload bytes when it was sent.
fn packet(session: u32, seq: u16, sent_ns: u64) -> [u8; PACKET] {
    let mut p = [0xd5u8; PACKET];
    p[..2].copy_from_slice(&[0x80, 8]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&session.to_be_bytes());
    p[12..20].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[derive(Clone, Copy)]
struct Ping {
    cpu_ns_per_pkt: f64,
    rtt_median_us: f64,
    rtt_p99_us: f64,
    lost: usize,
}

/// `count` round trips, one packet in flight, from `sock` (the address the echoes are pinned to)
/// to `port`.
fn ping_pong(sock: &UdpSocket, pid: u32, port: u16, count: usize) -> Ping {
    sock.connect((LOCAL, port)).expect("connect");
    let mut buf = [0u8; 2048];
    let mut once = |seq: u16| -> Option<u64> {
        let t = Instant::now();
        sock.send(&packet(0, seq, 0)).ok()?;
        loop {
            let n = sock.recv(&mut buf).ok()?;
            if n == PACKET && buf[2..4] == seq.to_be_bytes() {
                return Some(t.elapsed().as_nanos() as u64);
            }
        }
    };
    for seq in 0..500u16 {
        once(seq);
    }
    let cpu0 = cpu_ns(pid);
    let mut rtts = Vec::with_capacity(count);
    let mut lost = 0;
    for i in 0..count {
        match once(i as u16) {
            Some(ns) => rtts.push(ns),
            None => lost += 1,
        }
    }
    let cpu = cpu_ns(pid) - cpu0;
    rtts.sort_unstable();
    Ping {
        cpu_ns_per_pkt: cpu as f64 / rtts.len().max(1) as f64,
        rtt_median_us: percentile(&rtts, 0.5) as f64 / 1e3,
        rtt_p99_us: percentile(&rtts, 0.99) as f64 / 1e3,
        lost,
    }
}

#[derive(Clone, Copy, Default)]
struct Load {
    cpu_percent: f64,
    /// The same from utime + stime (10 ms ticks).
    ticks_percent: f64,
    ns_per_pkt: f64,
    rss_mb: f64,
    rtt_median_us: f64,
    rtt_p99_us: f64,
    sent: u64,
    lost: u64,
}

/// `sessions` × `pps` packets/s to each server (ports `firsts[k]..`), both at once, a packet to
/// one then the same to the other, spread evenly; one second of warm-up, then `seconds` measured.
fn load(impls: &[Impl], firsts: &[u16], o: &Options) -> Vec<Load> {
    let gen = UdpSocket::bind((LOCAL, 0)).expect("bind generator");
    let peer = gen.local_addr().expect("generator address");
    let servers: Vec<Server> = impls
        .iter()
        .zip(firsts)
        .map(|(imp, first)| Server::start(imp, o.load_cpu.as_deref(), *first, o.sessions, peer))
        .collect();
    let n = impls.len();
    let epoch = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (sock, measuring, stop) = (
            gen.try_clone().expect("clone"),
            measuring.clone(),
            stop.clone(),
        );
        let firsts = firsts.to_vec();
        let sessions = o.sessions;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut rtts: Vec<Vec<u64>> = vec![Vec::with_capacity(1 << 20); firsts.len()];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if len != PACKET || !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let Some(k) = firsts
                    .iter()
                    .position(|f| (*f..f + sessions).contains(&from.port()))
                else {
                    continue;
                };
                let sent = u64::from_be_bytes(buf[12..20].try_into().expect("8 bytes"));
                // Packets sent during the warm-up carry 0 and are not counted.
                if sent > 0 {
                    rtts[k].push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent));
                }
            }
            rtts
        })
    };
    let interval = Duration::from_nanos(
        1_000_000_000 / (u64::from(o.sessions) * u64::from(o.pps) * n as u64).max(1),
    );
    let warmup_until = Instant::now() + Duration::from_secs(1);
    let (mut next, mut i) = (Instant::now(), 0u64);
    let mut window: Option<(Instant, Vec<(u64, u64)>)> = None;
    let mut sent = vec![0u64; n];
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup_until {
            measuring.store(true, Ordering::SeqCst);
            window = Some((
                Instant::now(),
                servers
                    .iter()
                    .map(|s| (cpu_ns(s.pid()), cpu_ticks_ns(s.pid())))
                    .collect(),
            ));
        }
        if let Some((since, _)) = &window {
            if now >= *since + Duration::from_secs(o.seconds) {
                break;
            }
        }
        while next <= now {
            let k = (i % n as u64) as usize;
            let session = ((i / n as u64) % u64::from(o.sessions)) as u16;
            let seq = (i / n as u64 / u64::from(o.sessions)) as u16;
            let stamp = if window.is_some() {
                epoch.elapsed().as_nanos() as u64
            } else {
                0
            };
            if gen
                .send_to(
                    &packet(u32::from(session), seq, stamp),
                    (LOCAL, firsts[k] + session),
                )
                .is_ok()
                && window.is_some()
            {
                sent[k] += 1;
            }
            i += 1;
            next += interval;
        }
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(50)),
        );
    }
    // The last packets come back before the echoes' CPU time is read.
    std::thread::sleep(Duration::from_millis(50));
    let (since, cpu0) = window.expect("measured");
    let elapsed = since.elapsed().as_nanos() as f64;
    let used: Vec<(u64, u64, u64)> = servers
        .iter()
        .zip(&cpu0)
        .map(|(s, (c0, t0))| {
            (
                cpu_ns(s.pid()) - c0,
                cpu_ticks_ns(s.pid()) - t0,
                rss_kb(s.pid()),
            )
        })
        .collect();
    stop.store(true, Ordering::SeqCst);
    let rtts = receiver.join().expect("receiver");
    drop(servers);
    rtts.into_iter()
        .zip(used)
        .zip(sent)
        .map(|((mut rtts, (cpu, ticks, rss)), sent)| {
            rtts.sort_unstable();
            let got = rtts.len() as u64;
            Load {
                cpu_percent: cpu as f64 / elapsed * 100.0,
                ticks_percent: ticks as f64 / elapsed * 100.0,
                ns_per_pkt: cpu as f64 / got.max(1) as f64,
                rss_mb: rss as f64 / 1024.0,
                rtt_median_us: percentile(&rtts, 0.5) as f64 / 1e3,
                rtt_p99_us: percentile(&rtts, 0.99) as f64 / 1e3,
                sent,
                lost: sent.saturating_sub(got),
            }
        })
        .collect()
}

/// First port of `n` consecutive UDP ports on 127.0.0.1 free now, from `from` on.
fn free_ports(from: u16, n: u16) -> u16 {
    let mut first = from;
    loop {
        let probe: Vec<_> = (0..n)
            .map(|i| UdpSocket::bind((LOCAL, first + i)))
            .collect();
        if probe.iter().all(Result::is_ok) {
            return first;
        }
        first = first
            .checked_add(n + 16)
            .filter(|f| *f < 32_000)
            .unwrap_or_else(|| panic!("no {n} free UDP ports below 32000"));
    }
}

fn run(o: &Options) {
    let me = std::env::current_exe()
        .expect("current exe")
        .to_string_lossy()
        .into_owned();
    let mut impls = vec![Impl {
        name: "voicebot1",
        program: me,
        pre_args: vec!["serve".into()],
    }];
    if let Some(path) = &o.minimal {
        impls.push(Impl {
            name: "minimal",
            program: path.clone(),
            pre_args: vec![],
        });
    }
    let ports = free_ports(o.port, o.sessions * impls.len() as u16);
    let firsts: Vec<u16> = (0..impls.len())
        .map(|k| ports + k as u16 * o.sessions)
        .collect();
    println!(
        "# ping-pong: {} rounds of {} round trips, {}; load: {} rounds of {} sessions x {} pps on each echo at once for {} s, {}; ports {}..",
        o.rounds,
        o.pings,
        o.cpu.as_ref().map_or("not pinned".to_string(), |c| format!("generator and echoes on CPU {c}")),
        o.load_rounds,
        o.sessions,
        o.pps,
        o.seconds,
        o.load_cpu.as_ref().map_or("not pinned".to_string(), |c| format!("echoes on CPUs {c}")),
        ports
    );

    // Ping-pong, from a thread of its own so that only it is pinned.
    let pings: Vec<Vec<Ping>> = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(cpu) = &o.cpu {
                pin_this_thread(cpu);
            }
            let sock = UdpSocket::bind((LOCAL, 0)).expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let peer = sock.local_addr().expect("ping address");
            let servers: Vec<Server> =
                impls.iter().zip(&firsts).map(|(imp, first)| Server::start(imp, o.cpu.as_deref(), *first, 1, peer)).collect();
            let mut pings: Vec<Vec<Ping>> = vec![Vec::new(); impls.len()];
            for round in 0..o.rounds {
                for k in order(round, impls.len()) {
                    let p = ping_pong(&sock, servers[k].pid(), firsts[k], o.pings);
                    println!(
                        "  round {round} ping-pong {:<9} cpu {:>6.0} ns/pkt  rtt median {:>6.1} us  p99 {:>6.1} us  lost {}",
                        impls[k].name, p.cpu_ns_per_pkt, p.rtt_median_us, p.rtt_p99_us, p.lost
                    );
                    pings[k].push(p);
                }
            }
            pings
        })
        .join()
        .expect("ping-pong")
    });

    let mut loads: Vec<Vec<Load>> = vec![Vec::new(); impls.len()];
    for round in 0..o.load_rounds {
        for (k, l) in load(&impls, &firsts, o).into_iter().enumerate() {
            println!(
                "  round {round} load {:<9} cpu {:>5.1} % (utime+stime {:>5.1} %)  {:>6.0} ns/pkt  rss {:>5.1} MB  rtt median {:>6.1} us  p99 {:>7.1} us  sent {} lost {}",
                impls[k].name, l.cpu_percent, l.ticks_percent, l.ns_per_pkt, l.rss_mb, l.rtt_median_us, l.rtt_p99_us, l.sent, l.lost
            );
            loads[k].push(l);
        }
    }

    println!();
    let load_head = format!("{} sessions x {} pps:", o.sessions, o.pps);
    println!(
        "{:<10} {:>14} {:>13} {:>10}  | {load_head} {:>5} {:>6} {:>6} {:>10} {:>10}",
        "echo",
        "cpu_ns_per_pkt",
        "rtt_median_us",
        "rtt_p99_us",
        "cpu%",
        "rss_MB",
        "ns/pkt",
        "rtt_med_us",
        "rtt_p99_us"
    );
    for (k, imp) in impls.iter().enumerate() {
        let p = |f: fn(&Ping) -> f64| median(pings[k].iter().map(f));
        let l = |f: fn(&Load) -> f64| median(loads[k].iter().map(f));
        println!(
            "{:<10} {:>14.0} {:>13.1} {:>10.1}  | {:>w$} {:>5.1} {:>6.1} {:>6.0} {:>10.1} {:>10.1}",
            imp.name,
            p(|p| p.cpu_ns_per_pkt),
            p(|p| p.rtt_median_us),
            p(|p| p.rtt_p99_us),
            "",
            l(|l| l.cpu_percent),
            l(|l| l.rss_mb),
            l(|l| l.ns_per_pkt),
            l(|l| l.rtt_median_us),
            l(|l| l.rtt_p99_us),
            w = load_head.len(),
        );
    }
    if impls.len() == 2 {
        let ping_ratio: Vec<f64> = pings[0]
            .iter()
            .zip(&pings[1])
            .map(|(a, b)| a.cpu_ns_per_pkt / b.cpu_ns_per_pkt)
            .collect();
        let load_ratio: Vec<f64> = loads[0]
            .iter()
            .zip(&loads[1])
            .map(|(a, b)| a.ns_per_pkt / b.ns_per_pkt)
            .collect();
        let show = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "ratio voicebot1/minimal, CPU per packet: ping-pong {:.3} (rounds: {}); {} sessions {:.3} (rounds: {})",
            median(ping_ratio.iter().copied()),
            show(&ping_ratio),
            o.sessions,
            median(load_ratio.iter().copied()),
            show(&load_ratio)
        );
        let diff =
            |f: fn(&Ping) -> f64| median(pings[0].iter().zip(&pings[1]).map(|(a, b)| f(a) - f(b)));
        let load_diff =
            |f: fn(&Load) -> f64| median(loads[0].iter().zip(&loads[1]).map(|(a, b)| f(a) - f(b)));
        println!(
            "round trip voicebot1 - minimal: ping-pong median {:+.1} us, p99 {:+.1} us; {} sessions median {:+.1} us, p99 {:+.1} us",
            diff(|p| p.rtt_median_us),
            diff(|p| p.rtt_p99_us),
            o.sessions,
            load_diff(|l| l.rtt_median_us),
            load_diff(|l| l.rtt_p99_us)
        );
        // One line for scripts/bench.sh's table.
        println!(
            "summary: CPU per packet {:.2}x the minimal echo's ({} sessions: {:.2}x); round trip {:+.1} us median, {:+.1} us p99 vs it",
            median(ping_ratio.iter().copied()),
            o.sessions,
            median(load_ratio.iter().copied()),
            diff(|p| p.rtt_median_us),
            diff(|p| p.rtt_p99_us)
        );
    }
}

/// The echoes' order in `round`: it alternates, so neither always goes first.
fn order(round: usize, n: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}
