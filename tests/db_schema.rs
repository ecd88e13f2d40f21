//! The shared schema against a real MariaDB (tests/with-mariadb.sh).
use test_support as common;

use std::process::Command;

use common::{db_errno, md5_hex, pool, url};
use regmirror::store::credentials::fetch_credential;
use regmirror::store::provision::{add_user, remove_user, NewUser, Storage};
use sqlx::mysql::MySqlPool;
use sqlx::Row;

const REALM: &str = "regmirror.test";

fn apply(db: Option<&str>, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/apply.sh");
    let mut cmd = Command::new(script);
    cmd.args(args);
    if let Some(db) = db {
        cmd.env("MYSQL_DATABASE", db);
    }
    let out = cmd.output().expect("run sql/apply.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "apply.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every object's definition: tables, views, indexes, routines, grants, version rows.
async fn snapshot(pool: &MySqlPool) -> Vec<String> {
    let mut out = Vec::new();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR), CAST(table_type AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        tables.len() >= 20,
        "expected the whole schema, got {tables:?}"
    );
    for (name, kind) in tables {
        let row: (String, String) = if kind == "VIEW" {
            let r: (String, String, String, String) =
                sqlx::query_as(&format!("SHOW CREATE VIEW `{name}`"))
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (r.0, r.1)
        } else {
            sqlx::query_as(&format!("SHOW CREATE TABLE `{name}`"))
                .fetch_one(pool)
                .await
                .unwrap()
        };
        // AUTO_INCREMENT counters move with data, not with the schema.
        let ddl: String = row
            .1
            .split_whitespace()
            .filter(|w| !w.starts_with("AUTO_INCREMENT="))
            .collect::<Vec<_>>()
            .join(" ");
        out.push(format!("{}: {ddl}", row.0));
    }
    let routines: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(routine_name AS CHAR) FROM information_schema.routines WHERE routine_schema = DATABASE()",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    out.extend(routines.into_iter().map(|r| format!("routine {}", r.0)));
    for user in ["kamailio", "asterisk", "regmirror", "provisioner"] {
        let grants: Vec<(String,)> =
            sqlx::query_as(&format!("SHOW GRANTS FOR '{user}'@'127.0.0.1'"))
                .fetch_all(pool)
                .await
                .unwrap();
        let mut g: Vec<String> = grants.into_iter().map(|g| g.0).collect();
        g.sort();
        out.extend(g);
    }
    let versions: Vec<(String, u32)> =
        sqlx::query_as("SELECT table_name, table_version FROM version ORDER BY table_name")
            .fetch_all(pool)
            .await
            .unwrap();
    out.extend(
        versions
            .into_iter()
            .map(|(t, v)| format!("version {t}={v}")),
    );
    out
}

#[tokio::test]
async fn second_apply_changes_nothing() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let before = snapshot(&admin).await;
    let output = apply(None, &[]);
    assert!(
        !output.contains("added"),
        "second apply added something: {output}"
    );
    let after = snapshot(&admin).await;
    assert_eq!(before, after);
    assert!(before.iter().any(|l| l == "version subscriber=7"));
    assert!(before.iter().any(|l| l == "version location=9"));
    assert!(
        !before.iter().any(|l| l.starts_with("routine ")),
        "helpers left behind"
    );
}

#[tokio::test]
async fn applies_to_an_existing_asterisk_database_only_what_is_missing() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let db = "regmirror_legacy";
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    // An old alembic revision: ps_auths and ps_contacts as first created.
    let mut conn = admin.acquire().await.unwrap();
    for stmt in [
        format!("USE {db}"),
        "CREATE TABLE ps_auths (id VARCHAR(40) NOT NULL, auth_type ENUM('md5','userpass'), nonce_lifetime INTEGER, \
         md5_cred VARCHAR(40), password VARCHAR(80), realm VARCHAR(40), username VARCHAR(40), UNIQUE (id))".into(),
        "CREATE TABLE ps_contacts (id VARCHAR(40) NOT NULL, uri VARCHAR(40), expiration_time VARCHAR(40), \
         qualify_frequency INTEGER, UNIQUE (id))".into(),
        "INSERT INTO ps_auths (id, auth_type, username, realm, password) VALUES ('7001', 'userpass', '7001', 'regmirror.test', 'old7001')".into(),
    ] {
        sqlx::query(&stmt).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    let first = apply(Some(db), &["--no-users"]);
    assert!(
        first.contains("added column ps_auths.password_digest"),
        "{first}"
    );
    assert!(
        first.contains("added column ps_contacts.qualify_2xx_only"),
        "{first}"
    );
    assert!(
        !first.contains("added column ps_auths.password\n"),
        "{first}"
    );
    let second = apply(Some(db), &["--no-users"]);
    assert!(!second.contains("added"), "{second}");
    let kept: (String, Option<String>) = sqlx::query_as(&format!(
        "SELECT password, password_digest FROM {db}.ps_auths WHERE id = '7001'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(kept, ("old7001".to_string(), None));
    // Existing column types are left alone (alembic owns them).
    let ty: (String,) = sqlx::query_as(
        "SELECT CAST(column_type AS CHAR) FROM information_schema.columns \
         WHERE table_schema = 'regmirror_legacy' AND table_name = 'ps_auths' AND column_name = 'realm'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(ty.0, "varchar(40)");
    sqlx::query(&format!("DROP DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn view_gives_the_independently_computed_ha1() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let Some(kamailio) = pool("REGMIRROR_TEST_KAMAILIO_URL").await else {
        return;
    };
    let users = [
        ("view-plain", REALM, "secret-plain", Storage::Plaintext),
        ("view-hashed", REALM, "secret-hashed", Storage::HashedOnly),
        (
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            Storage::Plaintext,
        ),
    ];
    for (id, realm, pw, storage) in users {
        let _ = remove_user(&admin, id).await;
        add_user(&admin, &NewUser::new(id, realm, pw, storage))
            .await
            .unwrap();
    }
    for (id, realm, pw, storage) in users {
        let row: (String, Option<String>) =
            sqlx::query_as("SELECT ha1, ha1b FROM subscriber WHERE username = ? AND domain = ?")
                .bind(id)
                .bind(realm)
                .fetch_one(&kamailio)
                .await
                .unwrap();
        assert_eq!(row.0, md5_hex(id, realm, pw), "ha1 of {id}");
        match storage {
            Storage::Plaintext => {
                assert_eq!(row.1, Some(md5_hex(&format!("{id}@{realm}"), realm, pw)))
            }
            Storage::HashedOnly => assert_eq!(row.1, None),
        }
    }
    // RFC 2617 section 3.5: HA1 of Mufasa / testrealm@host.com / Circle Of Life.
    let (mufasa,): (String,) = sqlx::query_as(
        "SELECT ha1 FROM subscriber WHERE username = 'Mufasa' AND domain = 'testrealm@host.com'",
    )
    .fetch_one(&kamailio)
    .await
    .unwrap();
    assert_eq!(mufasa, "939e7578ed9e3c518a452acee763bce9");
    // The hashed-only user really has no plaintext anywhere.
    let (pw, cred): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT password, md5_cred FROM ps_auths WHERE id = 'view-hashed'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(pw, None);
    assert_eq!(cred, Some(md5_hex("view-hashed", REALM, "secret-hashed")));
    // The view never carries a plaintext column.
    let cols: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = 'subscriber'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    let cols: Vec<String> = cols.into_iter().map(|c| c.0).collect();
    assert_eq!(cols, ["auth_id", "username", "domain", "ha1", "ha1b"]);
}

#[tokio::test]
async fn view_lookup_uses_the_username_realm_index() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let rows = sqlx::query(
        "EXPLAIN SELECT ha1 FROM subscriber WHERE username = '1001' AND domain = 'regmirror.test'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    let keys: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.try_get::<Option<String>, _>("key").unwrap())
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.as_deref() == Some("regmirror_ps_auths_username_realm")),
        "plan keys: {keys:?}"
    );
}

#[tokio::test]
async fn removed_or_orphaned_auths_do_not_authenticate() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let _ = remove_user(&admin, "view-gone").await;
    add_user(
        &admin,
        &NewUser::new("view-gone", REALM, "pw-gone", Storage::Plaintext),
    )
    .await
    .unwrap();
    let count = |pool: MySqlPool| async move {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM subscriber WHERE username = 'view-gone'")
                .fetch_one(&pool)
                .await
                .unwrap();
        n
    };
    assert_eq!(count(admin.clone()).await, 1);
    // An auth left behind by a half-removed endpoint no longer authenticates.
    sqlx::query("DELETE FROM ps_endpoints WHERE id = 'view-gone'")
        .execute(&admin)
        .await
        .unwrap();
    assert_eq!(count(admin.clone()).await, 0);
    remove_user(&admin, "view-gone").await.unwrap();
    assert_eq!(count(admin.clone()).await, 0);
}

#[tokio::test]
async fn roles_have_least_privilege() {
    let Some(admin) = pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let Some(kamailio) = pool("REGMIRROR_TEST_KAMAILIO_URL").await else {
        return;
    };
    let Some(regmirror_db) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    let Some(asterisk) = pool("REGMIRROR_TEST_ASTERISK_URL").await else {
        return;
    };
    let _ = remove_user(&admin, "priv-user").await;
    add_user(
        &admin,
        &NewUser::new("priv-user", REALM, "pw-priv", Storage::Plaintext),
    )
    .await
    .unwrap();

    // kamailio: no plaintext, no ps_* writes; the view and location work.
    let err = sqlx::query("SELECT password FROM ps_auths")
        .fetch_all(&kamailio)
        .await
        .unwrap_err();
    assert_eq!(db_errno(&err), Some(1142), "{err}");
    for stmt in [
        "INSERT INTO ps_endpoints (id) VALUES ('intruder')",
        "INSERT INTO ps_auths (id, username, realm, password) VALUES ('intruder', 'intruder', 'regmirror.test', 'x')",
        "INSERT INTO ps_aors (id) VALUES ('intruder')",
        "UPDATE ps_auths SET password = 'x'",
        "DELETE FROM ps_endpoints",
    ] {
        let err = sqlx::query(stmt).execute(&kamailio).await.unwrap_err();
        assert_eq!(db_errno(&err), Some(1142), "{stmt}: {err}");
    }
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM subscriber WHERE username = 'priv-user'")
            .fetch_one(&kamailio)
            .await
            .unwrap();
    assert_eq!(n, 1);
    sqlx::query("INSERT INTO location (ruid, username, contact, expires) VALUES ('priv-ruid', 'priv-user', 'sip:priv-user@192.0.2.1', NOW() + INTERVAL 1 HOUR)")
        .execute(&kamailio)
        .await
        .unwrap();
    sqlx::query("DELETE FROM location WHERE ruid = 'priv-ruid'")
        .execute(&kamailio)
        .await
        .unwrap();

    // regmirror: reads its credential view, not ps_auths, writes nothing.
    let cred = fetch_credential(&regmirror_db, "priv-user", REALM)
        .await
        .unwrap();
    assert!(cred.is_some());
    let err = sqlx::query("SELECT password FROM ps_auths")
        .fetch_all(&regmirror_db)
        .await
        .unwrap_err();
    assert_eq!(db_errno(&err), Some(1142));
    let err = sqlx::query("DELETE FROM location")
        .execute(&regmirror_db)
        .await
        .unwrap_err();
    assert_eq!(db_errno(&err), Some(1142));

    // asterisk: reads ps_*, writes contacts, cannot change credentials.
    sqlx::query("SELECT * FROM ps_endpoints")
        .fetch_all(&asterisk)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ps_contacts (id, uri, endpoint, reg_server) VALUES ('priv-c', 'sip:x@192.0.2.1', 'priv-user', 'n1')")
        .execute(&asterisk)
        .await
        .unwrap();
    sqlx::query("DELETE FROM ps_contacts WHERE id = 'priv-c'")
        .execute(&asterisk)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE ps_auths SET password = 'x'")
        .execute(&asterisk)
        .await
        .unwrap_err();
    assert_eq!(db_errno(&err), Some(1142));
    remove_user(&admin, "priv-user").await.unwrap();
}

/// The farm list: the provisioner writes Kamailio's dispatcher rows, regmirror and Kamailio
/// only read them, and what is written reads back as the same node.
#[tokio::test]
async fn farm_list_rows_round_trip_and_only_the_provisioner_writes_them() {
    use regmirror::config::{attrs_of, destination_of, nodes_of_rows, NodeListConfig};
    use regmirror::store::farm::{check_writable, delete_farm_row, farm_rows, insert_farm_row};
    use regmirror::store::StoreError;
    let Some(provisioner) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let Some(kamailio) = pool("REGMIRROR_TEST_KAMAILIO_URL").await else {
        return;
    };
    let Some(regmirror_db) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    const SET: i32 = 77; // a set of its own: other tests' rows are not touched
    let address = "10.0.0.77:5080".parse().unwrap();
    let destination = destination_of(address, regmirror::config::TransportKind::Tcp);
    let attrs = attrs_of("ast77", Some("10.0.0.77:5038".parse().unwrap()), "kamailio");
    check_writable(&provisioner).await.unwrap();
    let id = insert_farm_row(&provisioner, SET, &destination, &attrs, "ast77")
        .await
        .unwrap();
    for reader in [&kamailio, &regmirror_db] {
        let rows = farm_rows(reader, SET).await.unwrap();
        let (nodes, unusable) = nodes_of_rows(&rows, &NodeListConfig::default());
        assert!(unusable.is_empty(), "{unusable:?}");
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            (nodes[0].name.as_str(), nodes[0].address),
            ("ast77", address)
        );
    }
    for reader in [&kamailio, &regmirror_db] {
        let err = check_writable(reader).await.unwrap_err();
        assert!(matches!(err, StoreError::Denied(_)), "{err}");
        let err = delete_farm_row(reader, SET, id).await.unwrap_err();
        assert!(matches!(err, StoreError::Denied(_)), "{err}");
    }
    assert!(delete_farm_row(&provisioner, SET, id).await.unwrap());
    assert!(!delete_farm_row(&provisioner, SET, id).await.unwrap());
    assert!(farm_rows(&regmirror_db, SET).await.unwrap().is_empty());
}

#[test]
fn url_helper_reads_the_environment() {
    // The helper returns exactly what the environment holds (an empty value counts as unset),
    // and under tests/with-mariadb.sh (REGMIRROR_REQUIRE_DB=1) it must hold a URL.
    let var = "REGMIRROR_TEST_DATABASE_URL";
    let want = std::env::var(var).ok().filter(|v| !v.is_empty());
    if std::env::var("REGMIRROR_REQUIRE_DB").as_deref() == Ok("1") {
        assert!(want.is_some(), "{var} unset under REGMIRROR_REQUIRE_DB=1");
    }
    assert_eq!(url(var), want);
}
