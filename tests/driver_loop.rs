//! The real driver, in-process, under tokio's paused clock, with credentials held in memory (no
//! database): a notification in, a REGISTER out, 401, 200, and the refresh before the grant
//! runs out, against the fake registrar on a real loopback socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regmirror::config::Config;
use regmirror::core::digest::Secret;
use regmirror::core::mirror::Credential;
use regmirror::core::testing::{FakeRegistrar, Received};
use regmirror::runtime::credentials::InMemoryCredentials;
use regmirror::runtime::metrics::Metrics;
use regmirror::runtime::Driver;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

const REALM: &str = "regmirror.test";

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The fake registrar on a loopback socket, answering on tokio's clock.
async fn registrar() -> (SocketAddr, Arc<Mutex<FakeRegistrar>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut reg = FakeRegistrar::new(addr, REALM);
    reg.add_user("1001", Secret::Password("pw1001".into()));
    let reg = Arc::new(Mutex::new(reg));
    let r = reg.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let out = r.lock().unwrap().handle(now(), &buf[..n]);
            for resp in out {
                let _ = socket.send_to(&resp, from).await;
            }
        }
    });
    (addr, reg)
}

/// Kamailio's notification from 127.0.0.1; returns the status code regmirror answers.
async fn notify(sip: SocketAddr, user: &str, expires: u32) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = s.local_addr().unwrap();
    let msg = format!(
        "MESSAGE sip:regmirror@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{user}\r\n\
         From: <sip:kamailio@{REALM}>;tag=k1\r\nTo: <sip:regmirror@{sip}>\r\nCall-ID: n-{user}@test\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nX-RegMirror-Event: save\r\n\
         X-RegMirror-AOR: {user}@{REALM}\r\nX-RegMirror-Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), sip).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf))
        .await
        .expect("an answer to the notification")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits (on the paused clock) until `f` holds, for at most `within`.
async fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Running {
    sip: SocketAddr,
    metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(node: SocketAddr, source: InMemoryCredentials) -> Running {
    let config = Config::from_toml(&format!(
        r#"[sip]
listen = "127.0.0.1:0"
domain = "{REALM}"
register_expires = 600
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "127.0.0.1:5060"
[[nodes]]
name = "ast1"
address = "{node}"
[database]
url = "mysql://unused@127.0.0.1/unused"
"#
    ))
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let (_admin_tx, admin_rx) = mpsc::channel(1);
    let driver = Driver::new(config, source, metrics.clone(), admin_rx).unwrap();
    let sip = driver.local_addr().unwrap();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(driver.run(reload_rx, async move {
        let _ = stopped.await;
        drop((_admin_tx, _reload_tx));
    }));
    Running {
        sip,
        metrics,
        stop,
        done,
    }
}

fn registers(reg: &Mutex<FakeRegistrar>, user: &str) -> Vec<Received> {
    let r = reg.lock().unwrap();
    r.log.iter().filter(|l| l.user == user).cloned().collect()
}

#[tokio::test(start_paused = true)]
async fn notification_to_register_challenge_ok_and_refresh_on_the_paused_clock() {
    let (node, reg) = registrar().await;
    let source = InMemoryCredentials::default();
    source.add_user(Credential {
        username: "1001".into(),
        secret: Secret::Password("pw1001".into()),
    });
    // Kamailio's `location` holds what it notifies (reconciliation reads it).
    source.set_live("1001", Some(Duration::from_secs(3600)));
    let run = start(node, source).await;

    assert_eq!(notify(run.sip, "1001", 3600).await, 200);
    until(Duration::from_secs(5), "1001 registered", || {
        reg.lock().unwrap().contact("1001", now()).is_some()
    })
    .await;
    let first = registers(&reg, "1001");
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(first[0].answered, 401);
    assert!(first[0].authorization.is_none());
    assert_eq!(first[1].answered, 200);
    assert!(first[1].authorization.is_some());
    let granted = reg.lock().unwrap().contact("1001", now()).unwrap().clone();

    // The refresh goes before the 600 s grant runs out, on the same Call-ID, and the contact
    // never lapses.
    until(Duration::from_secs(700), "the refresh", || {
        registers(&reg, "1001").len() > 2
    })
    .await;
    let refresh = registers(&reg, "1001").pop().unwrap();
    assert!(
        refresh.at < granted.expires_at,
        "{refresh:?} after {granted:?}"
    );
    assert_eq!(refresh.call_id, first[1].call_id);
    assert!(refresh.cseq > first[1].cseq);
    until(Duration::from_secs(5), "the refresh answered", || {
        registers(&reg, "1001")
            .iter()
            .filter(|r| r.answered == 200)
            .count()
            >= 2
    })
    .await;
    let renewed = reg.lock().unwrap().contact("1001", now()).unwrap().clone();
    assert!(renewed.expires_at > granted.expires_at);

    let m = &run.metrics;
    assert_eq!(m.notifications_accepted.get(), 1);
    let _ = run.stop.send(());
    run.done.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unknown_user_is_looked_up_once_and_never_sent_to_a_node() {
    let (node, reg) = registrar().await;
    let run = start(node, InMemoryCredentials::default()).await;

    assert_eq!(notify(run.sip, "4040", 3600).await, 200);
    let m = run.metrics.clone();
    until(Duration::from_secs(5), "the lookup answered", || {
        m.credential_unknown_users.get() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(registers(&reg, "4040").is_empty());
    assert_eq!(m.credential_lookups.get(), 1);
    let _ = run.stop.send(());
    run.done.await.unwrap().unwrap();
}
