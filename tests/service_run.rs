//! The real `regmirror run` binary against two UDP fake registrars (the `fake_registrar`
//! example's `core::testing::FakeRegistrar`, in threads here so the test reads their contact
//! tables) and a real MariaDB for credentials: run via
//! `tests/with-mariadb.sh cargo test --test service_run`.
//!
//! Asserts: a notification's registration reaches every node, `/metrics` shows the 200s and
//! latencies, `status [user]` and its exit codes, JSON logs without secrets, an unregister
//! removes the contact, and SIGTERM lets an in-flight registration finish, exits 0 and leaves
//! every contact in place. With `chromium` installed it also screenshots the status page
//! (`tests/status-page.sh`, artifact under `target/artifacts/`).
use common::registrar::UdpRegistrar;
use common::{
    bin, free_port_tcp, free_port_udp, http, metric, notify, provision, wait_for, Service,
};
use test_support as common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const REALM: &str = "regmirror.test";
const USERS: [&str; 3] = ["7100", "7101", "7102"];

fn status(admin: &str, args: &[&str]) -> Output {
    bin()
        .arg("status")
        .args(args)
        .env("REGMIRROR_ADMIN", admin)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn service_registers_reports_and_shuts_down_gracefully() {
    let Some(db) = common::url("REGMIRROR_TEST_REGMIRROR_URL") else {
        return;
    };
    let Some(prov) = common::url("REGMIRROR_TEST_PROVISIONER_URL") else {
        return;
    };
    for u in USERS {
        provision(&prov, REALM, u);
    }
    let (r1, r2) = (
        UdpRegistrar::start(REALM, &USERS),
        UdpRegistrar::start(REALM, &USERS),
    );
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port_udp()).parse().unwrap();
    let admin_port = free_port_tcp();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let dir = std::env::temp_dir().join(format!("regmirror-service-{}", std::process::id()));
    let config = format!(
        r#"[sip]
listen = "{sip}"
domain = "{REALM}"
t1 = "100ms"
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "127.0.0.1:5060"
[[nodes]]
name = "ast1"
address = "{}"
[[nodes]]
name = "ast2"
address = "{}"
[database]
url = "mysql://placeholder@127.0.0.1/x"
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
format = "json"
level = "regmirror=debug,info"
"#,
        r1.addr, r2.addr
    );

    // Before the service runs: `status` cannot reach it.
    let o = status(&admin, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));

    let mut svc = Service::start(&dir, &config, &db, &admin);

    // Registration reaches every node.
    assert_eq!(notify(sip, REALM, "7100", 3600, 1), 200);
    assert_eq!(notify(sip, REALM, "7101", 3600, 2), 200);
    wait_for(
        "7100 and 7101 on both nodes",
        Duration::from_secs(10),
        || {
            ["7100", "7101"]
                .iter()
                .all(|u| r1.has_contact(u) && r2.has_contact(u))
        },
    );

    // status <user>: registered on every node, exit 0.
    wait_for("status 7100 registered", Duration::from_secs(5), || {
        let o = status(&admin, &["7100"]);
        o.status.code() == Some(0) && out(&o).matches("registered").count() >= 2
    });
    let o = status(&admin, &["7100"]);
    let text = out(&o);
    assert!(
        text.contains("ast1") && text.contains("ast2") && text.contains("200 OK"),
        "{text}"
    );
    let o = status(&admin, &["7100", "--json"]);
    let u: regmirror::status::UserStatus =
        serde_json::from_slice(&o.stdout).expect("status --json");
    assert!(
        u.live && u.nodes.iter().all(|b| b.state == "registered"),
        "{u:?}"
    );
    assert!(
        u.nodes
            .iter()
            .all(|b| b.next_action_seconds.is_some_and(|s| s > 60.0)),
        "{u:?}"
    );

    // Farm summary. The admin listener answers from a snapshot at most a second old.
    wait_for(
        "the farm snapshot shows both users",
        Duration::from_secs(3),
        || {
            serde_json::from_str::<regmirror::status::FarmStatus>(&http(&admin, "/status.json").1)
                .is_ok_and(|f| f.live_aors == 2)
        },
    );
    let o = status(&admin, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    for node in ["ast1", "ast2"] {
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // NODE ADDRESS HEALTH COVERAGE LAG ...
        assert_eq!(row.get(3..6), Some(&["100%", "0", "s"][..]), "{table}");
    }
    let f: regmirror::status::FarmStatus =
        serde_json::from_str(&http(&admin, "/status.json").1).unwrap();
    assert_eq!(f.live_aors, 2);
    for n in &f.nodes {
        assert_eq!(
            (n.desired, n.confirmed, n.failing, n.drift),
            (2, 2, 0, 0),
            "{n:?}"
        );
        assert_eq!(
            (n.covered, n.coverage_percent, n.lag_seconds),
            (2, 100.0, 0.0),
            "{n:?}"
        );
        // Both fake registrars answered probes and REGISTERs.
        assert_eq!(n.health, "up");
    }

    // Unknown user and bad usage.
    assert_eq!(status(&admin, &["nosuchuser"]).status.code(), Some(2));
    assert_eq!(status(&admin, &["bad user"]).status.code(), Some(1));
    assert_eq!(status("localhost:1", &[]).status.code(), Some(1));

    // /metrics after real traffic: challenges and 200s, latency per node, bindings gauge.
    let (code, m) = http(&admin, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metric(&m, "regmirror_register_responses_total{code=\"200\"}") >= 4.0,
        "{m}"
    );
    assert!(
        metric(&m, "regmirror_register_responses_total{code=\"401\"}") >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, "regmirror_notifications_total{result=\"accepted\"}") >= 2.0,
        "{m}"
    );
    for node in ["ast1", "ast2"] {
        assert!(
            metric(
                &m,
                &format!("regmirror_register_latency_seconds_count{{node=\"{node}\"}}")
            ) >= 2.0,
            "{m}"
        );
        assert_eq!(
            metric(
                &m,
                &format!("regmirror_bindings{{node=\"{node}\",state=\"registered\"}}")
            ),
            2.0,
            "{m}"
        );
        // Caught up: what a dashboard reads per node.
        for (name, want) in [
            ("regmirror_node_desired_bindings", 2.0),
            ("regmirror_node_confirmed_bindings", 2.0),
            ("regmirror_node_coverage_ratio", 1.0),
            ("regmirror_node_lag_seconds", 0.0),
        ] {
            assert_eq!(
                metric(&m, &format!("{name}{{node=\"{node}\"}}")),
                want,
                "{m}"
            );
        }
    }

    // The status page, in a real browser when there is one.
    status_page(&admin);

    // Unregister: the contact goes from both nodes, `status` says no binding (exit 2).
    assert_eq!(notify(sip, REALM, "7101", 0, 3), 200);
    wait_for("7101 gone", Duration::from_secs(10), || {
        !r1.has_contact("7101") && !r2.has_contact("7101")
    });
    wait_for("status 7101 exit 2", Duration::from_secs(5), || {
        status(&admin, &["7101"]).status.code() == Some(2)
    });

    // Graceful shutdown with a registration in flight on slow nodes.
    r1.delay_ms.store(300, Ordering::Relaxed);
    r2.delay_ms.store(300, Ordering::Relaxed);
    assert_eq!(notify(sip, REALM, "7102", 3600, 4), 200);
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let pid = svc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let end = Instant::now() + Duration::from_secs(6);
    let exit = loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "regmirror did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    for r in [&r1, &r2] {
        assert!(r.has_contact("7100"), "SIGTERM must leave 7100 in place");
        assert!(
            r.has_contact("7102"),
            "the in-flight registration must finish"
        );
        for u in ["7100", "7102"] {
            assert!(
                !r.expires_seen(u).contains(&0),
                "{u} was unregistered: {:?}",
                r.expires_seen(u)
            );
        }
        assert!(r.expires_seen("7101").contains(&0));
    }

    // Logs: JSON, one line per state change with user/node/state/reason, no secret.
    let logs = std::fs::read_to_string(&svc.log).unwrap();
    for u in USERS {
        assert!(
            !logs.contains(&format!("secret{u}")),
            "a password reached the log"
        );
    }
    assert!(
        !logs.contains("regmirror-test-pw"),
        "the database password reached the log"
    );
    let mut changes = 0;
    for line in BufReader::new(logs.as_bytes()).lines() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let f = &v["fields"];
        if f["message"] == "binding" {
            assert!(
                f["user"].is_string() && f["node"].is_string() && f["reason"].is_string(),
                "{line}"
            );
            changes += 1;
        }
    }
    assert!(changes >= 6, "state changes logged: {changes}\n{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `tests/status-page.sh` (headless Chromium: screenshot + DOM assertions) when Chromium
/// is installed; `REGMIRROR_REQUIRE_CHROMIUM=1` makes its absence a failure.
fn status_page(admin: &str) {
    let have = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("REGMIRROR_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "chromium missing but REGMIRROR_REQUIRE_CHROMIUM=1"
        );
        eprintln!("skipped: status page screenshot (no chromium)");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash")
        .arg(format!("{root}/tests/status-page.sh"))
        .args([admin, "service-status.png", "ast1=2", "ast2=2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "status-page.sh: {}", out(&o));
}
