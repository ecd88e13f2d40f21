//! The real `regmirror run` binary against a fake registrar on TCP (`core::testing::FakeRegistrar`
//! behind a TCP listener with stream framing, as in the `fake_registrar` example's `--tcp` mode)
//! and a real MariaDB for credentials: run via `tests/with-mariadb.sh cargo test --test service_tcp`.
//!
//! Asserts: the registration reaches the node over TCP (Via `SIP/2.0/TCP`, digest round trip on
//! one connection), the registrar closing every connection does not lose the binding (the next
//! refresh opens a new connection and is answered 200), and the logs hold no password.
use common::{free_port_tcp, free_port_udp, http, notify, provision, wait_for, Service};
use test_support as common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::sip::{is_keepalive, split_stream};
use regmirror::core::testing::FakeRegistrar;

const REALM: &str = "regmirror.test";
const USER: &str = "7200";

/// What the registrar saw on its connections: (connection number, first line, Via line).
type Seen = Arc<Mutex<Vec<(usize, String, String)>>>;

struct TcpRegistrar {
    addr: SocketAddr,
    reg: Arc<Mutex<FakeRegistrar>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    seen: Seen,
}

impl TcpRegistrar {
    fn start() -> TcpRegistrar {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reg = FakeRegistrar::new(addr, REALM);
        reg.add_user(USER, Secret::Password(format!("secret{USER}")));
        // A short grant: regmirror refreshes after MIN_REFRESH (5 s), within the test's time.
        reg.min_expires = 5;
        reg.max_expires = 10;
        let reg = Arc::new(Mutex::new(reg));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let seen: Seen = Arc::default();
        let (r, c, s) = (reg.clone(), conns.clone(), seen.clone());
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { return };
                c.lock().unwrap().push(conn.try_clone().unwrap());
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || serve(n + 1, conn, &r, &s));
            }
        });
        TcpRegistrar {
            addr,
            reg,
            conns,
            seen,
        }
    }

    fn has_contact(&self, user: &str) -> bool {
        self.reg
            .lock()
            .unwrap()
            .contact(user, Instant::now())
            .is_some()
    }

    /// REGISTERs for `user` answered 200, as (connection number) in arrival order.
    fn registers_ok_on(&self) -> Vec<usize> {
        let seen = self.seen.lock().unwrap();
        let reg = self.reg.lock().unwrap();
        let oks = reg
            .log
            .iter()
            .filter(|l| l.user == USER && l.answered == 200)
            .count();
        // Every REGISTER is logged in order by both: pair the 200s with their connections.
        let registers: Vec<usize> = seen
            .iter()
            .filter(|(_, line, _)| line.starts_with("REGISTER "))
            .map(|(c, _, _)| *c)
            .collect();
        let answered: Vec<u16> = reg
            .log
            .iter()
            .filter(|l| l.user == USER)
            .map(|l| l.answered)
            .collect();
        assert_eq!(
            answered.iter().filter(|&&a| a == 200).count(),
            oks,
            "log mismatch"
        );
        registers
            .into_iter()
            .zip(answered)
            .filter(|(_, a)| *a == 200)
            .map(|(c, _)| c)
            .collect()
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// The node closes every connection (as a restarting Asterisk would).
    fn close_all(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(
    n: usize,
    mut conn: TcpStream,
    reg: &Mutex<FakeRegistrar>,
    seen: &Mutex<Vec<(usize, String, String)>>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    loop {
        let Ok(k) = conn.read(&mut chunk) else { return };
        if k == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..k]);
        while let Ok(Some(len)) = split_stream(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            if is_keepalive(&frame) {
                continue;
            }
            let text = String::from_utf8_lossy(&frame);
            let first = text.lines().next().unwrap_or_default().to_string();
            let via = text
                .lines()
                .find(|l| l.starts_with("Via:"))
                .unwrap_or_default()
                .to_string();
            seen.lock().unwrap().push((n, first, via));
            let out = reg.lock().unwrap().handle(Instant::now(), &frame);
            for resp in out {
                if conn.write_all(&resp).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn registers_over_tcp_and_survives_the_node_closing_the_connection() {
    let Some(db) = common::url("REGMIRROR_TEST_REGMIRROR_URL") else {
        return;
    };
    let Some(prov) = common::url("REGMIRROR_TEST_PROVISIONER_URL") else {
        return;
    };
    provision(&prov, REALM, USER);
    let node = TcpRegistrar::start();
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port_udp()).parse().unwrap();
    let admin_port = free_port_tcp();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let dir = std::env::temp_dir().join(format!("regmirror-service-tcp-{}", std::process::id()));
    // Probes off: the refresh alone has to reopen the connection.
    let config = format!(
        r#"[sip]
listen = "{sip}"
domain = "{REALM}"
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "127.0.0.1:5060"
[[nodes]]
name = "ast-tcp"
address = "{}"
transport = "tcp"
[farm]
probe_interval = "0s"
[database]
url = "mysql://placeholder@127.0.0.1/x"
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
format = "json"
level = "regmirror=debug,info"
"#,
        node.addr
    );
    let svc = Service::start(&dir, &config, &db, &admin);

    // The registration reaches the node over TCP: challenge and answer on one connection.
    assert_eq!(notify(sip, REALM, USER, 3600, 1), 200);
    wait_for(
        "the contact on the TCP node",
        Duration::from_secs(10),
        || node.has_contact(USER),
    );
    {
        let seen = node.seen.lock().unwrap();
        let regs: Vec<_> = seen
            .iter()
            .filter(|(_, l, _)| l.starts_with("REGISTER "))
            .collect();
        assert!(regs.len() >= 2, "challenge round trip: {seen:?}");
        for (c, _, via) in &regs {
            assert_eq!(*c, 1, "one connection: {seen:?}");
            assert!(via.starts_with("Via: SIP/2.0/TCP "), "{via}");
        }
    }
    assert_eq!(node.connections(), 1);
    assert_eq!(node.registers_ok_on(), vec![1]);

    // The node closes the connection; the binding's refresh (granted 10 s, refreshed after
    // 5 s) reconnects and is answered 200 on the new connection.
    node.close_all();
    wait_for(
        "a refresh answered 200 on a new connection",
        Duration::from_secs(20),
        || node.registers_ok_on().iter().any(|&c| c >= 2),
    );
    assert!(node.connections() >= 2);
    // The binding outlives the first grant: refreshes keep landing.
    std::thread::sleep(Duration::from_secs(6));
    assert!(node.has_contact(USER), "binding lost after the reconnect");

    let (code, m) = http(&admin, "/status.json");
    assert_eq!(code, 200);
    let f: regmirror::status::FarmStatus = serde_json::from_str(&m).unwrap();
    assert_eq!(
        (f.nodes[0].desired, f.nodes[0].confirmed, f.nodes[0].failing),
        (1, 1, 0),
        "{f:?}"
    );

    // Logs: no password, and the connection's life is visible.
    let logs = std::fs::read_to_string(&svc.log).unwrap();
    assert!(
        !logs.contains(&format!("secret{USER}")),
        "a password reached the log"
    );
    assert!(
        !logs.contains("regmirror-test-pw"),
        "the database password reached the log"
    );
    assert!(logs.contains("TCP connection to node up"), "{logs}");
    assert!(logs.contains("TCP connection to node closed"), "{logs}");
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}
