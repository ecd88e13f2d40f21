//! sqlx stores over the shared schema in `sql/`: credentials and Kamailio's
//! `location` (read by the runtime), provisioning of PJSIP users (written by
//! `regmirror user`). Every statement uses bound parameters.
pub mod credentials;
pub mod farm;
pub mod import;
pub mod provision;

use std::time::Duration;

use std::str::FromStr;

use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
};
use sqlx::Connection;

/// Why a store operation failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad input (user id, realm, password, URL).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// `user add` for an id or username@realm that exists.
    #[error("user {0:?} already exists")]
    Duplicate(String),
    /// The user is not provisioned.
    #[error("user {0:?} not found")]
    NotFound(String),
    /// No connection to the database (refused, timed out, closed, bad credentials).
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// A table, view or column regmirror needs is missing.
    #[error("database schema is not regmirror's ({0}); apply sql/apply.sh to this database")]
    Schema(String),
    /// The database user lacks a privilege this operation needs.
    #[error("permission denied: {0}")]
    Denied(String),
    /// A failure injected by a test between two statements of a transaction.
    #[error("injected failure at {0:?}")]
    Injected(provision::FailPoint),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// Classifies a sqlx error. Messages come from the server or the driver,
    /// never from bound values, so they carry no secret.
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unreachable(err.to_string()),
            sqlx::Error::Configuration(e) => StoreError::Invalid {
                field: "database URL",
                reason: e.to_string(),
            },
            sqlx::Error::ColumnNotFound(c) => StoreError::Schema(format!("column {c} missing")),
            sqlx::Error::Database(db) => {
                let number = db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .map(|e| e.number());
                let msg = db.message().to_string();
                match number {
                    // ER_NO_SUCH_TABLE, ER_BAD_FIELD_ERROR, ER_BAD_DB_ERROR, ER_VIEW_INVALID
                    Some(1146) | Some(1054) | Some(1049) | Some(1356) => StoreError::Schema(msg),
                    // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR: cannot log in at all
                    Some(1045) | Some(1044) => StoreError::Unreachable(msg),
                    // ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR
                    Some(1142) | Some(1143) => StoreError::Denied(msg),
                    _ => StoreError::Database(msg),
                }
            }
            _ => StoreError::Database(err.to_string()),
        }
    }

    /// Whether this is a MySQL duplicate-key error (ER_DUP_ENTRY).
    pub(crate) fn is_duplicate_key(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db)
            if db.try_downcast_ref::<MySqlDatabaseError>().map(|e| e.number()) == Some(1062))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from_sqlx(err)
    }
}

/// Connection options for `url` (`mysql://user:pass@host:port/db`), every session in UTC:
/// `NOW()` in regmirror's queries is then UTC whatever the server's time zone, and Kamailio
/// (which writes `location.expires` in its process's local time) runs with TZ=UTC.
pub fn connect_options(url: &str) -> Result<MySqlConnectOptions, StoreError> {
    MySqlConnectOptions::from_str(url)
        .map(|o| o.timezone(Some("+00:00".to_string())))
        .map_err(|e| StoreError::Invalid {
            field: "database URL",
            reason: e.to_string(),
        })
}

/// Opens a small pool on `url` and checks that the server answers. Fails fast (5 s) when it
/// does not.
pub async fn connect(url: &str) -> Result<MySqlPool, StoreError> {
    let options = connect_options(url)?;
    let target = format!("{}:{}", options.get_host(), options.get_port());
    // One direct connection first: a pool only says "timed out", this says why.
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options))
        .await
        .map_err(|_| {
            StoreError::Unreachable(format!("{target}: no answer within {CONNECT_TIMEOUT:?}"))
        })?;
    match probe {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(e) => {
            return Err(match StoreError::from_sqlx(e) {
                StoreError::Unreachable(m) => StoreError::Unreachable(format!("{target}: {m}")),
                other => other,
            })
        }
    }
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(StoreError::from_sqlx)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
