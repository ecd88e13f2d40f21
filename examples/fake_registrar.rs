//! A fast fake Asterisk registrar on UDP or TCP, built on `core::testing::FakeRegistrar`: digest
//! challenges, Min-Expires, a contact table. For smoke tests and benchmarks of the real binary.
//!
//! `cargo run --release --features testing --example fake_registrar -- 127.0.0.1:5091 regmirror.test 1000`
//! registers users `1000..` with password `secret<user>` (the demo scheme) and prints the number
//! of live contacts every second. `--tcp` (anywhere in the arguments) listens on TCP instead:
//! one thread per connection, messages framed with `core::sip::split_stream`, responses written
//! back on the connection the request came on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::sip::{is_keepalive, split_stream};
use regmirror::core::testing::FakeRegistrar;

fn main() -> std::io::Result<()> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let tcp = all.iter().any(|a| a == "--tcp");
    let mut args = all.into_iter().filter(|a| a != "--tcp");
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:5091".into())
        .parse()
        .map_err(invalid)?;
    let realm = args.next().unwrap_or_else(|| "regmirror.test".into());
    let first: u32 = args
        .next()
        .unwrap_or_else(|| "1000".into())
        .parse()
        .map_err(invalid)?;
    let count: u32 = args
        .next()
        .unwrap_or_else(|| "100".into())
        .parse()
        .map_err(invalid)?;
    let mut reg = FakeRegistrar::new(addr, &realm);
    reg.keep_log = false;
    for u in first..first + count {
        reg.add_user(&u.to_string(), Secret::Password(format!("secret{u}")));
    }
    if tcp {
        return serve_tcp(addr, reg);
    }
    let socket = UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 65_536];
    let mut last_print = Instant::now();
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                for resp in reg.handle(Instant::now(), &buf[..n]) {
                    socket.send_to(&resp, from)?;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!("live_contacts {}", reg.live_contacts(Instant::now()));
            last_print = Instant::now();
        }
    }
}

fn serve_tcp(addr: SocketAddr, reg: FakeRegistrar) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let reg = Arc::new(Mutex::new(reg));
    let r = reg.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let live = r.lock().map_or(0, |r| r.live_contacts(Instant::now()));
        println!("live_contacts {live}");
    });
    for conn in listener.incoming() {
        let conn = conn?;
        let reg = reg.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_conn(conn, &reg) {
                eprintln!("connection closed: {e}");
            }
        });
    }
    Ok(())
}

/// Reads framed messages off one connection and answers each on it until EOF or a framing error.
fn serve_conn(mut conn: TcpStream, reg: &Mutex<FakeRegistrar>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = split_stream(&buf).map_err(invalid)? {
            let frame: Vec<u8> = buf.drain(..len).collect();
            if is_keepalive(&frame) {
                continue;
            }
            let out = match reg.lock() {
                Ok(mut r) => r.handle(Instant::now(), &frame),
                Err(_) => return Err(invalid("registrar lock poisoned")),
            };
            for resp in out {
                conn.write_all(&resp)?;
            }
        }
    }
}

fn invalid<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}
