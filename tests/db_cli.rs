//! `regmirror user ...` exit codes and messages, running the built binary
//! against a real MariaDB (tests/with-mariadb.sh).
use test_support as common;

use std::process::Output;

use common::url;

use common::run_with_db as regmirror;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn user_commands_exit_codes() {
    let Some(url) = url("REGMIRROR_TEST_PROVISIONER_URL") else {
        return;
    };
    let id = "cli-user";
    let _ = regmirror(&url, &["user", "remove", id], None);

    let o = regmirror(
        &url,
        &[
            "user",
            "add",
            id,
            "--realm",
            "regmirror.test",
            "--password-stdin",
        ],
        Some("cli-secret\n"),
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("cli-secret"), "password echoed");

    let o = regmirror(
        &url,
        &[
            "user",
            "add",
            id,
            "--realm",
            "regmirror.test",
            "--password-stdin",
        ],
        Some("x\n"),
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));

    let o = regmirror(&url, &["user", "list"], None);
    assert_eq!(code(&o), 0);
    assert!(
        text(&o)
            .lines()
            .any(|l| l.starts_with(&format!("{id}\tregmirror.test\tplaintext\tok"))),
        "{}",
        text(&o)
    );

    let o = regmirror(&url, &["user", "show", id], None);
    assert_eq!(code(&o), 0);
    assert!(!text(&o).contains("cli-secret"));

    // no password source: one is generated and printed once
    let o = regmirror(&url, &["user", "passwd", id, "--hashed-only"], None);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("generated password: "), "{}", text(&o));

    let o = regmirror(
        &url,
        &["user", "add", "bad id!", "--realm", "regmirror.test"],
        None,
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("not allowed"), "{}", text(&o));

    let o = regmirror(&url, &["user", "add", "cli-norealm"], None);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("realm"));

    let o = regmirror(&url, &["user", "remove", id], None);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = regmirror(&url, &["user", "remove", id], None);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("not found"));

    let o = regmirror(&url, &["user", "frobnicate"], None);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

#[test]
fn database_problems_exit_3() {
    let Some(url) = url("REGMIRROR_TEST_DATABASE_URL") else {
        return;
    };
    let o = regmirror("mysql://nobody:x@127.0.0.1:1/none", &["user", "list"], None);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("unreachable"), "{}", text(&o));

    let base = url.rsplit_once('/').unwrap().0;
    let o = regmirror(&format!("{base}/mysql"), &["user", "list"], None);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("apply sql/apply.sh"), "{}", text(&o));
}
