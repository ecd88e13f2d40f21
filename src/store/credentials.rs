//! Reading what regmirror needs at run time: the credential to answer an
//! Asterisk challenge with, and the AORs Kamailio holds live in `location`.
use std::collections::HashMap;
use std::fmt;

use sqlx::mysql::MySqlPool;
use sqlx::types::chrono::NaiveDateTime;

use super::StoreError;
use crate::core::digest::Secret;

/// A user's credential as stored once for both tiers. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub username: String,
    pub realm: String,
    pub secret: Secret,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("secret", &self.secret)
            .finish()
    }
}

/// The credential of `username` in `realm`, from the `regmirror_credentials`
/// view: the plaintext password when stored (it answers any algorithm), else
/// the MD5 HA1 bound to `realm`. `None` when the user does not exist, has no
/// usable credential, or its endpoint is gone.
pub async fn fetch_credential(
    pool: &MySqlPool,
    username: &str,
    realm: &str,
) -> Result<Option<StoredCredential>, StoreError> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT `password`, `ha1` FROM `regmirror_credentials` WHERE `username` = ? AND `realm` = ? LIMIT 1")
            .bind(username)
            .bind(realm)
            .fetch_optional(pool)
            .await?;
    let Some((password, ha1)) = row else {
        return Ok(None);
    };
    Ok(credential_of(username, realm, password, ha1))
}

/// Most users [`fetch_credentials`] asks for in one statement.
pub const MAX_BATCH: usize = 256;

/// The credentials of several users at once (one statement per [`MAX_BATCH`] users): what
/// [`fetch_credential`] answers for each, in the order asked. Under a registration storm this
/// turns a point query per notification into one per batch on the database Kamailio waits on.
pub async fn fetch_credentials(
    pool: &MySqlPool,
    usernames: &[String],
    realm: &str,
) -> Result<Vec<Option<StoredCredential>>, StoreError> {
    let mut out = Vec::with_capacity(usernames.len());
    for chunk in usernames.chunks(MAX_BATCH) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT `username`, `password`, `ha1` FROM `regmirror_credentials` \
             WHERE `realm` = ? AND `username` IN ({marks})"
        );
        let mut q = sqlx::query_as::<_, (String, Option<String>, Option<String>)>(&sql).bind(realm);
        for u in chunk {
            q = q.bind(u);
        }
        let rows = q.fetch_all(pool).await?;
        // The first row per exact username, like `LIMIT 1` in the single lookup.
        let mut found: HashMap<&str, (Option<String>, Option<String>)> = HashMap::new();
        for (name, password, ha1) in &rows {
            found
                .entry(name.as_str())
                .or_insert_with(|| (password.clone(), ha1.clone()));
        }
        for u in chunk {
            match found.get(u.as_str()) {
                Some((p, h)) => out.push(credential_of(u, realm, p.clone(), h.clone())),
                // Not found under the exact name: the column's collation may still match it
                // (case, accents) as the single lookup would; ask the way it does.
                None if !rows.is_empty() => out.push(fetch_credential(pool, u, realm).await?),
                None => out.push(None),
            }
        }
    }
    Ok(out)
}

fn credential_of(
    username: &str,
    realm: &str,
    password: Option<String>,
    ha1: Option<String>,
) -> Option<StoredCredential> {
    let secret = match (password, ha1) {
        (Some(p), _) if !p.is_empty() => Secret::Password(p),
        (_, Some(h)) if is_md5_hex(&h) => Secret::Ha1Md5 {
            realm: realm.to_string(),
            ha1: h.to_ascii_lowercase(),
        },
        _ => return None,
    };
    Some(StoredCredential {
        username: username.to_string(),
        realm: realm.to_string(),
        secret,
    })
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The AOR of a `location` row: `username`, or `username@domain` when Kamailio stores a domain.
fn aor_of(user: String, domain: Option<String>) -> String {
    match domain {
        Some(d) if !d.is_empty() => format!("{user}@{d}"),
        _ => user,
    }
}

/// AORs with at least one contact in Kamailio's `location` that expires after
/// `now`, with the seconds until the last of them expires. `now` is in the
/// clock Kamailio writes `expires` with (its local time). An AOR is `username`,
/// or `username@domain` when Kamailio stores a domain (usrloc `use_domain`).
pub async fn live_aors(
    pool: &MySqlPool,
    now: NaiveDateTime,
) -> Result<Vec<(String, u32)>, StoreError> {
    let rows: Vec<(String, Option<String>, NaiveDateTime)> = sqlx::query_as(
        "SELECT `username`, `domain`, MAX(`expires`) FROM `location` WHERE `expires` > ? \
         GROUP BY `username`, `domain` ORDER BY `username`, `domain`",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, domain, expires)| {
            let aor = aor_of(user, domain);
            let secs = (expires - now).num_seconds().clamp(0, i64::from(u32::MAX));
            (aor, u32::try_from(secs).unwrap_or(u32::MAX))
        })
        .collect())
}

/// Like [`live_aors`], but the database computes `now` itself (`NOW()` in the same statement,
/// UTC in every session of ours: [`super::connect_options`]): no clock skew with regmirror's
/// host. Kamailio writes `location.expires` as a DATETIME in its local time, which must be UTC.
/// Returns `(aor, seconds until the last contact expires)`.
pub async fn live_aors_db_now(pool: &MySqlPool) -> Result<Vec<(String, u32)>, StoreError> {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT `username`, `domain`, TIMESTAMPDIFF(SECOND, NOW(), MAX(`expires`)) \
         FROM `location` WHERE `expires` > NOW() \
         GROUP BY `username`, `domain` ORDER BY `username`, `domain`",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, domain, secs)| {
            let aor = aor_of(user, domain);
            (aor, u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
        })
        .collect())
}

/// Credentials in `realm` of every user with a live contact in `location`, in one query (so a
/// reconciliation does not do one lookup per AOR). Users absent from the result have no usable
/// credential any more (removed from `ps_endpoints`/`ps_auths`). Each user once: the statement
/// gives one row per live contact and the duplicates are dropped here (`DISTINCT`'s temporary
/// table was half of the 38 s this took at 1,000,000 users); the view's HA1 (an MD5 per row)
/// is read only where no plaintext answers.
pub async fn live_credentials(
    pool: &MySqlPool,
    realm: &str,
) -> Result<Vec<StoredCredential>, StoreError> {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT c.`username`, c.`password`, CASE WHEN c.`password` IS NULL THEN c.`ha1` END \
         FROM `regmirror_credentials` c \
         JOIN `location` l ON l.`username` = c.`username` \
         WHERE l.`expires` > NOW() AND c.`realm` = ?",
    )
    .bind(realm)
    .fetch_all(pool)
    .await?;
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    Ok(rows
        .into_iter()
        .filter(|(username, _, _)| seen.insert(username.clone()))
        .filter_map(|(username, password, ha1)| credential_of(&username, realm, password, ha1))
        .collect())
}
