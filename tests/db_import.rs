//! `regmirror user import | export` against a real MariaDB (tests/with-mariadb.sh): the built
//! binary, what Kamailio's view then answers, idempotence, dry runs, bad rows, and the chan_sip
//! `sipusers` table of Kamailio's Asterisk realtime tutorial.
use test_support as common;

use std::process::Output;

use common::{md5_hex, pool, url};
use regmirror::store::credentials::fetch_credential;
use regmirror::store::provision::remove_user;

const REALM: &str = "regmirror.test";

fn regmirror(url: &str, args: &[&str], stdin: &str) -> Output {
    common::run_with_db(url, args, Some(stdin))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn import(url: &str, csv: &str, extra: &[&str]) -> Output {
    let mut args = vec!["user", "import", "--csv", "-", "--realm", REALM];
    args.extend_from_slice(extra);
    regmirror(url, &args, csv)
}

/// The HA1 Kamailio's view gives for `user`, as regmirror reads it (None: not a user).
async fn ha1_of(reader: &sqlx::MySqlPool, user: &str) -> Option<String> {
    let c = fetch_credential(reader, user, REALM).await.unwrap()?;
    Some(match c.secret {
        regmirror::core::digest::Secret::Password(p) => md5_hex(user, REALM, &p),
        regmirror::core::digest::Secret::Ha1Md5 { ha1, .. } => ha1,
    })
}

#[tokio::test]
async fn csv_import_is_checked_whole_idempotent_and_exports_back() {
    let Some(url) = url("REGMIRROR_TEST_PROVISIONER_URL") else {
        return;
    };
    let (Some(admin), Some(reader)) = (
        pool("REGMIRROR_TEST_DATABASE_URL").await,
        pool("REGMIRROR_TEST_REGMIRROR_URL").await,
    ) else {
        return;
    };
    let ids = ["imp-1", "imp-2", "imp-3", "imp-bad"];
    for id in ids {
        let _ = remove_user(&admin, id).await;
    }
    let ha1 = md5_hex("imp-3", REALM, "hashed-pw-3");
    let csv = format!(
        "user,password,ha1,context,codecs\n\
         imp-1,pw-imp-1,,phones,\n\
         imp-2,pw-imp-2,,office,alaw\n\
         imp-3,,{ha1},,\n"
    );

    // A bad row anywhere: named with its line, and nothing written.
    let bad = format!("{csv}imp-bad,,,,\n");
    let o = import(&url, &bad, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("line 5: user \"imp-bad\""),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("nothing was written"), "{}", text(&o));
    assert_eq!(ha1_of(&reader, "imp-1").await, None);

    // A dry run writes nothing either.
    let o = import(&url, &csv, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("dry run: 3 to add, 0 to update, 0 unchanged"),
        "{}",
        text(&o)
    );
    assert_eq!(ha1_of(&reader, "imp-1").await, None);

    let o = import(&url, &csv, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("imported: 3 to add"), "{}", text(&o));
    // What Kamailio and regmirror authenticate with: the view's credential.
    assert_eq!(
        ha1_of(&reader, "imp-1").await,
        Some(md5_hex("imp-1", REALM, "pw-imp-1"))
    );
    assert_eq!(ha1_of(&reader, "imp-3").await, Some(ha1.clone()));
    let (context, allow): (String, String) =
        sqlx::query_as("SELECT context, allow FROM ps_endpoints WHERE id = 'imp-2'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!((context.as_str(), allow.as_str()), ("office", "alaw"));

    // The same input again changes nothing; one changed password is one update.
    let o = import(&url, &csv, &[]);
    assert!(
        text(&o).contains("0 to add, 0 to update, 3 unchanged"),
        "{}",
        text(&o)
    );
    let changed = csv.replace("pw-imp-2", "pw-imp-2-new");
    let o = import(&url, &changed, &["--dry-run"]);
    assert!(text(&o).contains("update imp-2"), "{}", text(&o));
    let o = import(&url, &changed, &[]);
    assert!(
        text(&o).contains("0 to add, 1 to update, 2 unchanged"),
        "{}",
        text(&o)
    );
    assert_eq!(
        ha1_of(&reader, "imp-2").await,
        Some(md5_hex("imp-2", REALM, "pw-imp-2-new"))
    );

    // Export, then import the export: nothing to do.
    let o = regmirror(&url, &["user", "export"], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let exported = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(exported.starts_with("user,password,ha1,realm,context,codecs\n"));
    assert!(
        exported.contains(&format!("imp-3,,{ha1},{REALM},phones,\"ulaw,alaw\"")),
        "{exported}"
    );
    // Only this test's users: other tests add and remove theirs meanwhile.
    let ours: String = exported
        .lines()
        .filter(|l| l.starts_with("user,") || l.starts_with("imp-"))
        .map(|l| format!("{l}\n"))
        .collect();
    let o = regmirror(&url, &["user", "import", "--csv", "-"], &ours);
    assert!(
        text(&o).contains("0 to add, 0 to update, 3 unchanged"),
        "{}",
        text(&o)
    );
    for id in ids {
        let _ = remove_user(&admin, id).await;
    }
}

/// The `sipusers` table as Kamailio's "Asterisk realtime" tutorial creates it (chan_sip's
/// realtime columns plus the tutorial's plaintext `sippasswd` for Kamailio).
const SIPUSERS: &str = "CREATE TABLE IF NOT EXISTS `sipusers` (
  `id` int(11) NOT NULL auto_increment,
  `name` varchar(80) NOT NULL default '',
  `host` varchar(31) NOT NULL default '',
  `nat` varchar(5) NOT NULL default 'no',
  `type` enum('user','peer','friend') NOT NULL default 'friend',
  `accountcode` varchar(20) default NULL,
  `amaflags` varchar(13) default NULL,
  `call-limit` smallint(5) unsigned default NULL,
  `callgroup` varchar(10) default NULL,
  `callerid` varchar(80) default NULL,
  `cancallforward` char(3) default 'yes',
  `canreinvite` char(3) default 'yes',
  `context` varchar(80) default NULL,
  `defaultip` varchar(15) default NULL,
  `dtmfmode` varchar(7) default NULL,
  `fromuser` varchar(80) default NULL,
  `fromdomain` varchar(80) default NULL,
  `insecure` varchar(4) default NULL,
  `language` char(2) default NULL,
  `mailbox` varchar(50) default NULL,
  `md5secret` varchar(80) default NULL,
  `deny` varchar(95) default NULL,
  `permit` varchar(95) default NULL,
  `mask` varchar(95) default NULL,
  `musiconhold` varchar(100) default NULL,
  `pickupgroup` varchar(10) default NULL,
  `qualify` char(3) default NULL,
  `regexten` varchar(80) default NULL,
  `restrictcid` char(3) default NULL,
  `rtptimeout` char(3) default NULL,
  `rtpholdtimeout` char(3) default NULL,
  `secret` varchar(80) default NULL,
  `setvar` varchar(100) default NULL,
  `disallow` varchar(100) default 'all',
  `allow` varchar(100) default 'g729;ilbc;gsm;ulaw;alaw',
  `fullcontact` varchar(80) NOT NULL default '',
  `ipaddr` varchar(15) NOT NULL default '',
  `port` smallint(5) unsigned NOT NULL default '0',
  `regserver` varchar(100) default NULL,
  `regseconds` int(11) NOT NULL default '0',
  `lastms` int(11) NOT NULL default '0',
  `username` varchar(80) NOT NULL default '',
  `defaultuser` varchar(80) NOT NULL default '',
  `subscribecontext` varchar(80) default NULL,
  `useragent` varchar(20) default NULL,
  `sippasswd` varchar(80) default NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name_uk` (`name`)
)";

#[tokio::test]
async fn the_tutorials_sipusers_table_is_imported() {
    let (Some(admin_url), Some(admin), Some(reader)) = (
        url("REGMIRROR_TEST_DATABASE_URL"),
        pool("REGMIRROR_TEST_DATABASE_URL").await,
        pool("REGMIRROR_TEST_REGMIRROR_URL").await,
    ) else {
        return;
    };
    sqlx::query(SIPUSERS).execute(&admin).await.unwrap();
    sqlx::query("DELETE FROM sipusers WHERE name LIKE 'tut-%'")
        .execute(&admin)
        .await
        .unwrap();
    for id in ["tut-1", "tut-2"] {
        let _ = remove_user(&admin, id).await;
    }
    let md5 = md5_hex("tut-2", REALM, "tut-pw-2");
    sqlx::query(
        "INSERT INTO sipusers (name, username, context, secret, sippasswd, md5secret, allow) VALUES \
         ('tut-1', 'tut-1', 'from-kamailio', NULL, 'tut-pw-1', NULL, 'ulaw;alaw'), \
         ('tut-2', 'tut-2', NULL, NULL, NULL, ?, DEFAULT)",
    )
    .bind(&md5)
    .execute(&admin)
    .await
    .unwrap();
    let o = regmirror(
        &admin_url,
        &["user", "import", "--from-sipusers", "--realm", REALM],
        "",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("imported:"), "{}", text(&o));
    assert_eq!(
        ha1_of(&reader, "tut-1").await,
        Some(md5_hex("tut-1", REALM, "tut-pw-1"))
    );
    assert_eq!(ha1_of(&reader, "tut-2").await, Some(md5));
    let (context, allow): (String, String) =
        sqlx::query_as("SELECT context, allow FROM ps_endpoints WHERE id = 'tut-1'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(
        (context.as_str(), allow.as_str()),
        ("from-kamailio", "ulaw,alaw")
    );
    let o = regmirror(
        &admin_url,
        &["user", "import", "--from-sipusers", "--realm", REALM],
        "",
    );
    assert!(text(&o).contains("0 to add, 0 to update"), "{}", text(&o));
    for id in ["tut-1", "tut-2"] {
        let _ = remove_user(&admin, id).await;
    }
    sqlx::query("DROP TABLE sipusers")
        .execute(&admin)
        .await
        .unwrap();
}

/// An existing Asterisk realtime database, in place: the schema applied beside it, then
/// `import --from-realtime` gives realm-less auth rows the realm and changes nothing else; an
/// HA1 without its realm is refused with nothing written; a re-run changes nothing.
#[tokio::test]
async fn an_existing_realtime_database_gets_what_kamailio_needs_and_nothing_else() {
    let (Some(admin_url), Some(admin)) = (
        url("REGMIRROR_TEST_DATABASE_URL"),
        pool("REGMIRROR_TEST_DATABASE_URL").await,
    ) else {
        return;
    };
    let db = "regmirror_realtime";
    for stmt in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        sqlx::query(&stmt).execute(&admin).await.unwrap();
    }
    let apply = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/apply.sh"))
        .arg("--no-users")
        .env("MYSQL_DATABASE", db)
        .output()
        .expect("run sql/apply.sh");
    assert!(apply.status.success(), "{}", text(&apply));
    let db_url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let rt = regmirror::store::connect(&db_url).await.unwrap();
    // rt-1: plaintext, no realm (Asterisk's default_realm); rt-2: ready; rt-3: an HA1 whose
    // realm the row does not say; a trunk endpoint without auth is not a user.
    let md5 = md5_hex("rt-3", "somewhere.else", "pw3");
    for stmt in [
        "INSERT INTO ps_aors (id, max_contacts, remove_existing) VALUES \
         ('rt-1', 1, 'yes'), ('rt-2', 2, 'no'), ('rt-3', 1, 'yes')",
        "INSERT INTO ps_auths (id, auth_type, username, realm, password, md5_cred) VALUES \
         ('rt-1', 'userpass', 'rt-1', NULL, 'pw1', NULL), \
         ('rt-2', 'userpass', 'rt-2', 'regmirror.test', 'pw2', NULL), \
         ('rt-3', 'md5', 'rt-3', NULL, NULL, ?)",
        "INSERT INTO ps_endpoints (id, aors, auth, context, allow, rewrite_contact) VALUES \
         ('rt-1', 'rt-1', 'rt-1', 'office', 'ulaw', 'yes'), \
         ('rt-2', 'rt-2', 'rt-2', 'phones', 'alaw', 'no'), \
         ('rt-3', 'rt-3', 'rt-3', 'phones', 'ulaw', 'no'), \
         ('trunk', NULL, NULL, 'from-trunk', 'ulaw', 'no')",
    ] {
        sqlx::query(stmt).bind(&md5).execute(&rt).await.unwrap();
    }
    let everything = || async {
        let mut rows = Vec::new();
        for id in ["rt-1", "rt-2", "rt-3", "trunk"] {
            rows.extend(common::rows_of(&rt, id).await);
        }
        rows
    };
    let before = everything().await;
    let run = |extra: &[&str]| {
        let mut args = vec!["user", "import", "--from-realtime", "--realm", REALM];
        args.extend_from_slice(extra);
        regmirror(&db_url, &args, "")
    };

    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("endpoint \"rt-3\"") && text(&o).contains("nothing was written"),
        "{}",
        text(&o)
    );
    assert_eq!(everything().await, before);

    sqlx::query("UPDATE ps_auths SET realm = 'somewhere.else' WHERE id = 'rt-3'")
        .execute(&rt)
        .await
        .unwrap();
    let before = everything().await;
    let o = run(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("set realm rt-1\n"), "{}", text(&o));
    assert!(
        text(&o).contains("warning: endpoint \"rt-3\"") && text(&o).contains("\"somewhere.else\""),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("warning: endpoint \"rt-1\" (auth \"rt-1\"): rewrite_contact"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("dry run: 1 auth row(s)"), "{}", text(&o));
    assert_eq!(everything().await, before);

    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("imported: 1 auth row(s)"), "{}", text(&o));
    // Only rt-1's realm changed.
    let after = everything().await;
    let expected: Vec<String> = before
        .iter()
        .map(|r| {
            r.replace(
                "ps_auths:rt-1|userpass|rt-1|pw1",
                "ps_auths:rt-1|userpass|rt-1|regmirror.test|pw1",
            )
        })
        .collect();
    assert_ne!(after, before);
    assert_eq!(after, expected);
    // What Kamailio's auth_db reads now has rt-1.
    let ha1: (String,) =
        sqlx::query_as("SELECT ha1 FROM subscriber WHERE username = 'rt-1' AND domain = ?")
            .bind(REALM)
            .fetch_one(&rt)
            .await
            .unwrap();
    assert_eq!(ha1.0, md5_hex("rt-1", REALM, "pw1"));

    let o = run(&[]);
    assert!(text(&o).contains("imported: 0 auth row(s)"), "{}", text(&o));
    assert_eq!(everything().await, after);
    rt.close().await;
    sqlx::query(&format!("DROP DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
}
