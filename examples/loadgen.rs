//! Loopback load test of the driver: `runtime::Driver` itself (its loop, socket, door, events
//! and metrics) against fake Asterisk registrars in a child process (one thread and socket per
//! node), next to a raw UDP echo loop measured in the same run as the ceiling.
//!
//! ```text
//! cargo run --release --example loadgen -- [--aors 100000] [--nodes 3] [--inflight 512]
//!     [--echo-secs 3] [--echo-window 64] [--rcvbuf BYTES] [--registrar-rcvbuf BYTES]
//!     [--no-echo] [--timeout-secs 100] [--replay-rate R [--replay-secs 60]]
//! ```
//! With `--replay-rate` (which implies `--nodes 1` for the first phase): the AORs are registered
//! on one node, then a reload (as SIGHUP) adds a second, empty one and the paced replay onto it
//! is timed (0 = unpaced).
//!
//! Credentials and Kamailio's `location` are held in memory (`InMemoryCredentials`, no
//! database): every AOR arrives through the driver's first reconciliation, as after a restart.
//! Prints one `key value` line per figure; see BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regmirror::config::Config;
use regmirror::core::digest::Secret;
use regmirror::core::mirror::Credential;
use regmirror::core::testing::FakeRegistrar;
use regmirror::runtime::admin::AdminQuery;
use regmirror::runtime::credentials::InMemoryCredentials;
use regmirror::runtime::metrics::Metrics;
use regmirror::runtime::Driver;
use regmirror::status::FarmStatus;
use tokio::sync::mpsc;

/// Live heap bytes, so the mirror's footprint can be told apart from allocator slack.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const REALM: &str = "regmirror.test";
const PASSWORD: &str = "pw";
/// About the size of a REGISTER with Authorization.
const ECHO_SIZE: usize = 560;

struct Args {
    aors: usize,
    nodes: usize,
    inflight: usize,
    echo_secs: u64,
    echo_window: usize,
    /// SO_RCVBUF of the mirror's socket and of the registrars' (None = system default).
    rcvbuf: Option<usize>,
    registrar_rcvbuf: Option<usize>,
    /// Replay mode: register on one node, then add an empty node paced at this rate (0 = unpaced).
    replay_rate: Option<u32>,
    /// Stop measuring the replay after this long (slow pacings are extrapolated).
    replay_secs: u64,
    timeout: Duration,
    /// Use `FakeRegistrar` (rsip, nonce table, retransmission cache) instead of `QuickRegistrar`.
    full_registrar: bool,
    /// `farm.nonce_reuse` in seconds. 0 (the default here) = every registration takes the full
    /// challenge round trip, which is what the issue's target counts; 20 = production default.
    nonce_reuse: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        aors: 100_000,
        nodes: 3,
        inflight: 512,
        echo_secs: 3,
        echo_window: 64,
        rcvbuf: None,
        registrar_rcvbuf: None,
        replay_rate: None,
        replay_secs: 60,
        timeout: Duration::from_secs(100),
        full_registrar: false,
        nonce_reuse: 0,
    };
    while let Some(k) = it.next() {
        if k == "--no-echo" {
            a.echo_secs = 0;
            continue;
        }
        if k == "--full-registrar" {
            a.full_registrar = true;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let n: usize = v.parse().map_err(|e| format!("{k} {v}: {e}"))?;
        match k.as_str() {
            "--aors" => a.aors = n,
            "--nodes" => a.nodes = n,
            "--inflight" => a.inflight = n,
            "--echo-secs" => a.echo_secs = n as u64,
            "--echo-window" => a.echo_window = n,
            "--rcvbuf" => a.rcvbuf = Some(n),
            "--registrar-rcvbuf" => a.registrar_rcvbuf = Some(n),
            "--replay-rate" => a.replay_rate = Some(n as u32),
            "--replay-secs" => a.replay_secs = n as u64,
            "--timeout-secs" => a.timeout = Duration::from_secs(n as u64),
            "--nonce-reuse" => a.nonce_reuse = n as u64,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("registrars") {
        args.next();
        if let Err(e) = registrars(args) {
            eprintln!("loadgen registrars: {e}");
            std::process::exit(1);
        }
        return;
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&a) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("machine_cpus {}", std::thread::available_parallelism()?);
    println!("loadavg_start {}", loadavg());
    println!(
        "config aors={} nodes={} inflight_per_node={} rcvbuf={:?} registrar_rcvbuf={:?}",
        a.aors, a.nodes, a.inflight, a.rcvbuf, a.registrar_rcvbuf
    );
    let mut echo1 = 0.0;
    let mut echo_w = 0.0;
    let mut echo_cpu_us = 0.0;
    if a.echo_secs > 0 {
        let secs = Duration::from_secs(a.echo_secs);
        echo1 = echo(1, secs)?;
        println!("echo_rtt_per_s_window1 {echo1:.0}");
        let c0 = cpu_time(libc::RUSAGE_SELF);
        echo_w = echo(a.echo_window, secs)?;
        let c = (cpu_time(libc::RUSAGE_SELF) - c0).as_secs_f64();
        println!("echo_rtt_per_s_window{} {echo_w:.0}", a.echo_window);
        // Both threads (sender and echoer) count.
        echo_cpu_us = c * 1e6 / (echo_w * secs.as_secs_f64());
        println!("echo_cpu_us_per_exchange {echo_cpu_us:.2}");
    }

    // Fake registrars in a child process so this process's RSS and CPU are the mirror's.
    let exe = std::env::current_exe()?;
    let registrar_count = if a.replay_rate.is_some() { 2 } else { a.nodes };
    let mut child = Command::new(exe)
        .args([
            "registrars",
            &registrar_count.to_string(),
            &a.aors.to_string(),
            &a.registrar_rcvbuf.unwrap_or(0).to_string(),
            if a.full_registrar { "full" } else { "quick" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut child_out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut line = String::new();
    child_out.read_line(&mut line)?;
    let addrs: Vec<SocketAddr> = line
        .strip_prefix("ready ")
        .ok_or_else(|| format!("child said {line:?}"))?
        .split_whitespace()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(drive(a, &addrs));
    // Closing its stdin tells the child to stop and report.
    drop(child.stdin.take());
    let mut rest = String::new();
    child_out.read_to_string(&mut rest)?;
    child.wait()?;
    print!("{rest}");
    let r = result?;

    let bindings = r.registered.max(1) as f64;
    let regs_per_s = r.registered as f64 / r.wall.as_secs_f64();
    let per_cpu = r.registered as f64 / r.cpu.as_secs_f64();
    println!("registered_bindings {}", r.registered);
    println!("sip_transactions {}", r.transactions);
    println!("challenges {}", r.challenges);
    println!("retransmits {}", r.retransmits);
    println!("timeouts {}", r.timeouts);
    println!("failed_events {}", r.failed);
    println!("seed_ms {:.1}", r.seed.as_secs_f64() * 1e3);
    println!("wall_s {:.3}", r.wall.as_secs_f64());
    println!("registrations_per_s {regs_per_s:.0}");
    println!(
        "sip_transactions_per_s {:.0}",
        r.transactions as f64 / r.wall.as_secs_f64()
    );
    println!("mirror_thread_cpu_s {:.3}", r.cpu.as_secs_f64());
    println!("mirror_process_cpu_s {:.3}", r.process_cpu.as_secs_f64());
    println!("registrations_per_cpu_s {per_cpu:.0}");
    println!(
        "sip_transactions_per_cpu_s {:.0}",
        r.transactions as f64 / r.cpu.as_secs_f64()
    );
    println!(
        "cpu_us_per_registration {:.2}",
        r.cpu.as_secs_f64() * 1e6 / r.registered as f64
    );
    if echo_w > 0.0 {
        println!(
            "ratio_registrations_to_echo_window{} {:.3}",
            a.echo_window,
            regs_per_s / echo_w
        );
        println!(
            "ratio_registrations_to_echo_window1 {:.3}",
            regs_per_s / echo1
        );
        // Each registration is two request/response exchanges (401, then 200).
        println!(
            "ratio_exchanges_to_echo_window{} {:.3}",
            a.echo_window,
            2.0 * regs_per_s / echo_w
        );
        // CPU-normalized: echo CPU (both ends) per exchange over the mirror's per exchange.
        let mirror_us = r.cpu.as_secs_f64() * 1e6 / (2.0 * r.registered as f64);
        println!(
            "ratio_cpu_per_exchange_echo_to_mirror {:.3}",
            echo_cpu_us / mirror_us
        );
    }
    println!("heap_bytes_per_binding {:.0}", r.heap as f64 / bindings);
    println!(
        "heap_peak_bytes_per_binding {:.0}",
        r.heap_peak as f64 / bindings
    );
    println!("rss_bytes_per_binding {:.0}", r.rss as f64 / bindings);
    println!("vmrss_kb {}", status_kb("VmRSS"));
    println!("vmhwm_kb {}", status_kb("VmHWM"));
    println!("loadavg_end {}", loadavg());
    Ok(())
}

struct Outcome {
    registered: usize,
    failed: usize,
    transactions: u64,
    challenges: u64,
    retransmits: u64,
    timeouts: u64,
    seed: Duration,
    wall: Duration,
    cpu: Duration,
    process_cpu: Duration,
    heap: isize,
    /// Peak live heap during the run (names of the seed included).
    heap_peak: isize,
    rss: i64,
}

/// The driver (`runtime::Driver`, its own loop) on this thread, credentials and Kamailio's
/// `location` in memory: every AOR comes from the first reconciliation, as after a restart.
async fn drive(a: &Args, addrs: &[SocketAddr]) -> Result<Outcome, Box<dyn std::error::Error>> {
    let first_nodes = if a.replay_rate.is_some() {
        1
    } else {
        addrs.len()
    };
    let heap_before_users = LIVE.load(Ordering::Relaxed);
    let source = InMemoryCredentials::default();
    for i in 0..a.aors {
        let user = format!("u{i}");
        source.set_live(&user, Some(Duration::from_secs(86_400)));
        source.add_user(Credential {
            username: user,
            secret: Secret::Password(PASSWORD.into()),
        });
    }
    // What the database would hold is not the mirror's footprint.
    let heap0 = LIVE.load(Ordering::Relaxed);
    let users_heap = heap0 - heap_before_users;
    PEAK.store(heap0, Ordering::Relaxed);
    let rss0 = status_kb("VmRSS");
    println!("vmrss_kb_before_mirror {rss0}");
    println!("nonce_reuse_secs {}", a.nonce_reuse);
    let config = Config::from_toml(&config_text(a, &addrs[..first_nodes]))?;
    let metrics = Arc::new(Metrics::default());
    let (admin_tx, admin_rx) = mpsc::channel(4);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    let pcpu0 = cpu_time(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let driver = Driver::new(config, source, metrics.clone(), admin_rx)?;
    let seed = t0.elapsed();
    let running = tokio::spawn(driver.run(reload_rx, async move {
        let _ = stopped.await;
    }));
    let want = a.aors * first_nodes;
    let deadline = t0 + a.timeout;
    let nodes: Vec<String> = (1..=first_nodes).map(|i| format!("ast{i}")).collect();
    let registered = wait_registered(&metrics, &nodes, want, deadline).await;
    let wall = t0.elapsed();
    if a.replay_rate.is_some() {
        replay(a, &metrics, &admin_tx, &reload_tx, addrs).await?;
    }
    let cpu = cpu_time(libc::RUSAGE_THREAD) - cpu0;
    let process_cpu = cpu_time(libc::RUSAGE_SELF) - pcpu0;
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let heap_peak = PEAK.load(Ordering::Relaxed) - heap0;
    let rss = (status_kb("VmRSS") - rss0) * 1024;
    println!("users_heap_bytes_excluded {users_heap}");
    let s = farm(&admin_tx).await?.stats;
    let failed = transitions(&metrics, &nodes, "failed");
    if registered < want {
        eprintln!(
            "loadgen: only {registered} of {want} bindings registered before the timeout ({s:?})"
        );
    }
    let _ = stop.send(());
    running.await??;
    Ok(Outcome {
        registered,
        failed,
        transactions: s.transactions,
        challenges: s.challenges,
        retransmits: s.retransmits,
        timeouts: s.timeouts,
        seed,
        wall,
        cpu,
        process_cpu,
        heap,
        heap_peak,
        rss,
    })
}

/// The service's configuration for the run: the service's defaults except where the
/// arguments say, no probes, a fixed budget and no reconciliation during the run.
fn config_text(a: &Args, nodes: &[SocketAddr]) -> String {
    let mut t = format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\ndomain = \"{REALM}\"\n{}\
         [kamailio]\ntrusted = [\"127.0.0.1\"]\ncontact_host = \"127.0.0.1:5060\"\n\
         [farm]\nmax_inflight_per_node = {}\nnonce_reuse = \"{}s\"\nreplay_rate = {}\n\
         probe_interval = \"0s\"\nlatency_target = \"0s\"\nreconcile_interval = \"1h\"\n\
         [database]\nurl = \"mysql://unused@127.0.0.1/unused\"\n",
        a.rcvbuf
            .map(|b| format!("socket_buffer = {b}\n"))
            .unwrap_or_default(),
        a.inflight,
        a.nonce_reuse,
        a.replay_rate.unwrap_or(0),
    );
    for (i, addr) in nodes.iter().enumerate() {
        t += &format!("[[nodes]]\nname = \"ast{}\"\naddress = \"{addr}\"\n", i + 1);
    }
    t
}

/// Bindings on `nodes` that reached `state` (the driver's own transition counters).
fn transitions(metrics: &Metrics, nodes: &[String], state: &'static str) -> usize {
    nodes
        .iter()
        .map(|node| metrics.transitions(node, state) as usize)
        .sum()
}

/// Polls the counters every 5 ms until `want` bindings are registered or `deadline` passes.
async fn wait_registered(
    metrics: &Metrics,
    nodes: &[String],
    want: usize,
    deadline: Instant,
) -> usize {
    loop {
        let done = transitions(metrics, nodes, "registered");
        if done >= want || Instant::now() >= deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn farm(admin: &mpsc::Sender<AdminQuery>) -> Result<FarmStatus, Box<dyn std::error::Error>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    admin
        .send(AdminQuery::Farm {
            bindings: regmirror::status::BindingList::none(),
            reply,
        })
        .await
        .map_err(|_| "driver gone")?;
    Ok(answer.await?)
}

/// Adds the second node (its registrar is empty) with a reload, as SIGHUP does, and times the
/// paced replay of every live AOR onto it.
async fn replay(
    a: &Args,
    metrics: &Metrics,
    admin: &mpsc::Sender<AdminQuery>,
    reload: &mpsc::Sender<Config>,
    addrs: &[SocketAddr],
) -> Result<(), Box<dyn std::error::Error>> {
    let before = farm(admin).await?.stats;
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    let t0 = Instant::now();
    reload
        .send(Config::from_toml(&config_text(a, addrs))?)
        .await
        .map_err(|_| "driver gone")?;
    let added = ["ast2".to_string()];
    let deadline = t0 + Duration::from_secs(a.replay_secs);
    let done = wait_registered(metrics, &added, a.aors, deadline).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time(libc::RUSAGE_THREAD) - cpu0).as_secs_f64();
    let s = farm(admin).await?.stats;
    let rate = done as f64 / secs;
    println!("replay_rate_configured {}", a.replay_rate.unwrap_or(0));
    println!("replay_registered {done} of {}", a.aors);
    println!(
        "replay_failed_events {}",
        transitions(metrics, &added, "failed")
    );
    println!("replay_s {secs:.3}");
    println!("replay_registrations_per_s {rate:.0}");
    println!(
        "replay_projected_s_for_all {:.1}",
        a.aors as f64 / rate.max(f64::MIN_POSITIVE)
    );
    println!("replay_retransmits {}", s.retransmits - before.retransmits);
    println!("replay_timeouts {}", s.timeouts - before.timeouts);
    println!("replay_mirror_cpu_s {cpu:.3}");
    Ok(())
}

/// Child process: one fake registrar per node, each on its own thread and socket, until stdin
/// closes; then prints what they answered and the CPU they used.
fn registrars(mut args: impl Iterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let nodes: usize = args.next().ok_or("nodes")?.parse()?;
    let users: usize = args.next().ok_or("users")?.parse()?;
    let rcvbuf: usize = args.next().unwrap_or_default().parse().unwrap_or(0);
    let quick = args.next().as_deref() == Some("quick");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..nodes {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        if rcvbuf > 0 {
            set_rcvbuf(&socket, rcvbuf)?;
        }
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        addrs.push(addr.to_string());
        let stop = stop.clone();
        let nonce_prefix = format!("{}/", 1_732_300_000 + addrs.len());
        if quick {
            let mut reg = QuickRegistrar::new(users, nonce_prefix);
            threads.push(std::thread::spawn(move || {
                serve(socket, &stop, |b| reg.handle(b))
            }));
        } else {
            let mut reg = FakeRegistrar::new(addr, REALM);
            reg.keep_log = false;
            for u in 0..users {
                reg.add_user(&format!("u{u}"), Secret::Password(PASSWORD.into()));
            }
            threads.push(std::thread::spawn(move || {
                serve(socket, &stop, |b| reg.handle(Instant::now(), b))
            }));
        }
    }
    println!("ready {}", addrs.join(" "));
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    stop.store(true, Ordering::Relaxed);
    let mut totals = [0u64; 4];
    for t in threads {
        let c = t.join().map_err(|_| "registrar thread panicked")?;
        for (t, c) in totals.iter_mut().zip(c) {
            *t += c;
        }
    }
    println!("registrar_requests {}", totals[0]);
    println!("registrar_200 {}", totals[1]);
    println!("registrar_401 {}", totals[2]);
    println!("registrar_other {}", totals[3]);
    println!(
        "registrar_process_cpu_s {:.3}",
        cpu_time(libc::RUSAGE_SELF).as_secs_f64()
    );
    Ok(())
}

/// Answers on `socket` with `handle` until `stop`. Returns `[requests, 200s, 401s, other
/// answers]`.
fn serve<R: IntoIterator<Item = Vec<u8>>>(
    socket: UdpSocket,
    stop: &AtomicBool,
    mut handle: impl FnMut(&[u8]) -> R,
) -> [u64; 4] {
    let mut counts = [0u64; 4];
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        counts[0] += 1;
        for resp in handle(&buf[..n]) {
            match resp.get(8..11) {
                Some(b"200") => counts[1] += 1,
                Some(b"401") => counts[2] += 1,
                _ => counts[3] += 1,
            }
            let _ = socket.send_to(&resp, from);
        }
    }
    counts
}

/// Loadgen's cheap registrar: answers a REGISTER like `FakeRegistrar` does (401 with an
/// Asterisk-style challenge, then 200 with the Contact's expiry once the digest verifies), but
/// reads requests by scanning lines, verifies with precomputed HA1/HA2 and keeps no contact
/// table, nonce table or retransmission cache, so the harness no longer takes most of the CPU.
struct QuickRegistrar {
    /// User -> HA1 (MD5 of `user:realm:password`).
    ha1: std::collections::HashMap<String, String>,
    /// MD5 of `REGISTER:sip:<realm>`.
    ha2: String,
    nonce_prefix: String,
    nonce_seq: u64,
}

impl QuickRegistrar {
    fn new(users: usize, nonce_prefix: String) -> Self {
        let ha1 = (0..users)
            .map(|u| {
                let name = format!("u{u}");
                let h = regmirror::core::digest::ha1(
                    regmirror::core::digest::Algorithm::Md5,
                    &name,
                    REALM,
                    PASSWORD,
                );
                (name, h)
            })
            .collect();
        QuickRegistrar {
            ha1,
            ha2: md5_hex(format!("REGISTER:sip:{REALM}").as_bytes()),
            nonce_prefix,
            nonce_seq: 0,
        }
    }

    /// The answer to one request (`None`: not a REGISTER we understand).
    fn handle(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(req).ok()?;
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.lines();
        if !lines.next()?.starts_with("REGISTER ") {
            return None;
        }
        let mut copied: Vec<&str> = Vec::with_capacity(8);
        let (mut to, mut contact, mut auth, mut expires) = ("", "", None, None);
        for l in lines {
            let (name, value) = l.split_once(':')?;
            let value = value.trim();
            match name {
                "Via" | "From" | "Call-ID" | "CSeq" => copied.push(l),
                "To" => to = value,
                "Contact" => contact = value,
                "Expires" => expires = value.parse::<u32>().ok(),
                "Authorization" => auth = Some(value),
                _ => {}
            }
        }
        let verified = auth.is_some_and(|a| self.verify(a));
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(if verified {
            b"SIP/2.0 200 OK\r\n"
        } else {
            b"SIP/2.0 401 Unauthorized\r\n"
        });
        for l in copied {
            out.extend_from_slice(l.as_bytes());
            if l.starts_with("Via") {
                out.extend_from_slice(b";received=10.77.0.30");
            }
            out.extend_from_slice(b"\r\n");
        }
        for p in [
            "To: ",
            to,
            ";tag=as1f2e3d\r\nServer: Asterisk PBX 22.1.0\r\n",
        ] {
            out.extend_from_slice(p.as_bytes());
        }
        if verified {
            let (uri, params) = contact.split_once('>').unwrap_or((contact, ""));
            let granted = params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires=")?.parse::<u32>().ok())
                .or(expires)
                .unwrap_or(3600)
                .min(7200);
            let g = granted.to_string();
            if granted > 0 {
                for p in ["Contact: ", uri, ">;expires=", &g, "\r\n"] {
                    out.extend_from_slice(p.as_bytes());
                }
            }
            for p in ["Expires: ", &g, "\r\n"] {
                out.extend_from_slice(p.as_bytes());
            }
        } else {
            self.nonce_seq += 1;
            let nonce = format!("{}{:032x}", self.nonce_prefix, self.nonce_seq);
            for p in [
                "WWW-Authenticate: Digest realm=\"",
                REALM,
                "\",nonce=\"",
                &nonce,
                "\",opaque=\"5d2c7e1a0b9f8e7d\",algorithm=MD5,qop=\"auth\"\r\n",
            ] {
                out.extend_from_slice(p.as_bytes());
            }
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Some(out)
    }

    /// Checks a `Digest` answer (MD5, qop=auth) against the user's HA1 and one of our nonces.
    fn verify(&self, auth: &str) -> bool {
        let param = |key: &str| -> Option<&str> {
            let i = auth.find(key)? + key.len();
            let rest = &auth[i..];
            Some(match rest.strip_prefix('"') {
                Some(q) => &q[..q.find('"')?],
                None => rest.split([',', ' ']).next()?,
            })
        };
        let (Some(user), Some(nonce), Some(uri), Some(response), Some(nc), Some(cnonce)) = (
            param("username="),
            param("nonce="),
            param("uri="),
            param("response="),
            param("nc="),
            param("cnonce="),
        ) else {
            return false;
        };
        let Some(ha1) = self.ha1.get(user) else {
            return false;
        };
        if !nonce.starts_with(&self.nonce_prefix) || uri != format!("sip:{REALM}") {
            return false;
        }
        let want = md5_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{}", self.ha2).as_bytes());
        want == response
    }
}

fn md5_hex(data: &[u8]) -> String {
    regmirror::core::digest::Algorithm::Md5.hex(data)
}

/// Request/response exchanges per second over loopback: one sender keeping `window`
/// datagrams in flight, one echoer thread.
fn echo(window: usize, secs: Duration) -> std::io::Result<f64> {
    let echoer = UdpSocket::bind("127.0.0.1:0")?;
    echoer.set_read_timeout(Some(Duration::from_millis(50)))?;
    let echo_addr = echoer.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let th = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echoer.recv_from(&mut buf) {
                let _ = echoer.send_to(&buf[..n], from);
            }
        }
    });
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.set_read_timeout(Some(Duration::from_millis(20)))?;
    let payload = vec![b'x'; ECHO_SIZE];
    let mut buf = vec![0u8; 65_536];
    for _ in 0..window {
        sender.send_to(&payload, echo_addr)?;
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    while t0.elapsed() < secs {
        match sender.recv_from(&mut buf) {
            Ok(_) => {
                done += 1;
                sender.send_to(&payload, echo_addr)?;
            }
            // A lost datagram: refill the window.
            Err(_) => sender.send_to(&payload, echo_addr).map(|_| ())?,
        }
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = th.join();
    Ok(rate)
}

fn set_rcvbuf<S: std::os::fd::AsRawFd>(s: &S, bytes: usize) -> std::io::Result<()> {
    let v = bytes as libc::c_int;
    // SAFETY: a valid fd and a c_int option value of the stated size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn status_kb(key: &str) -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}
