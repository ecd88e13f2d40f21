//! The HA contract of the real `regmirror run` binary, seen by its peer: a primary answers the
//! secondary's probes with `state=active` only once it does the work, that is after it has read
//! the database (its first reconciliation) and while it can. Before that, or with the database
//! gone, the secondary must not stand down (issue 15: "a primary that cannot reach the
//! database leaves nobody refreshing").
//!
//! The unreachable database needs nothing; with `REGMIRROR_TEST_REGMIRROR_URL` (tests/with-mariadb.sh)
//! the test also shows the same primary turning active once it reconciles.
use common::{free_port_tcp, free_port_udp, url, wait_for, Service};
use test_support as common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use regmirror::core::peer::{parse_header, probe_request, PeerState, Role, H_HA};

/// One probe from `peer` as a secondary sends it; the primary's `X-RegMirror-HA` answer.
fn probe(peer: &UdpSocket, primary: SocketAddr, seq: u32) -> Option<PeerState> {
    let me = PeerState {
        role: Role::Secondary,
        active: false,
    };
    let req = probe_request(peer.local_addr().unwrap(), primary, 7, seq, me, "test");
    peer.send_to(&req, primary).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = peer.recv_from(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{H_HA}:")))?;
    parse_header(line.trim())
}

fn config(sip: SocketAddr, peer: SocketAddr, admin_port: u16) -> String {
    format!(
        r#"[sip]
listen = "{sip}"
domain = "regmirror.test"
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "127.0.0.1:5060"
[[nodes]]
name = "ast1"
address = "127.0.0.1:{}"
[ha]
role = "primary"
peer = "{peer}"
[farm]
reconcile_interval = "1s"
[admin]
listen = "127.0.0.1:{admin_port}"
"#,
        free_port_udp()
    )
}

#[test]
fn a_primary_without_its_database_does_not_keep_the_secondary_in_standby() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port_udp()).parse().unwrap();
    let admin_port = free_port_tcp();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let dir = std::env::temp_dir().join(format!("regmirror-ha-{}", std::process::id()));
    let cfg = config(sip, peer.local_addr().unwrap(), admin_port);

    // Nothing listens on port 1: every database read fails.
    let down = Service::start(
        &dir,
        &cfg,
        "mysql://regmirror:x@127.0.0.1:1/regmirror",
        &admin,
    );
    for seq in 1..=5 {
        let answer = probe(&peer, sip, seq).expect("the primary answers its peer's probes");
        assert_eq!(answer.role, Role::Primary);
        assert!(
            !answer.active,
            "probe {seq}: a primary that never read the database says it is active"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(down);

    let Some(db) = url("REGMIRROR_TEST_REGMIRROR_URL") else {
        eprintln!("REGMIRROR_TEST_REGMIRROR_URL unset: the reachable-database half is skipped");
        return;
    };
    let _up = Service::start(&dir, &cfg, &db, &admin);
    let mut seq = 10;
    wait_for("the primary says active", Duration::from_secs(10), || {
        seq += 1;
        probe(&peer, sip, seq).is_some_and(|a| a.active)
    });
}
