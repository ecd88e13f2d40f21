//! What regmirror's integration tests share: free ports, the built `regmirror` binary, the
//! admin listener, polling, provisioning and notifications against a real MariaDB
//! (`tests/with-mariadb.sh`), a `regmirror run` service in a temporary directory, a fake node on
//! UDP (`registrar`) and a SIP phone (`phone`). A crate of its own, so each test binary uses
//! what it needs and nothing is compiled in unused.

pub mod phone;
pub mod registrar;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use md5::{Digest, Md5};
use sqlx::mysql::MySqlPool;

pub fn free_port_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_port_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built `regmirror` binary, with the developer's environment kept out of it. Cargo builds
/// it beside the test binaries' `deps/` for every integration test of the package.
pub fn bin() -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let mut c = Command::new(dir.join(format!("regmirror{}", std::env::consts::EXE_SUFFIX)));
    for (k, _) in std::env::vars() {
        if k.starts_with("REGMIRROR__") || k == "REGMIRROR_CONFIG" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `regmirror <args>` against the database at `url` (REGMIRROR_DATABASE_URL, no realm or
/// password from the environment), `stdin` written to it; its output.
pub fn run_with_db(url: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .env("REGMIRROR_DATABASE_URL", url)
        .env_remove("REGMIRROR_USER_PASSWORD")
        .env_remove("REGMIRROR_REALM")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run regmirror");
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("regmirror's output")
}

/// GET on the admin listener: (status, body), (0, "") when unreachable.
pub fn http(admin: &str, path: &str) -> (u16, String) {
    regmirror::cli::status::http_get(admin, path, std::time::Duration::from_secs(5))
        .unwrap_or((0, String::new()))
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    wait_for_some(what, timeout, || f().then_some(()))
}

/// Polls `f` every 50 ms until it returns a value; panics naming `what` after `timeout`.
pub fn wait_for_some<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// (Re)creates `user` in `realm` with password `secret<user>` through the CLI.
pub fn provision(url: &str, realm: &str, user: &str) {
    let _ = bin()
        .args(["user", "remove", user])
        .env("REGMIRROR_DATABASE_URL", url)
        .output();
    let mut child = bin()
        .args(["user", "add", user, "--realm", realm, "--password-stdin"])
        .env("REGMIRROR_DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "secret{user}").unwrap();
    assert!(child.wait().unwrap().success(), "provision {user}");
}

/// The URL in `var`, or `None` (test skipped) when unset. With
/// `REGMIRROR_REQUIRE_DB=1` a missing URL fails the test instead.
pub fn url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("REGMIRROR_REQUIRE_DB").as_deref() != Ok("1"),
                "{var} is unset but REGMIRROR_REQUIRE_DB=1: run via tests/with-mariadb.sh"
            );
            eprintln!("skipped: {var} unset (run via tests/with-mariadb.sh)");
            None
        }
    }
}

pub async fn pool(var: &str) -> Option<MySqlPool> {
    let url = url(var)?;
    Some(
        regmirror::store::connect(&url)
            .await
            .expect("connect to the test database"),
    )
}

/// MD5(user:realm:password) computed here, independently of the SQL view.
pub fn md5_hex(user: &str, realm: &str, password: &str) -> String {
    Md5::digest(format!("{user}:{realm}:{password}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Rows of `id` in ps_endpoints, ps_auths and ps_aors, as text.
pub async fn rows_of(pool: &MySqlPool, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (table, cols) in [
        ("ps_endpoints", "CONCAT_WS('|', id, aors, auth, context, allow, rewrite_contact)"),
        ("ps_auths", "CONCAT_WS('|', id, auth_type, username, realm, COALESCE(password,'<null>'), COALESCE(md5_cred,'<null>'))"),
        ("ps_aors", "CONCAT_WS('|', id, max_contacts, remove_existing)"),
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT {cols} FROM {table} WHERE id = ?"))
            .bind(id)
            .fetch_all(pool)
            .await
            .expect("read rows");
        out.extend(rows.into_iter().map(|(r,)| format!("{table}:{r}")));
    }
    out
}

/// MySQL error number of a failed query.
pub fn db_errno(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// Kamailio's notification for `aor` ("save", or "delete" when `expires` is 0), sent from
/// 127.0.0.1 (trusted) over UDP to regmirror's SIP socket; returns the status code it answers.
pub fn notify(sip: std::net::SocketAddr, realm: &str, aor: &str, expires: u32, seq: u32) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let local = s.local_addr().unwrap();
    let event = if expires == 0 { "delete" } else { "save" };
    let msg = format!(
        "MESSAGE sip:regmirror@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-n{seq}\r\n\
         From: <sip:kamailio@{realm}>;tag=k{seq}\r\nTo: <sip:regmirror@{sip}>\r\nCall-ID: n{seq}@test\r\n\
         CSeq: {seq} MESSAGE\r\nMax-Forwards: 70\r\nX-RegMirror-Event: {event}\r\nX-RegMirror-AOR: {aor}@{realm}\r\n\
         X-RegMirror-Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), sip).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("an answer to the notification");
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A running `regmirror run` and its log file; killed when dropped.
pub struct Service {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Service {
    /// Writes `config` to `dir/regmirror.toml` and runs `regmirror run` on it, the database URL
    /// (with its password) from the environment as in production and stderr in
    /// `dir/stderr.log`; returns once `/readyz` on `admin` answers 200.
    pub fn start(dir: &std::path::Path, config: &str, db: &str, admin: &str) -> Service {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("regmirror.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("stderr.log");
        let child = bin()
            .args(["run", "--config"])
            .arg(&cfg)
            .env("REGMIRROR__DATABASE__URL", db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let svc = Service { child, log };
        wait_for("/readyz", std::time::Duration::from_secs(10), || {
            http(admin, "/readyz").0 == 200
        });
        svc
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series in a Prometheus text page (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
