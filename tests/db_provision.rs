//! Provisioning against a real MariaDB (tests/with-mariadb.sh).
use test_support as common;

use common::{md5_hex, pool, rows_of, url};
use regmirror::core::digest::Secret;
use regmirror::store::credentials::{fetch_credential, fetch_credentials, live_aors, MAX_BATCH};
use regmirror::store::provision::{
    add_user, add_user_with, list_users, remove_user, remove_user_with, set_password,
    set_password_with, show_user, FailPoint, NewUser, Storage,
};
use regmirror::store::{connect, StoreError};

const REALM: &str = "regmirror.test";

#[tokio::test]
async fn add_passwd_remove_round_trip() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let Some(reader) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    let id = "prov-rt";
    let _ = remove_user(&prov, id).await;
    add_user(
        &prov,
        &NewUser::new(id, REALM, "first-pw", Storage::Plaintext),
    )
    .await
    .unwrap();

    let info = show_user(&prov, id).await.unwrap();
    assert!(info.complete);
    assert_eq!(info.realm.as_deref(), Some(REALM));
    assert_eq!(info.storage, Some(Storage::Plaintext));
    assert!(info.max_contacts.unwrap() >= 1);
    let rows = rows_of(&prov, id).await;
    assert!(
        rows.contains(&format!("ps_endpoints:{id}|{id}|{id}|phones|ulaw,alaw|no")),
        "{rows:?}"
    );
    assert!(list_users(&prov).await.unwrap().iter().any(|u| u.id == id));
    let cred = fetch_credential(&reader, id, REALM).await.unwrap().unwrap();
    assert_eq!(cred.secret, Secret::Password("first-pw".into()));
    assert!(
        !format!("{cred:?}").contains("first-pw"),
        "Debug leaks the secret"
    );

    set_password(&prov, id, "second-pw", Storage::HashedOnly)
        .await
        .unwrap();
    let cred = fetch_credential(&reader, id, REALM).await.unwrap().unwrap();
    assert_eq!(
        cred.secret,
        Secret::Ha1Md5 {
            realm: REALM.into(),
            ha1: md5_hex(id, REALM, "second-pw")
        }
    );
    assert_eq!(
        show_user(&prov, id).await.unwrap().storage,
        Some(Storage::HashedOnly)
    );

    set_password(&prov, id, "third-pw", Storage::Plaintext)
        .await
        .unwrap();
    let cred = fetch_credential(&reader, id, REALM).await.unwrap().unwrap();
    assert_eq!(cred.secret, Secret::Password("third-pw".into()));

    remove_user(&prov, id).await.unwrap();
    assert!(rows_of(&prov, id).await.is_empty());
    assert_eq!(fetch_credential(&reader, id, REALM).await.unwrap(), None);
}

/// The batched lookup (one statement per `MAX_BATCH` users) answers for each user exactly what
/// the single lookup answers: plaintext, HA1 only, unknown, a name the collation matches in
/// another case, the same user twice, across a batch boundary.
#[tokio::test]
async fn batched_lookup_answers_like_the_single_one() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let Some(reader) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    for (id, storage) in [
        ("batch-plain", Storage::Plaintext),
        ("batch-ha1", Storage::HashedOnly),
    ] {
        let _ = remove_user(&prov, id).await;
        add_user(&prov, &NewUser::new(id, REALM, "batch-pw", storage))
            .await
            .unwrap();
    }
    let mut users: Vec<String> = (0..MAX_BATCH + 40)
        .map(|i| format!("batch-unknown-{i}"))
        .collect();
    for (at, id) in [
        (0, "batch-plain"),
        (7, "batch-ha1"),
        (MAX_BATCH - 1, "BATCH-PLAIN"),
        (MAX_BATCH, "batch-ha1"),
        (MAX_BATCH + 3, "batch-plain"),
    ] {
        users.insert(at, id.to_string());
    }
    let batched = fetch_credentials(&reader, &users, REALM).await.unwrap();
    assert_eq!(batched.len(), users.len());
    for (user, got) in users.iter().zip(&batched) {
        let single = fetch_credential(&reader, user, REALM).await.unwrap();
        assert_eq!(got, &single, "{user}");
    }
    let known = batched.iter().filter(|c| c.is_some()).count();
    // Four known entries, and the other-case name where the collation is case-insensitive.
    assert!((4..=5).contains(&known), "{known} known");
    assert_eq!(
        batched[0].as_ref().unwrap().secret,
        Secret::Password("batch-pw".into())
    );
    assert_eq!(
        batched[7].as_ref().unwrap().secret,
        Secret::Ha1Md5 {
            realm: REALM.into(),
            ha1: md5_hex("batch-ha1", REALM, "batch-pw")
        }
    );
    assert!(fetch_credentials(&reader, &[], REALM)
        .await
        .unwrap()
        .is_empty());
    for id in ["batch-plain", "batch-ha1"] {
        remove_user(&prov, id).await.unwrap();
    }
}

#[tokio::test]
async fn duplicate_add_fails_clearly_and_changes_nothing() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let id = "prov-dup";
    let _ = remove_user(&prov, id).await;
    add_user(
        &prov,
        &NewUser::new(id, REALM, "original", Storage::Plaintext),
    )
    .await
    .unwrap();
    let before = rows_of(&prov, id).await;
    assert_eq!(before.len(), 3);
    let err = add_user(
        &prov,
        &NewUser::new(id, REALM, "other", Storage::HashedOnly),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(ref u) if u == id),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("user \"{id}\" already exists"));
    assert_eq!(rows_of(&prov, id).await, before);
    remove_user(&prov, id).await.unwrap();
}

#[tokio::test]
async fn injected_failures_leave_no_partial_rows() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let id = "prov-fail";
    let _ = remove_user(&prov, id).await;

    // add: the AOR and auth rows were written when the failure hits.
    let err = add_user_with(
        &prov,
        &NewUser::new(id, REALM, "pw", Storage::Plaintext),
        Some(FailPoint::AddAfterAuth),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Injected(FailPoint::AddAfterAuth)));
    assert!(
        rows_of(&prov, id).await.is_empty(),
        "rolled back add left rows"
    );

    add_user(&prov, &NewUser::new(id, REALM, "pw", Storage::Plaintext))
        .await
        .unwrap();
    let before = rows_of(&prov, id).await;

    // remove: the endpoint row was deleted when the failure hits.
    let err = remove_user_with(&prov, id, Some(FailPoint::RemoveAfterEndpoint))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Injected(_)));
    assert_eq!(rows_of(&prov, id).await, before);

    // passwd: the auth row was updated when the failure hits.
    let err = set_password_with(
        &prov,
        id,
        "new-pw",
        Storage::HashedOnly,
        Some(FailPoint::PasswdAfterUpdate),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Injected(_)));
    assert_eq!(rows_of(&prov, id).await, before);

    remove_user(&prov, id).await.unwrap();
}

#[tokio::test]
async fn unknown_users_and_bad_ids_are_clear_errors() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    for result in [
        remove_user(&prov, "prov-nobody").await,
        set_password(&prov, "prov-nobody", "pw", Storage::Plaintext).await,
        show_user(&prov, "prov-nobody").await.map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound(ref u) if u == "prov-nobody"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "user \"prov-nobody\" not found");
    }
    for bad in [
        "",
        "a b",
        "semi;colon",
        "comma,list",
        "at@sign",
        "-dash",
        "x".repeat(41).as_str(),
        "ümlaut",
    ] {
        let err = add_user(&prov, &NewUser::new(bad, REALM, "pw", Storage::Plaintext))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    field: "user id",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }
    let err = add_user(
        &prov,
        &NewUser::new("prov-ok", "bad realm", "pw", Storage::Plaintext),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { field: "realm", .. }));
    let err = add_user(
        &prov,
        &NewUser::new("prov-ok", REALM, "a;b", Storage::Plaintext),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Invalid {
            field: "password",
            ..
        }
    ));
    assert!(
        !err.to_string().contains("a;b"),
        "message shows the password"
    );
    let mut zero = NewUser::new("prov-ok", REALM, "pw", Storage::Plaintext);
    zero.max_contacts = 0;
    assert!(matches!(
        add_user(&prov, &zero).await.unwrap_err(),
        StoreError::Invalid { .. }
    ));
    assert!(rows_of(&prov, "prov-ok").await.is_empty());
}

#[tokio::test]
async fn unreachable_and_wrong_schema_are_told_apart() {
    let Some(admin_url) = url("REGMIRROR_TEST_DATABASE_URL") else {
        return;
    };
    let err = connect("mysql://nobody:x@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable(_)), "{err:?}");

    let admin = connect(&admin_url).await.unwrap();
    sqlx::query("CREATE DATABASE IF NOT EXISTS regmirror_empty")
        .execute(&admin)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    let empty = connect(&format!("{base}/regmirror_empty")).await.unwrap();
    let err = add_user(
        &empty,
        &NewUser::new("prov-x", REALM, "pw", Storage::Plaintext),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Schema(_)), "{err:?}");
    assert!(err.to_string().contains("sql/apply.sh"));
    let err = fetch_credential(&empty, "x", REALM).await.unwrap_err();
    assert!(matches!(err, StoreError::Schema(_)), "{err:?}");
}

#[tokio::test]
async fn live_aors_come_from_kamailio_location() {
    let Some(kamailio) = pool("REGMIRROR_TEST_KAMAILIO_URL").await else {
        return;
    };
    let Some(reader) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    sqlx::query("DELETE FROM location WHERE username LIKE 'loc-%'")
        .execute(&kamailio)
        .await
        .unwrap();
    let (now,): (sqlx::types::chrono::NaiveDateTime,) = sqlx::query_as("SELECT NOW()")
        .fetch_one(&kamailio)
        .await
        .unwrap();
    for (ruid, user, domain, secs) in [
        ("loc-1", "loc-a", None, 600),
        ("loc-2", "loc-a", None, 1800),
        ("loc-3", "loc-b", Some("regmirror.test"), 120),
        ("loc-4", "loc-c", None, -60),
    ] {
        sqlx::query(
            "INSERT INTO location (ruid, username, domain, contact, expires) VALUES (?, ?, ?, ?, ? + INTERVAL ? SECOND)",
        )
        .bind(ruid)
        .bind(user)
        .bind(domain)
        .bind(format!("sip:{user}@192.0.2.7"))
        .bind(now)
        .bind(secs)
        .execute(&kamailio)
        .await
        .unwrap();
    }
    let live: Vec<(String, u32)> = live_aors(&reader, now)
        .await
        .unwrap()
        .into_iter()
        .filter(|(aor, _)| aor.starts_with("loc-"))
        .collect();
    assert_eq!(
        live,
        vec![
            ("loc-a".to_string(), 1800),
            ("loc-b@regmirror.test".to_string(), 120)
        ]
    );
    sqlx::query("DELETE FROM location WHERE username LIKE 'loc-%'")
        .execute(&kamailio)
        .await
        .unwrap();
}
