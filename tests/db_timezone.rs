//! Time comparisons are in UTC whatever the database server's time zone (issue 15): Kamailio
//! (TZ=UTC) writes `location.expires` in UTC, and every session regmirror opens compares it with
//! a UTC `NOW()`. Its own test binary: it changes the server's global time zone for a moment.
use test_support as common;

use std::str::FromStr;

use regmirror::store::credentials::live_aors_db_now;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

async fn run(pool: &MySqlPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

#[tokio::test]
async fn live_bindings_are_read_in_utc_on_a_server_in_another_zone() {
    let Some(admin) = common::pool("REGMIRROR_TEST_DATABASE_URL").await else {
        return;
    };
    let Some(reader_url) = common::url("REGMIRROR_TEST_REGMIRROR_URL") else {
        return;
    };
    let (global,): (String,) = sqlx::query_as("SELECT @@global.time_zone")
        .fetch_one(&admin)
        .await
        .unwrap();
    run(&admin, "DELETE FROM location WHERE username = 'tz-live'").await;
    // What Kamailio running in UTC writes for a contact that expires in two minutes.
    run(
        &admin,
        "INSERT INTO location (ruid, username, contact, expires) VALUES \
         ('tz-1', 'tz-live', 'sip:tz-live@192.0.2.1', UTC_TIMESTAMP() + INTERVAL 120 SECOND)",
    )
    .await;
    // A server east of UTC: a session in its zone sees that contact as expired hours ago.
    run(&admin, "SET GLOBAL time_zone = '+05:00'").await;
    let server_zone = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(
            MySqlConnectOptions::from_str(&reader_url)
                .unwrap()
                .timezone(None),
        )
        .await
        .unwrap();
    let ours = regmirror::store::connect(&reader_url).await.unwrap();
    let in_server_zone = live_aors_db_now(&server_zone).await;
    let in_ours = live_aors_db_now(&ours).await;
    run(&admin, &format!("SET GLOBAL time_zone = '{global}'")).await;
    run(&admin, "DELETE FROM location WHERE username = 'tz-live'").await;

    let find = |live: Vec<(String, u32)>| live.into_iter().find(|(aor, _)| aor == "tz-live");
    assert_eq!(
        find(in_server_zone.unwrap()),
        None,
        "the control: in the server's zone the contact looks expired"
    );
    let (_, secs) = find(in_ours.unwrap()).expect("regmirror's session sees the contact live");
    assert!((115..=120).contains(&secs), "{secs} s left");
}
