//! `regmirror user add|remove|passwd|list|show`: the endpoint, auth and AOR rows
//! of one PJSIP user, each command in one transaction so a failure leaves no
//! partial rows.
use std::fmt;

use md5::{Digest, Md5};
use sqlx::mysql::MySqlPool;

use super::StoreError;

/// Longest user id: `ps_auths.username` is VARCHAR(40) in Asterisk's schema.
pub const MAX_ID_LEN: usize = 40;
/// Longest plaintext: `ps_auths.password` is VARCHAR(80).
pub const MAX_PASSWORD_LEN: usize = 80;

/// Where a test makes a transaction fail, to prove that nothing is left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// `add`: after the AOR and auth rows, before the endpoint row.
    AddAfterAuth,
    /// `remove`: after the endpoint row is deleted.
    RemoveAfterEndpoint,
    /// `passwd`: after the auth row is updated, before commit.
    PasswdAfterUpdate,
}

/// How a credential is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `password` (plaintext; `auth_type=userpass`): answers any algorithm.
    Plaintext,
    /// `md5_cred` only (`auth_type=md5`): no plaintext anywhere, MD5 in one realm.
    HashedOnly,
}

/// A user to create. `Debug` hides the password.
#[derive(Clone)]
pub struct NewUser {
    pub id: String,
    pub realm: String,
    pub password: String,
    pub storage: Storage,
    /// Dialplan context for calls from this phone.
    pub context: String,
    /// `allow` codecs (after `disallow=all`), e.g. `ulaw,alaw`.
    pub codecs: String,
    /// AOR `max_contacts`, at least 1.
    pub max_contacts: u32,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("id", &self.id)
            .field("realm", &self.realm)
            .field("password", &"<redacted>")
            .field("storage", &self.storage)
            .field("context", &self.context)
            .field("codecs", &self.codecs)
            .field("max_contacts", &self.max_contacts)
            .finish()
    }
}

impl NewUser {
    /// A phone behind Kamailio with regmirror's defaults.
    pub fn new(id: &str, realm: &str, password: &str, storage: Storage) -> Self {
        NewUser {
            id: id.to_string(),
            realm: realm.to_string(),
            password: password.to_string(),
            storage,
            context: "phones".to_string(),
            codecs: "ulaw,alaw".to_string(),
            max_contacts: 1,
        }
    }
}

/// One provisioned user as `list` and `show` report it. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub id: String,
    pub username: Option<String>,
    pub realm: Option<String>,
    pub storage: Option<Storage>,
    pub context: Option<String>,
    pub codecs: Option<String>,
    pub max_contacts: Option<u32>,
    /// Whether the endpoint, auth and AOR rows all exist.
    pub complete: bool,
}

/// Checks a user id: 1..=40 of `A-Z a-z 0-9 . _ - +`, not starting with `-`.
/// These survive Asterisk (`,` splits lists, `;` is escaped), SIP URIs and a shell.
pub fn validate_id(id: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| StoreError::Invalid {
        field: "user id",
        reason: format!("{id:?}: {reason}"),
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(bad(&format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    if id.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Err(bad(&format!(
            "character {c:?} not allowed (use A-Z a-z 0-9 . _ - +)"
        )));
    }
    Ok(())
}

/// Checks a realm: 1..=255 characters, no whitespace, control, `:` `"` `;` `,`.
pub fn validate_realm(realm: &str) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::Invalid {
        field: "realm",
        reason,
    };
    if realm.is_empty() || realm.len() > 255 {
        return Err(bad(format!("{realm:?} must be 1 to 255 characters")));
    }
    if let Some(c) = realm
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '"' | ';' | ','))
    {
        return Err(bad(format!("{realm:?}: character {c:?} not allowed")));
    }
    Ok(())
}

/// Checks a password: 1..=80 characters, no control characters, no `;` (Asterisk
/// realtime escapes it) or `^` (its escape character). The message never shows it.
pub fn validate_password(password: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| StoreError::Invalid {
        field: "password",
        reason: reason.to_string(),
    };
    if password.is_empty() || password.chars().count() > MAX_PASSWORD_LEN {
        return Err(bad("must be 1 to 80 characters"));
    }
    if password
        .chars()
        .any(|c| c.is_control() || c == ';' || c == '^')
    {
        return Err(bad("control characters, ';' and '^' are not allowed"));
    }
    Ok(())
}

fn validate_new(user: &NewUser) -> Result<(), StoreError> {
    validate_password(&user.password)?;
    validate_profile(user)
}

/// Everything of a new user but its password.
pub(crate) fn validate_profile(user: &NewUser) -> Result<(), StoreError> {
    validate_id(&user.id)?;
    validate_realm(&user.realm)?;
    if user.max_contacts == 0 {
        return Err(StoreError::Invalid {
            field: "max contacts",
            reason: "must be at least 1 (0 refuses every registration)".into(),
        });
    }
    let plain = |field: &'static str, v: &str, max: usize| {
        if v.is_empty()
            || v.len() > max
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.,+".contains(c))
        {
            Err(StoreError::Invalid {
                field,
                reason: format!("{v:?}: 1 to {max} of A-Z a-z 0-9 _ - . , +"),
            })
        } else {
            Ok(())
        }
    };
    plain("context", &user.context, 40)?;
    plain("codecs", &user.codecs, 200)?;
    Ok(())
}

/// `MD5(username:realm:password)` in lowercase hex: `md5_cred` and Kamailio's HA1.
pub fn md5_ha1(username: &str, realm: &str, password: &str) -> String {
    let digest = Md5::digest(format!("{username}:{realm}:{password}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn check(fail: Option<FailPoint>, here: FailPoint) -> Result<(), StoreError> {
    if fail == Some(here) {
        Err(StoreError::Injected(here))
    } else {
        Ok(())
    }
}

/// The auth row's credential columns for `storage`: (auth_type, password, md5_cred).
pub(crate) fn credential_columns(
    username: &str,
    realm: &str,
    password: &str,
    storage: Storage,
) -> (&'static str, Option<String>, Option<String>) {
    match storage {
        Storage::Plaintext => ("userpass", Some(password.to_string()), None),
        Storage::HashedOnly => ("md5", None, Some(md5_ha1(username, realm, password))),
    }
}

/// Creates the AOR, auth and endpoint rows of `user` in one transaction.
pub async fn add_user(pool: &MySqlPool, user: &NewUser) -> Result<(), StoreError> {
    add_user_with(pool, user, None).await
}

/// [`add_user`] with a failure injected at `fail` (tests only).
#[doc(hidden)]
pub async fn add_user_with(
    pool: &MySqlPool,
    user: &NewUser,
    fail: Option<FailPoint>,
) -> Result<(), StoreError> {
    validate_new(user)?;
    let mut tx = pool.begin().await?;
    // A clear answer for the common case; UNIQUE(id) on each table settles a race.
    let taken: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM `ps_endpoints` WHERE `id` = ?) \
              + (SELECT COUNT(*) FROM `ps_aors` WHERE `id` = ?) \
              + (SELECT COUNT(*) FROM `ps_auths` WHERE `id` = ? OR (`username` = ? AND `realm` = ?))",
    )
    .bind(&user.id)
    .bind(&user.id)
    .bind(&user.id)
    .bind(&user.id)
    .bind(&user.realm)
    .fetch_one(&mut *tx)
    .await?;
    if taken > 0 {
        return Err(StoreError::Duplicate(user.id.clone()));
    }
    let dup = |e: sqlx::Error| {
        if StoreError::is_duplicate_key(&e) {
            StoreError::Duplicate(user.id.clone())
        } else {
            StoreError::from_sqlx(e)
        }
    };
    // remove_existing: a new binding replaces the oldest once max_contacts is reached.
    sqlx::query(
        "INSERT INTO `ps_aors` (`id`, `max_contacts`, `remove_existing`, `qualify_frequency`) VALUES (?, ?, 'yes', 0)",
    )
    .bind(&user.id)
    .bind(user.max_contacts)
    .execute(&mut *tx)
    .await
    .map_err(dup)?;
    let (auth_type, password, md5_cred) =
        credential_columns(&user.id, &user.realm, &user.password, user.storage);
    sqlx::query(
        "INSERT INTO `ps_auths` (`id`, `auth_type`, `username`, `realm`, `password`, `md5_cred`) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&user.id)
    .bind(auth_type)
    .bind(&user.id)
    .bind(&user.realm)
    .bind(password)
    .bind(md5_cred)
    .execute(&mut *tx)
    .await
    .map_err(dup)?;
    check(fail, FailPoint::AddAfterAuth)?;
    // rewrite_contact=no keeps the Contact regmirror registers (Kamailio's address);
    // direct_media=no keeps Asterisk in the media path of phones it cannot reach; acl=regmirror
    // (a named ACL on every node) admits regmirror's addresses only.
    sqlx::query(
        "INSERT INTO `ps_endpoints` (`id`, `aors`, `auth`, `context`, `disallow`, `allow`, `direct_media`, \
         `rewrite_contact`, `rtp_symmetric`, `force_rport`, `dtmf_mode`, `identify_by`, `acl`) \
         VALUES (?, ?, ?, ?, 'all', ?, 'no', 'no', 'yes', 'no', 'rfc4733', 'username', 'regmirror')",
    )
    .bind(&user.id)
    .bind(&user.id)
    .bind(&user.id)
    .bind(&user.context)
    .bind(&user.codecs)
    .execute(&mut *tx)
    .await
    .map_err(dup)?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the endpoint, auth and AOR rows of `id` in one transaction.
pub async fn remove_user(pool: &MySqlPool, id: &str) -> Result<(), StoreError> {
    remove_user_with(pool, id, None).await
}

/// [`remove_user`] with a failure injected at `fail` (tests only).
#[doc(hidden)]
pub async fn remove_user_with(
    pool: &MySqlPool,
    id: &str,
    fail: Option<FailPoint>,
) -> Result<(), StoreError> {
    validate_id(id)?;
    let mut tx = pool.begin().await?;
    let mut removed = sqlx::query("DELETE FROM `ps_endpoints` WHERE `id` = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    check(fail, FailPoint::RemoveAfterEndpoint)?;
    for table in ["ps_auths", "ps_aors"] {
        removed += sqlx::query(&format!("DELETE FROM `{table}` WHERE `id` = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    if removed == 0 {
        return Err(StoreError::NotFound(id.to_string()));
    }
    tx.commit().await?;
    Ok(())
}

/// Replaces the credential of `id` (in its stored realm), as `storage`.
pub async fn set_password(
    pool: &MySqlPool,
    id: &str,
    password: &str,
    storage: Storage,
) -> Result<(), StoreError> {
    set_password_with(pool, id, password, storage, None).await
}

/// [`set_password`] with a failure injected at `fail` (tests only).
#[doc(hidden)]
pub async fn set_password_with(
    pool: &MySqlPool,
    id: &str,
    password: &str,
    storage: Storage,
    fail: Option<FailPoint>,
) -> Result<(), StoreError> {
    validate_id(id)?;
    validate_password(password)?;
    let mut tx = pool.begin().await?;
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT `username`, `realm` FROM `ps_auths` WHERE `id` = ? FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((username, realm)) = row else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    let username = username.unwrap_or_else(|| id.to_string());
    let Some(realm) = realm.filter(|r| !r.is_empty()) else {
        return Err(StoreError::Invalid {
            field: "realm",
            reason: format!("auth {id:?} has no realm; an HA1 needs one (see the one-realm rule)"),
        });
    };
    let (auth_type, plain, md5_cred) = credential_columns(&username, &realm, password, storage);
    sqlx::query("UPDATE `ps_auths` SET `auth_type` = ?, `password` = ?, `md5_cred` = ?, `password_digest` = NULL WHERE `id` = ?")
        .bind(auth_type)
        .bind(plain)
        .bind(md5_cred)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    check(fail, FailPoint::PasswdAfterUpdate)?;
    tx.commit().await?;
    Ok(())
}

type InfoRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
);

const INFO_SELECT: &str = "SELECT ids.`id`, a.`username`, a.`realm`, CAST(a.`auth_type` AS CHAR), e.`context`, e.`allow`, \
       CAST(o.`max_contacts` AS SIGNED), \
       CAST((e.`id` IS NOT NULL AND a.`id` IS NOT NULL AND o.`id` IS NOT NULL) AS SIGNED) \
     FROM (SELECT `id` FROM `ps_endpoints` UNION SELECT `id` FROM `ps_auths` UNION SELECT `id` FROM `ps_aors`) ids \
     LEFT JOIN `ps_endpoints` e ON e.`id` = ids.`id` \
     LEFT JOIN `ps_auths` a ON a.`id` = ids.`id` \
     LEFT JOIN `ps_aors` o ON o.`id` = ids.`id`";

fn info(row: InfoRow) -> UserInfo {
    let (id, username, realm, auth_type, context, codecs, max_contacts, complete) = row;
    let storage = match auth_type.as_deref() {
        Some("md5") => Some(Storage::HashedOnly),
        Some(_) => Some(Storage::Plaintext),
        None if username.is_some() => Some(Storage::Plaintext),
        None => None,
    };
    UserInfo {
        id,
        username,
        realm,
        storage,
        context,
        codecs,
        max_contacts: max_contacts.and_then(|m| u32::try_from(m).ok()),
        complete: complete != 0,
    }
}

/// Every user id that has an endpoint, auth or AOR row, sorted.
pub async fn list_users(pool: &MySqlPool) -> Result<Vec<UserInfo>, StoreError> {
    let rows: Vec<InfoRow> = sqlx::query_as(&format!("{INFO_SELECT} ORDER BY ids.`id`"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(info).collect())
}

/// One user's rows.
pub async fn show_user(pool: &MySqlPool, id: &str) -> Result<UserInfo, StoreError> {
    validate_id(id)?;
    let row: Option<InfoRow> = sqlx::query_as(&format!("{INFO_SELECT} WHERE ids.`id` = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(info)
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// Live contacts of `id` in Kamailio's `location` (`None` when this database
/// user may not read `location`).
pub async fn live_contacts(pool: &MySqlPool, id: &str) -> Result<Option<i64>, StoreError> {
    let count: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT COUNT(*) FROM `location` WHERE `username` = ? AND `expires` > NOW()",
    )
    .bind(id)
    .fetch_one(pool)
    .await;
    match count {
        Ok(n) => Ok(Some(n)),
        Err(e) => match StoreError::from_sqlx(e) {
            StoreError::Denied(_) | StoreError::Schema(_) => Ok(None),
            other => Err(other),
        },
    }
}
