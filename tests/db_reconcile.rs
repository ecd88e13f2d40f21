//! The reconciliation reads against a real MariaDB (tests/with-mariadb.sh): live AORs with the
//! database's own clock, and the credentials of live users in one query.
use test_support as common;

use common::pool;
use regmirror::core::digest::Secret;
use regmirror::store::credentials::{live_aors_db_now, live_credentials};
use regmirror::store::provision::{add_user, remove_user, NewUser, Storage};

const REALM: &str = "regmirror.test";

#[tokio::test]
async fn live_aors_and_credentials_follow_location_and_provisioning() {
    let Some(prov) = pool("REGMIRROR_TEST_PROVISIONER_URL").await else {
        return;
    };
    let Some(kam) = pool("REGMIRROR_TEST_KAMAILIO_URL").await else {
        return;
    };
    let Some(reader) = pool("REGMIRROR_TEST_REGMIRROR_URL").await else {
        return;
    };
    for id in ["rec-live", "rec-gone"] {
        let _ = remove_user(&prov, id).await;
        add_user(
            &prov,
            &NewUser::new(id, REALM, "pw-rec", Storage::Plaintext),
        )
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM location WHERE username LIKE 'rec-%'")
        .execute(&kam)
        .await
        .unwrap();
    // Two contacts for rec-live (the later one counts), an expired one, a removed user's.
    for (ruid, user, offset) in [
        ("rec-1", "rec-live", "INTERVAL 100 SECOND"),
        ("rec-2", "rec-live", "INTERVAL 300 SECOND"),
        ("rec-3", "rec-old", "INTERVAL -10 SECOND"),
        ("rec-4", "rec-gone", "INTERVAL 200 SECOND"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO location (ruid, username, contact, expires) VALUES (?, ?, ?, NOW() + {offset})"
        ))
        .bind(ruid)
        .bind(user)
        .bind(format!("sip:{user}@192.0.2.1"))
        .execute(&kam)
        .await
        .unwrap();
    }
    remove_user(&prov, "rec-gone").await.unwrap();

    let live = live_aors_db_now(&reader).await.unwrap();
    let mine: Vec<_> = live.iter().filter(|(a, _)| a.starts_with("rec-")).collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let (aor, secs) = mine.iter().find(|(a, _)| a == "rec-live").unwrap();
    assert_eq!(aor, "rec-live");
    assert!((295..=300).contains(secs), "{secs}");
    assert!(mine.iter().any(|(a, _)| a == "rec-gone"));

    let creds = live_credentials(&reader, REALM).await.unwrap();
    let mine: Vec<_> = creds
        .iter()
        .filter(|c| c.username.starts_with("rec-"))
        .collect();
    assert_eq!(mine.len(), 1, "the removed user has no credential");
    assert_eq!(mine[0].username, "rec-live");
    assert_eq!(mine[0].secret, Secret::Password("pw-rec".into()));
    assert!(live_credentials(&reader, "other.realm")
        .await
        .unwrap()
        .is_empty());

    sqlx::query("DELETE FROM location WHERE username LIKE 'rec-%'")
        .execute(&kam)
        .await
        .unwrap();
    let _ = remove_user(&prov, "rec-live").await;
}
