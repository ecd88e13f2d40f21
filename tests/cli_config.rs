//! `regmirror check-config`, `--version`, usage errors and `status` against nothing: the built
//! binary's exit codes and messages, which scripts rely on. No database needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regmirror"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REGMIRROR__") || k.starts_with("REGMIRROR_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regmirror.example.toml")
}

fn check(text: &str, env: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir().join(format!(
        "regmirror-cli-config-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    let o = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    o
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn example_text() -> String {
    std::fs::read_to_string(example()).unwrap()
}

#[test]
fn the_example_file_is_valid() {
    let o = bin()
        .args(["check-config", "--config"])
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("configuration ok: 2 node(s)"),
        "{}",
        out(&o)
    );
}

#[test]
fn each_bad_input_gets_its_own_message_and_exit_1() {
    let ex = example_text();
    let cases: Vec<(String, &str)> = vec![
        (
            ex.replace("advertise = \"10.0.0.5:5070\"\n", ""),
            "`sip.advertise`",
        ),
        (
            ex.replace("domain = \"regmirror.test\"", "domain = \"a b\""),
            "`sip.domain`",
        ),
        (
            ex.replace("register_expires = 600", "register_expires = 5"),
            "`sip.register_expires`",
        ),
        (ex.replace("t1 = \"500ms\"", "t1 = \"0s\""), "`sip.t1`"),
        (ex.replace("t2 = \"4s\"", "t2 = \"100ms\""), "`sip.t2`"),
        (
            ex.replace("timer_f = \"32s\"", "timer_f = \"1ms\""),
            "`sip.timer_f`",
        ),
        (
            ex.replace("retry_max = \"30m\"", "retry_max = \"1s\""),
            "`sip.retry_max`",
        ),
        (
            ex.replace("trusted = [\"10.0.0.2\"]", "trusted = []"),
            "`kamailio.trusted`",
        ),
        (
            ex.replace("contact_host = \"10.0.0.2:5060\"", "contact_host = \"<x>\""),
            "`kamailio.contact_host`",
        ),
        (
            ex.replace("name = \"ast2\"", "name = \"ast 2\""),
            "`nodes[1].name`",
        ),
        (
            ex.replace("name = \"ast2\"", "name = \"ast1\""),
            "duplicate node name `ast1`",
        ),
        (
            ex.replace("10.0.0.32:5060", "10.0.0.31:5060"),
            "duplicate node address",
        ),
        (
            ex.replace("10.0.0.32:5060", "0.0.0.0:5060"),
            "`nodes[1].address`",
        ),
        (
            ex.replace("transport = \"udp\"", "transport = \"sctp\""),
            "variant constructor sctp",
        ),
        (
            ex.replace("url = \"mysql://", "url = \"postgres://"),
            "`database.url`",
        ),
        (
            ex.replace("max_connections = 4", "max_connections = 0"),
            "`database.max_connections`",
        ),
        (
            ex.replace("connect_timeout = \"5s\"", "connect_timeout = \"0s\""),
            "`database.connect_timeout`",
        ),
        (
            ex.replace("level = \"info\"", "level = \"regmirror=loud\""),
            "`log.level`",
        ),
        (ex.replace("format = \"text\"", "format = \"xml\""), "xml"),
        (
            ex.replace("listen = \"127.0.0.1:9070\"", "listen = \"nowhere\""),
            "admin",
        ),
        (
            ex.replace("register_expires = 600", "register_expires = \"soon\""),
            "register_expires",
        ),
        (ex.replace("[sip]", "[sip]\nlsiten = \"x\""), "lsiten"),
        (
            format!("{ex}\n[node_list]\nsource = \"database\"\n"),
            "takes the farm from the dispatcher table: remove [[nodes]]",
        ),
        (
            format!("{ex}\n[node_list]\npoll = \"1ms\"\n"),
            "`node_list.poll`",
        ),
        (
            format!("{ex}\n[node_list]\nami_user = \"regmirror\"\n"),
            "`node_list.ami_user`",
        ),
        (
            ex.replace("[kamailio]", "[kamailio]\nrpc = [\"https://10.0.0.2/RPC\"]"),
            "`kamailio.rpc[0]`",
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (text, want) in &cases {
        let o = check(text, &[]);
        let msg = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(
            o.status.code(),
            Some(1),
            "expected exit 1 for {want}: {}",
            out(&o)
        );
        assert!(msg.contains(want), "expected {want} in: {msg}");
        assert!(msg.starts_with("regmirror: "), "{msg}");
        assert!(
            seen.insert(msg.clone()),
            "two inputs gave the same message: {msg}"
        );
    }
    // Required sections: missing [kamailio] or [[nodes]].
    let no_nodes: String =
        ex.split("[[nodes]]").next().unwrap().to_string() + &ex[ex.find("[database]").unwrap()..];
    let o = check(&no_nodes, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("`nodes`"),
        "{}",
        out(&o)
    );
}

#[test]
fn environment_overrides_the_file() {
    let ex = example_text();
    let o = check(&ex, &[("REGMIRROR__SIP__REGISTER_EXPIRES", "5")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("`sip.register_expires`"), "{}", out(&o));
    let o = check(
        &ex,
        &[
            ("REGMIRROR__KAMAILIO__TRUSTED", "10.0.0.2,10.0.0.3"),
            ("REGMIRROR__SIP__LISTEN", "127.0.0.1:5999"),
            (
                "REGMIRROR__DATABASE__URL",
                "mysql://regmirror:hunter2@db/regmirror",
            ),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("listening on 127.0.0.1:5999"),
        "{}",
        out(&o)
    );
    assert!(!out(&o).contains("hunter2"));
    let o = check(&ex, &[("REGMIRROR__KAMAILIO__TRUSTED", "not-an-ip")]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
}

#[test]
fn missing_file_and_usage_errors_exit_1() {
    let o = bin()
        .args(["check-config", "--config", "/nonexistent/regmirror.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("/nonexistent/regmirror.toml"),
        "{}",
        out(&o)
    );
    for args in [&[][..], &["frobnicate"][..], &["status", "--bogus"][..]] {
        let o = bin().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", out(&o));
    }
}

#[test]
fn version_and_help_exit_0() {
    let o = bin().arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("regmirror {}", env!("CARGO_PKG_VERSION"))
    );
    let o = bin().arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    for cmd in ["run", "status", "check-config", "user"] {
        assert!(out(&o).contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn status_without_a_service_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for args in [&["status"][..], &["status", "1001"][..]] {
        let o = bin()
            .args(args)
            .env("REGMIRROR_ADMIN", format!("http://127.0.0.1:{port}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{}", out(&o));
        assert!(out(&o).contains("cannot reach"), "{}", out(&o));
    }
    let o = bin()
        .args(["status", "--admin", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
}

/// The systemd unit parses and references a runnable binary (`systemd-analyze verify`, when
/// systemd is installed).
#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/regmirror.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/regmirror run"));
    assert!(text.contains("DynamicUser=yes") && text.contains("NoNewPrivileges=yes"));
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("skipped: systemd-analyze not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("regmirror-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("regmirror.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/regmirror", env!("CARGO_BIN_EXE_regmirror")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", out(&o));
}

#[test]
fn ha_section_from_the_file_or_the_environment() {
    let ex = example_text();
    let o = check(
        &ex,
        &[
            ("REGMIRROR__HA__ROLE", "secondary"),
            ("REGMIRROR__HA__PEER", "10.0.0.40:5070"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("ha secondary with peer 10.0.0.40:5070 (takeover after 3 x 1s)"),
        "{}",
        out(&o)
    );
    // The environment overrides a file's [ha].
    let primary = format!("{ex}\n[ha]\nrole = \"primary\"\npeer = \"10.0.0.41:5070\"\n");
    let o = check(&primary, &[("REGMIRROR__HA__ROLE", "secondary")]);
    assert!(
        out(&o).contains("ha secondary with peer 10.0.0.41:5070"),
        "{}",
        out(&o)
    );
    for (env, want) in [
        (vec![("REGMIRROR__HA__ROLE", "secondary")], "peer"),
        (
            vec![
                ("REGMIRROR__HA__ROLE", "primary"),
                ("REGMIRROR__HA__PEER", "10.0.0.5:5070"),
            ],
            "`ha.peer`",
        ),
        (
            vec![
                ("REGMIRROR__HA__ROLE", "primary"),
                ("REGMIRROR__HA__PEER", "10.0.0.41:5070"),
                ("REGMIRROR__HA__TAKEOVER_AFTER", "0"),
            ],
            "`ha.takeover_after`",
        ),
    ] {
        let o = check(&ex, &env);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", out(&o));
        assert!(out(&o).contains(want), "expected {want} in: {}", out(&o));
    }
}

/// Issue 15: the demo secrets published with the compose stack are refused, wherever they
/// are set (file or environment), unless the demo stack says so; secrets also come from
/// files.
#[test]
fn demo_secrets_are_refused_outside_the_demo_stack() {
    let compose = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/regmirror/regmirror.toml"),
    )
    .unwrap();
    let o = check(&compose, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("node_list.ami_secret") && out(&o).contains("demo secret"));
    assert!(
        !out(&o).contains("regmirror-ami-demo"),
        "the secret itself is printed"
    );
    // Allowed, the file passes; its farm list is the compose database's table (not here).
    let o = check(&compose, &[("REGMIRROR_ALLOW_DEMO_SECRETS", "yes")]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(
        out(&o).contains("farm list (dispatcher table)"),
        "{}",
        out(&o)
    );

    let url = "mysql://regmirror:regmirror-demo@db/regmirror";
    let o = check(&example_text(), &[("REGMIRROR__DATABASE__URL", url)]);
    assert!(out(&o).contains("database.url"), "{}", out(&o));
    let o = check(
        &example_text(),
        &[(
            "REGMIRROR__KAMAILIO__NOTIFY_KEY",
            "regmirror-notify-demo-key",
        )],
    );
    assert!(out(&o).contains("kamailio.notify_key"), "{}", out(&o));

    // From files: the file's secret counts like the setting (here a demo one, so refused).
    let dir = std::env::temp_dir().join(format!("regmirror-secret-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ami"), "regmirror-ami-demo\n").unwrap();
    let text = example_text().replacen(
        "[[nodes]]\nname = \"ast1\"",
        &format!(
            "[[nodes]]\nname = \"ast1\"\nami = \"10.0.0.31:5038\"\nami_user = \"regmirror\"\nami_secret_file = \"{}\"",
            dir.join("ami").display()
        ),
        1,
    );
    let o = check(&text, &[]);
    assert!(out(&o).contains("nodes.ast1.ami_secret"), "{}", out(&o));
    let missing = text.replace(&dir.join("ami").display().to_string(), "/nonexistent/ami");
    let o = check(&missing, &[]);
    assert!(out(&o).contains("ami_secret_file") && out(&o).contains("/nonexistent/ami"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `regmirror node`: an unknown node and a node without `ami` are refused with exit 1 and a
/// message naming what is wrong; `list` shows what it cannot ask as such.
#[test]
fn node_commands_refuse_unknown_nodes_and_nodes_without_ami() {
    let run = |args: &[&str]| {
        bin()
            .arg("node")
            .args(args)
            .arg("--config")
            .arg(example())
            .output()
            .unwrap()
    };
    let o = run(&["drain", "nosuch"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("unknown node `nosuch` (the farm list has: ast1, ast2)"),
        "{}",
        out(&o)
    );
    for cmd in ["drain", "resume"] {
        let o = run(&[cmd, "ast2"]);
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(
            out(&o).contains("`ast2` has no `ami` configured"),
            "{}",
            out(&o)
        );
    }
    let o = run(&["list", "--admin", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o)
            .lines()
            .any(|l| l.starts_with("ast2") && l.contains("no ami")),
        "{}",
        out(&o)
    );
}

/// The farm list in the database: without one (`[[nodes]]`), `node add | remove` say how to
/// change the farm instead; with one that cannot be reached, `check-config` and `node` exit 3
/// and change nothing.
#[test]
fn farm_list_commands_without_a_reachable_table() {
    for args in [
        &["add", "ast3", "--address", "10.0.0.33:5060"][..],
        &["remove", "ast2"][..],
    ] {
        let o = bin()
            .arg("node")
            .args(args)
            .arg("--config")
            .arg(example())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(
            out(&o).contains("the farm list is `[[nodes]]` in the configuration file"),
            "{}",
            out(&o)
        );
    }
    let ex = example_text();
    let no_nodes: String =
        ex.split("[[nodes]]").next().unwrap().to_string() + &ex[ex.find("[database]").unwrap()..];
    let from_table = format!("{no_nodes}\n[node_list]\nsource = \"database\"\n")
        .replace("@127.0.0.1:3306/", "@127.0.0.1:1/");
    let o = check(&from_table, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(
        out(&o).contains("farm list (dispatcher table): database unreachable"),
        "{}",
        out(&o)
    );
}
