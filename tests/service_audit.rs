//! The AMI drift audit of the real `regmirror run` binary against a UDP fake registrar and a fake
//! Asterisk manager (a `TcpListener` thread here) whose `PJSIPShowContacts` is slow: it lists the
//! registrar's contacts as they were when the action arrived and answers 1.5 s later, like a node
//! with 20k contacts. Credentials come from a real MariaDB: run via
//! `tests/with-mariadb.sh cargo test --test service_audit`.
//!
//! Asserts: registrations confirmed while a listing is being fetched are not "missing" (no
//! re-register, no "drift repaired"), and a contact deleted behind regmirror's back is repaired.
use common::registrar::UdpRegistrar;
use common::{free_port_tcp, free_port_udp, http, metric, notify, provision, wait_for, Service};
use test_support as common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regmirror::core::testing::FakeRegistrar;

const REALM: &str = "regmirror.test";
const CONTACT_HOST: &str = "127.0.0.1:5060";
const AMI_USER: &str = "regmirror";
const AMI_SECRET: &str = "ami-test-secret";
/// How long the fake manager takes to answer `PJSIPShowContacts`.
const LISTING_DELAY: Duration = Duration::from_millis(1500);
const USERS: usize = 40;

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("{}", 7300 + i)).collect()
}

/// Counters of the fake manager, read by the test.
#[derive(Default)]
struct AmiStats {
    /// `PJSIPShowContacts` actions received (snapshot taken).
    listings_started: AtomicU64,
    /// Listings answered in full.
    listings_answered: AtomicU64,
    /// Contacts that appeared on the registrar while a listing was pending (absent from it):
    /// the race under test; the test needs some to prove anything.
    appeared_during_listing: AtomicU64,
}

/// Just enough of Asterisk's manager for `runtime::ami`: banner, Login, a slow
/// `PJSIPShowContacts`, Logoff. One session at a time (one auditor per node).
struct FakeAmi {
    addr: SocketAddr,
    stats: Arc<AmiStats>,
    stop: Arc<AtomicBool>,
}

impl FakeAmi {
    fn start(reg: Arc<Mutex<FakeRegistrar>>) -> FakeAmi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(AmiStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, s) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        // A broken session is the client's problem to report; keep serving.
                        let _ = ami_session(conn, &reg, &st);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeAmi { addr, stats, stop }
    }

    fn started(&self) -> u64 {
        self.stats.listings_started.load(Ordering::Relaxed)
    }
}

impl Drop for FakeAmi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One message's `Key: value` fields (keys lower-cased).
fn ami_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn ami_session(
    mut conn: TcpStream,
    reg: &Mutex<FakeRegistrar>,
    stats: &AmiStats,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"Asterisk Call Manager/9.0.0\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let f = ami_fields(&text);
        let get = |k: &str| {
            f.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let id = get("actionid");
        match get("action") {
            "Login" if get("username") == AMI_USER && get("secret") == AMI_SECRET => {
                let m = format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
                conn.write_all(m.as_bytes())?;
            }
            "Login" => {
                let m = format!(
                    "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
                );
                conn.write_all(m.as_bytes())?;
                return Ok(());
            }
            "PJSIPShowContacts" => {
                // The listing reflects the table when the action arrived; it takes a while.
                let listed: Vec<(String, String)> = {
                    let r = reg.lock().unwrap();
                    let now = Instant::now();
                    r.contacts
                        .iter()
                        .filter(|(_, c)| c.expires_at > now)
                        .map(|(u, c)| (u.clone(), c.uri.clone()))
                        .collect()
                };
                stats.listings_started.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(LISTING_DELAY);
                let before: HashSet<&str> = listed.iter().map(|(u, _)| u.as_str()).collect();
                let appeared = {
                    let r = reg.lock().unwrap();
                    r.contact_users(Instant::now(), CONTACT_HOST)
                        .iter()
                        .filter(|u| !before.contains(u.as_str()))
                        .count()
                };
                stats
                    .appeared_during_listing
                    .fetch_add(appeared as u64, Ordering::Relaxed);
                let mut m = format!(
                    "Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\
                     Message: A listing of Contacts follows, presence will follow as they are received\r\n\r\n"
                );
                for (i, (user, uri)) in listed.iter().enumerate() {
                    m.push_str(&format!(
                        "Event: ContactList\r\nActionID: {id}\r\nObjectType: contact\r\n\
                         ObjectName: {user};@{i:08x}\r\nEndpoint: {user}\r\nUri: {uri}\r\n\
                         UserAgent: regmirror\r\nStatus: Unknown\r\n\r\n"
                    ));
                }
                m.push_str(&format!(
                    "Event: ContactListComplete\r\nActionID: {id}\r\nEventList: Complete\r\n\
                     ListItems: {}\r\n\r\n",
                    listed.len()
                ));
                conn.write_all(m.as_bytes())?;
                stats.listings_answered.fetch_add(1, Ordering::Relaxed);
            }
            "Logoff" => {
                let m = format!(
                    "Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n"
                );
                conn.write_all(m.as_bytes())?;
                return Ok(());
            }
            other => {
                let m = format!(
                    "Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command: {other}\r\n\r\n"
                );
                conn.write_all(m.as_bytes())?;
            }
        }
    }
}

fn drift_repaired(admin: &str) -> f64 {
    metric(&http(admin, "/metrics").1, "regmirror_drift_repaired_total")
}

#[test]
fn audit_ignores_registrations_confirmed_during_a_slow_listing_and_repairs_real_drift() {
    let Some(db) = common::url("REGMIRROR_TEST_REGMIRROR_URL") else {
        return;
    };
    let Some(prov) = common::url("REGMIRROR_TEST_PROVISIONER_URL") else {
        return;
    };
    let users = users();
    // Provisioning is one CLI run per user: a few threads keep it short.
    std::thread::scope(|s| {
        for part in users.chunks(USERS / 4) {
            let prov = &prov;
            s.spawn(move || {
                for u in part {
                    provision(prov, REALM, u);
                }
            });
        }
    });
    let reg = UdpRegistrar::start(REALM, &users);
    let ami = FakeAmi::start(reg.reg.clone());
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port_udp()).parse().unwrap();
    let admin_port = free_port_tcp();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let dir = std::env::temp_dir().join(format!("regmirror-audit-{}", std::process::id()));
    let config = format!(
        r#"[sip]
listen = "{sip}"
domain = "{REALM}"
t1 = "100ms"
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "{CONTACT_HOST}"
[[nodes]]
name = "ast1"
address = "{}"
ami = "{}"
ami_user = "{AMI_USER}"
ami_secret = "{AMI_SECRET}"
[farm]
audit_interval = "1s"
[database]
url = "mysql://placeholder@127.0.0.1/x"
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
level = "regmirror=info,warn"
"#,
        reg.addr, ami.addr
    );
    let svc = Service::start(&dir, &config, &db, &admin);
    // The audit runs against the empty table first (and proves the login works).
    wait_for("a first listing", Duration::from_secs(5), || {
        ami.started() >= 1
    });

    // A registration storm spanning several slow listings: one user every 100 ms.
    for (i, u) in users.iter().enumerate() {
        assert_eq!(
            notify(sip, REALM, u, 3600, i as u32 + 1),
            200,
            "notification for {u}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        "every user registered on the node",
        Duration::from_secs(10),
        || users.iter().all(|u| reg.has_contact(u)),
    );
    wait_for("every binding confirmed", Duration::from_secs(5), || {
        let m = http(&admin, "/metrics").1;
        metric(&m, "regmirror_bindings{node=\"ast1\",state=\"registered\"}") == USERS as f64
    });
    // A listing started after this point began after the one overlapping the storm was answered
    // and handed to the driver a whole audit_interval earlier.
    let s0 = ami.started();
    wait_for("a listing after the storm", Duration::from_secs(6), || {
        ami.started() > s0
    });
    let appeared = ami.stats.appeared_during_listing.load(Ordering::Relaxed);
    assert!(
        appeared >= 5,
        "only {appeared} registrations completed during a listing: the race was not exercised"
    );
    let logs = std::fs::read_to_string(&svc.log).unwrap();
    let repaired = drift_repaired(&admin);
    let reregistered: Vec<&String> = users.iter().filter(|u| reg.registrations(u) > 1).collect();
    assert!(
        repaired == 0.0 && !logs.contains("drift repaired") && reregistered.is_empty(),
        "registrations confirmed during a listing were taken for drift: \
         drift_repaired_total={repaired}, {appeared} appeared during listings, \
         re-registered: {reregistered:?}\n{}",
        logs.lines()
            .filter(|l| l.contains("drift repaired"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Positive control: a contact lost behind regmirror's back is found and put back.
    let victim = &users[7];
    assert!(reg.reg.lock().unwrap().contacts.remove(victim).is_some());
    wait_for(
        "the audit repairs the lost contact",
        Duration::from_secs(8),
        || drift_repaired(&admin) >= 1.0 && reg.has_contact(victim),
    );
    assert_eq!(
        drift_repaired(&admin),
        1.0,
        "only the lost contact is drift"
    );
    assert_eq!(reg.registrations(victim), 2);
    // The repair starts with fresh timers: no retransmission of it 500 ms (T1) after a listing
    // that took 1.5 s (seen when the audit used the listing's start as the current time).
    let retransmitted = reg
        .reg
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|l| &l.user == victim && l.retransmission)
        .count();
    assert_eq!(
        retransmitted, 0,
        "the repair REGISTER was retransmitted at once"
    );
    let logs = std::fs::read_to_string(&svc.log).unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains("drift repaired") && l.contains("missing=1")),
        "{logs}"
    );
    assert!(!logs.contains(AMI_SECRET), "the AMI secret reached the log");
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}
