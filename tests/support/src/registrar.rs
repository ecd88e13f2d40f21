//! A fake Asterisk node on a UDP socket of its own: `core::testing::FakeRegistrar` served by a
//! thread, answering after an adjustable delay (a slow node).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::testing::FakeRegistrar;

pub struct UdpRegistrar {
    pub addr: SocketAddr,
    pub reg: Arc<Mutex<FakeRegistrar>>,
    /// Milliseconds to wait before answering.
    pub delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl UdpRegistrar {
    /// A node in `realm` that knows each of `users` with the password `secret<user>`.
    pub fn start<S: AsRef<str>>(realm: &str, users: &[S]) -> UdpRegistrar {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let mut reg = FakeRegistrar::new(addr, realm);
        for u in users {
            let u = u.as_ref();
            reg.add_user(u, Secret::Password(format!("secret{u}")));
        }
        let reg = Arc::new(Mutex::new(reg));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, d, s) = (reg.clone(), delay_ms.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let delay = d.load(Ordering::Relaxed);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                let out = r.lock().unwrap().handle(Instant::now(), &buf[..n]);
                for resp in out {
                    let _ = socket.send_to(&resp, from);
                }
            }
        });
        UdpRegistrar {
            addr,
            reg,
            delay_ms,
            stop,
        }
    }

    pub fn has_contact(&self, user: &str) -> bool {
        self.reg
            .lock()
            .unwrap()
            .contact(user, Instant::now())
            .is_some()
    }

    /// Expires of every REGISTER received for `user`.
    pub fn expires_seen(&self, user: &str) -> Vec<u32> {
        let r = self.reg.lock().unwrap();
        r.log
            .iter()
            .filter(|l| l.user == user)
            .map(|l| l.expires)
            .collect()
    }

    /// Registrations of `user` the node accepted (200 OK to a non-zero Expires), not counting
    /// retransmissions.
    pub fn registrations(&self, user: &str) -> usize {
        let r = self.reg.lock().unwrap();
        r.log
            .iter()
            .filter(|l| l.user == user && l.expires > 0 && l.answered == 200 && !l.retransmission)
            .count()
    }
}

impl Drop for UdpRegistrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
