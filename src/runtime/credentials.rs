//! Where the driver's credentials and Kamailio's live AORs come from: the shared MariaDB in
//! production ([`MySqlCredentials`]), memory in tests and the load generator
//! ([`InMemoryCredentials`]). The driver is generic over [`CredentialSource`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::MySqlPool;

use crate::core::mirror::Credential;
use crate::store::{self, StoreError};

/// Kamailio's `location` (the complete desired state) and the credentials of its users.
#[derive(Debug, Default, Clone)]
pub struct LiveSnapshot {
    /// Live AORs with what is left of their expiry.
    pub live: Vec<(String, Duration)>,
    pub credentials: HashMap<String, Credential>,
}

pub trait CredentialSource: Send + Sync + 'static {
    type Error: Display + Send + 'static;

    /// The credentials of `users`, in the order asked (`None`: no such user in the realm).
    fn credentials(
        &self,
        users: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Credential>>, Self::Error>> + Send;

    /// Everything live now, with its users' credentials (one read per reconciliation).
    fn live(&self) -> impl Future<Output = Result<LiveSnapshot, Self::Error>> + Send;
}

/// The shared database: `regmirror_credentials` and Kamailio's `location`.
pub struct MySqlCredentials {
    pub pool: MySqlPool,
    pub realm: String,
}

impl CredentialSource for MySqlCredentials {
    type Error = StoreError;

    async fn credentials(&self, users: &[String]) -> Result<Vec<Option<Credential>>, StoreError> {
        let found = store::credentials::fetch_credentials(&self.pool, users, &self.realm).await?;
        Ok(found.into_iter().map(|c| c.map(credential)).collect())
    }

    async fn live(&self) -> Result<LiveSnapshot, StoreError> {
        // Two statements on two connections at once: at 1,000,000 users 4 s and 12 s.
        let (live, creds) = tokio::try_join!(
            store::credentials::live_aors_db_now(&self.pool),
            store::credentials::live_credentials(&self.pool, &self.realm),
        )?;
        Ok(LiveSnapshot {
            live: live
                .into_iter()
                .map(|(a, s)| (a, Duration::from_secs(u64::from(s))))
                .collect(),
            credentials: creds
                .into_iter()
                .map(|c| (c.username.clone(), credential(c)))
                .collect(),
        })
    }
}

fn credential(c: store::credentials::StoredCredential) -> Credential {
    Credential {
        username: c.username,
        secret: c.secret,
    }
}

/// Users and live AORs held in memory: shared, so a test can change them while the driver runs.
#[derive(Clone, Default)]
pub struct InMemoryCredentials {
    state: Arc<Mutex<Users>>,
}

#[derive(Default)]
struct Users {
    credentials: HashMap<String, Credential>,
    live: HashMap<String, Duration>,
}

impl InMemoryCredentials {
    pub fn add_user(&self, credential: Credential) {
        if let Ok(mut s) = self.state.lock() {
            s.credentials
                .insert(credential.username.clone(), credential);
        }
    }

    /// Marks `user` live for `expires` (as Kamailio's `location` would), or not with `None`.
    pub fn set_live(&self, user: &str, expires: Option<Duration>) {
        if let Ok(mut s) = self.state.lock() {
            match expires {
                Some(e) => s.live.insert(user.to_string(), e),
                None => s.live.remove(user),
            };
        }
    }
}

/// Never fails: a poisoned lock reads as empty.
impl CredentialSource for InMemoryCredentials {
    type Error = Infallible;

    async fn credentials(&self, users: &[String]) -> Result<Vec<Option<Credential>>, Infallible> {
        let Ok(s) = self.state.lock() else {
            return Ok(vec![None; users.len()]);
        };
        Ok(users
            .iter()
            .map(|u| s.credentials.get(u).cloned())
            .collect())
    }

    async fn live(&self) -> Result<LiveSnapshot, Infallible> {
        let Ok(s) = self.state.lock() else {
            return Ok(LiveSnapshot::default());
        };
        Ok(LiveSnapshot {
            live: s.live.iter().map(|(u, e)| (u.clone(), *e)).collect(),
            credentials: s
                .live
                .keys()
                .filter_map(|u| Some((u.clone(), s.credentials.get(u)?.clone())))
                .collect(),
        })
    }
}
