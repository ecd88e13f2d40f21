//! A fast fake Asterisk registrar on UDP, built on `core::testing::FakeRegistrar`: digest
//! challenges, Min-Expires, a contact table. For smoke tests and benchmarks of the real binary.
//!
//! `cargo run --release --features testing --example fake_registrar -- 127.0.0.1:5091 regmirror.test 1000`
//! registers users `1000..` with password `secret<user>` (the demo scheme) and prints the number
//! of live contacts every second.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::testing::FakeRegistrar;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
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
    let socket = UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reg = FakeRegistrar::new(addr, &realm);
    reg.keep_log = false;
    for u in first..first + count {
        reg.add_user(&u.to_string(), Secret::Password(format!("secret{u}")));
    }
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

fn invalid<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}
