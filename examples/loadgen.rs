//! Loopback load test of the driver path: a `Mirror` fed by a tokio UDP socket (as in
//! `runtime::driver`), against fake Asterisk registrars in a child process (one thread and
//! socket per node), next to a raw UDP echo loop measured in the same run as the ceiling.
//!
//! ```text
//! cargo run --release --example loadgen -- [--aors 100000] [--nodes 3] [--inflight 512]
//!     [--echo-secs 3] [--echo-window 64] [--rcvbuf BYTES] [--registrar-rcvbuf BYTES]
//!     [--no-echo] [--timeout-secs 100] [--replay-rate R [--replay-secs 60]]
//! ```
//! With `--replay-rate` (which implies `--nodes 1` for the first phase): the AORs are registered
//! on one node, then `Mirror::add_node` adds a second, empty one and the paced replay onto it is
//! timed (0 = unpaced).
//! ```text
//! ```
//! Credentials are pre-seeded with `aor_update(.., Some(credential))` (no database). Prints one
//! `key value` line per figure; see BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::mirror::{
    BindingState, Credential, Event, Mirror, MirrorConfig, Node, Transport,
};
use regmirror::core::sip::{parse_incoming, Incoming};
use regmirror::core::testing::FakeRegistrar;
use regmirror::runtime::mmsg::{self, RecvBatch};
use std::os::fd::AsRawFd;
use tokio::io::Interest;

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
    /// Plain `recv_from`/`send_to` per datagram instead of `recvmmsg`/`sendmmsg` batches.
    no_mmsg: bool,
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
        no_mmsg: false,
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
        if k == "--no-mmsg" {
            a.no_mmsg = true;
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

/// The driver loop of `runtime::driver`, minus notifications and the database.
async fn drive(a: &Args, addrs: &[SocketAddr]) -> Result<Outcome, Box<dyn std::error::Error>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    if let Some(n) = a.rcvbuf {
        set_rcvbuf(&socket, n)?;
    }
    let local = socket.local_addr()?;
    let mut nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| Node {
            name: format!("ast{}", i + 1),
            addr: *addr,
            transport: Transport::Udp,
        })
        .collect();
    let spare = if a.replay_rate.is_some() {
        nodes.pop()
    } else {
        None
    };
    let names: Vec<String> = (0..a.aors).map(|i| format!("u{i}")).collect();
    let mut buf = vec![0u8; 65_536];

    let heap0 = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap0, Ordering::Relaxed);
    let rss0 = status_kb("VmRSS");
    println!("vmrss_kb_before_mirror {rss0}");
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    let pcpu0 = cpu_time(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let cfg = MirrorConfig {
        domain: REALM.into(),
        contact_host: "127.0.0.1:5060".into(),
        local_addr: local,
        max_inflight_per_node: a.inflight,
        ..MirrorConfig::default()
    };
    let mut cfg = cfg;
    cfg.farm.nonce_reuse = Duration::from_secs(a.nonce_reuse);
    println!("nonce_reuse_secs {}", a.nonce_reuse);
    if let Some(r) = a.replay_rate {
        cfg.farm.replay_rate = r;
    }
    let first_nodes = nodes.len();
    let mut mirror = Mirror::new(cfg, nodes, 1);
    let now = Instant::now();
    for n in &names {
        mirror.aor_update(
            now,
            n,
            Duration::from_secs(86_400),
            None,
            Some(Credential {
                username: n.clone(),
                secret: Secret::Password(PASSWORD.into()),
            }),
        );
    }
    let seed = t0.elapsed();
    let want = a.aors * first_nodes;
    let mut registered = 0usize;
    let mut failed = 0usize;
    let deadline = t0 + a.timeout;
    let mut io = Io {
        mmsg: !a.no_mmsg,
        recv: RecvBatch::new(),
        out: Vec::new(),
    };
    flush(&mut mirror, &socket, &mut io, &mut registered, &mut failed).await;
    while registered < want && Instant::now() < deadline {
        let wake = mirror.poll_timeout().map_or(deadline, |t| t.min(deadline));
        if io.mmsg {
            // As `runtime::driver` with batched I/O: up to 8 recvmmsg batches per wake.
            tokio::select! {
                r = socket.readable() => {
                    r?;
                    for _ in 0..8 {
                        let fd = socket.as_raw_fd();
                        let rb = &mut io.recv;
                        match socket.try_io(Interest::READABLE, || rb.recv(fd)) {
                            Ok(_) => {
                                for (d, from) in io.recv.iter() {
                                    on_datagram(&mut mirror, d, from);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    mirror.handle_timeout(Instant::now());
                }
            }
            flush(&mut mirror, &socket, &mut io, &mut registered, &mut failed).await;
            continue;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                on_datagram(&mut mirror, &buf[..n], from);
                for _ in 0..256 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => on_datagram(&mut mirror, &buf[..n], from),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                mirror.handle_timeout(Instant::now());
            }
        }
        flush(&mut mirror, &socket, &mut io, &mut registered, &mut failed).await;
    }
    let wall = t0.elapsed();
    if let Some(node) = spare {
        replay(a, &mut mirror, &socket, &mut buf, node).await?;
    }
    let cpu = cpu_time(libc::RUSAGE_THREAD) - cpu0;
    let process_cpu = cpu_time(libc::RUSAGE_SELF) - pcpu0;
    drop(names);
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let heap_peak = PEAK.load(Ordering::Relaxed) - heap0;
    let rss = (status_kb("VmRSS") - rss0) * 1024;
    let s = mirror.stats();
    if registered < want {
        eprintln!(
            "loadgen: only {registered} of {want} bindings registered before the timeout ({s:?})"
        );
    }
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

/// Adds `node` (its registrar is empty) and times the paced replay of every live AOR onto it.
async fn replay(
    a: &Args,
    mirror: &mut Mirror,
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    node: Node,
) -> Result<(), Box<dyn std::error::Error>> {
    let before = mirror.stats();
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    let t0 = Instant::now();
    let id = mirror.add_node(t0, node);
    let mut done = 0usize;
    let mut failed = 0usize;
    let deadline = t0 + Duration::from_secs(a.replay_secs);
    loop {
        while let Some(t) = mirror.poll_transmit() {
            send(socket, &t.payload, t.dest).await;
        }
        while let Some(e) = mirror.poll_event() {
            if let Event::BindingChanged { node, state, .. } = e {
                match state {
                    BindingState::Registered if node == id => done += 1,
                    BindingState::Failed if node == id => failed += 1,
                    _ => {}
                }
            }
        }
        if done >= a.aors || Instant::now() >= deadline {
            break;
        }
        let wake = mirror.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = socket.recv_from(buf) => {
                let (n, from) = r?;
                on_datagram(mirror, &buf[..n], from);
                for _ in 0..256 {
                    match socket.try_recv_from(buf) {
                        Ok((n, from)) => on_datagram(mirror, &buf[..n], from),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                mirror.handle_timeout(Instant::now());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time(libc::RUSAGE_THREAD) - cpu0).as_secs_f64();
    let s = mirror.stats();
    let rate = done as f64 / secs;
    println!(
        "replay_rate_configured {}",
        mirror.config().farm.replay_rate
    );
    println!("replay_registered {done} of {}", a.aors);
    println!("replay_failed_events {failed}");
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

async fn send(socket: &tokio::net::UdpSocket, payload: &[u8], dest: SocketAddr) {
    let r = match socket.try_send_to(payload, dest) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => socket.send_to(payload, dest).await,
        r => r,
    };
    if let Err(e) = r {
        eprintln!("loadgen: send to {dest}: {e}");
    }
}

/// Sends `out` in `sendmmsg` batches, waiting for writability when the socket is full.
async fn send_all(socket: &tokio::net::UdpSocket, out: &[regmirror::core::mirror::Transmit]) {
    let mut msgs: Vec<(&[u8], SocketAddr)> = Vec::with_capacity(mmsg::BATCH);
    let mut i = 0;
    while i < out.len() {
        msgs.clear();
        msgs.extend(
            out[i..]
                .iter()
                .take(mmsg::BATCH)
                .map(|t| (t.payload.as_slice(), t.dest)),
        );
        let fd = socket.as_raw_fd();
        match socket.try_io(Interest::WRITABLE, || mmsg::send_batch(fd, &msgs)) {
            Ok(n) => i += n.max(1),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("loadgen: send to {}: {e}", out[i].dest);
                i += 1;
            }
        }
    }
}

fn on_datagram(mirror: &mut Mirror, bytes: &[u8], from: SocketAddr) {
    match parse_incoming(bytes) {
        Ok(Incoming::Response(info)) => mirror.handle_response_info(Instant::now(), from, &info),
        Ok(Incoming::Message(rsip::SipMessage::Response(resp))) => {
            mirror.handle_response(Instant::now(), from, &resp)
        }
        _ => {}
    }
}

/// The loop's I/O mode and buffers.
struct Io {
    mmsg: bool,
    recv: RecvBatch,
    out: Vec<regmirror::core::mirror::Transmit>,
}

async fn flush(
    mirror: &mut Mirror,
    socket: &tokio::net::UdpSocket,
    io: &mut Io,
    registered: &mut usize,
    failed: &mut usize,
) {
    if io.mmsg {
        io.out.extend(std::iter::from_fn(|| mirror.poll_transmit()));
        send_all(socket, &io.out).await;
        io.out.clear();
    }
    while let Some(t) = mirror.poll_transmit() {
        send(socket, &t.payload, t.dest).await;
    }
    while let Some(e) = mirror.poll_event() {
        if let Event::BindingChanged { state, .. } = e {
            match state {
                BindingState::Registered => *registered += 1,
                BindingState::Failed => *failed += 1,
                _ => {}
            }
        }
    }
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
