//! `regmirror user import | export`: many users at once. An import is planned first (every row
//! checked, each user compared with what the database holds: add, update or unchanged), then
//! written in one transaction of multi-row statements, so a bad row or a failure writes
//! nothing and a re-run of the same input writes nothing either.
use std::collections::HashMap;

use sqlx::mysql::{MySql, MySqlPool};
use sqlx::QueryBuilder;

use super::provision::{credential_columns, validate_password, validate_profile, NewUser, Storage};
use super::StoreError;

/// Users per statement (MariaDB's placeholders and packet size stay far from their limits).
pub const BATCH: usize = 1000;

/// One user to import, from line `line` of its source.
#[derive(Clone, Debug)]
pub struct ImportUser {
    pub line: usize,
    /// `password` is empty when `ha1` is given.
    pub user: NewUser,
    /// MD5(user:realm:password), stored as `md5_cred`.
    pub ha1: Option<String>,
}

impl ImportUser {
    /// The auth row's (auth_type, password, md5_cred).
    fn credential(&self) -> (&'static str, Option<String>, Option<String>) {
        match &self.ha1 {
            Some(h) => ("md5", None, Some(h.to_ascii_lowercase())),
            None => credential_columns(
                &self.user.id,
                &self.user.realm,
                &self.user.password,
                self.user.storage,
            ),
        }
    }

    /// A clear error for this row, if it has one.
    pub fn check(&self) -> Result<(), StoreError> {
        validate_profile(&self.user)?;
        match &self.ha1 {
            Some(h) if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Err(StoreError::Invalid {
                    field: "ha1",
                    reason: "must be 32 hex digits (MD5 of user:realm:password)".into(),
                })
            }
            Some(_) => Ok(()),
            None => validate_password(&self.user.password),
        }
    }
}

/// What an import does.
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub add: Vec<ImportUser>,
    pub update: Vec<ImportUser>,
    pub unchanged: usize,
}

/// What the database holds of one user.
#[derive(sqlx::FromRow)]
struct Held {
    id: String,
    auth_type: Option<String>,
    password: Option<String>,
    md5_cred: Option<String>,
    realm: Option<String>,
    context: Option<String>,
    allow: Option<String>,
    aors: i64,
}

impl Held {
    /// Whether `u` would change nothing.
    fn same_as(&self, u: &ImportUser) -> bool {
        let (auth_type, password, md5_cred) = u.credential();
        self.auth_type.as_deref() == Some(auth_type)
            && self.password == password
            && self.md5_cred.as_deref().map(str::to_ascii_lowercase) == md5_cred
            && self.realm.as_deref() == Some(u.user.realm.as_str())
            && self.context.as_deref() == Some(u.user.context.as_str())
            && self.allow.as_deref() == Some(u.user.codecs.as_str())
            && self.aors > 0
    }
}

/// Compares `users` (checked, distinct ids) with the database.
pub async fn plan_import(
    pool: &MySqlPool,
    users: Vec<ImportUser>,
) -> Result<ImportPlan, StoreError> {
    let mut held: HashMap<String, Held> = HashMap::new();
    for chunk in users.chunks(BATCH) {
        // A user with an endpoint or AOR but no auth row is planned as an add: the writes
        // complete it.
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT a.id, a.auth_type, a.password, a.md5_cred, a.realm, e.context, e.allow, \
             (SELECT COUNT(*) FROM ps_aors o WHERE o.id = a.id) AS aors \
             FROM ps_auths a LEFT JOIN ps_endpoints e ON e.id = a.id WHERE a.id IN (",
        );
        let mut ids = q.separated(", ");
        for u in chunk {
            ids.push_bind(&u.user.id);
        }
        q.push(")");
        let rows: Vec<Held> = q.build_query_as().fetch_all(pool).await?;
        held.extend(rows.into_iter().map(|h| (h.id.clone(), h)));
    }
    let mut plan = ImportPlan::default();
    for u in users {
        match held.get(&u.user.id) {
            None => plan.add.push(u),
            Some(h) if h.same_as(&u) => plan.unchanged += 1,
            Some(_) => plan.update.push(u),
        }
    }
    Ok(plan)
}

/// Writes the plan's adds and updates in one transaction; `progress` is told how many users
/// are written after each batch.
pub async fn apply_import(
    pool: &MySqlPool,
    plan: &ImportPlan,
    mut progress: impl FnMut(usize),
) -> Result<(), StoreError> {
    let users: Vec<&ImportUser> = plan.add.iter().chain(&plan.update).collect();
    let mut tx = pool.begin().await?;
    let mut done = 0;
    for chunk in users.chunks(BATCH) {
        // An existing AOR keeps its settings (max_contacts may have been raised by hand).
        let mut aors: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) ",
        );
        aors.push_values(chunk, |mut b, u| {
            b.push_bind(&u.user.id)
                .push_bind(u.user.max_contacts)
                .push("'yes'")
                .push("0");
        });
        aors.push(" ON DUPLICATE KEY UPDATE id = id");
        aors.build().execute(&mut *tx).await?;

        let mut auths: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO ps_auths (id, auth_type, username, realm, password, md5_cred) ",
        );
        auths.push_values(chunk, |mut b, u| {
            let (auth_type, password, md5_cred) = u.credential();
            b.push_bind(&u.user.id)
                .push_bind(auth_type)
                .push_bind(&u.user.id)
                .push_bind(&u.user.realm)
                .push_bind(password)
                .push_bind(md5_cred);
        });
        auths.push(
            " ON DUPLICATE KEY UPDATE auth_type = VALUES(auth_type), username = VALUES(username), \
             realm = VALUES(realm), password = VALUES(password), md5_cred = VALUES(md5_cred)",
        );
        auths.build().execute(&mut *tx).await?;

        // As `user add` writes them (provision.rs says why each column is so).
        let mut endpoints: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, direct_media, \
             rewrite_contact, rtp_symmetric, force_rport, dtmf_mode, identify_by, acl) ",
        );
        endpoints.push_values(chunk, |mut b, u| {
            b.push_bind(&u.user.id)
                .push_bind(&u.user.id)
                .push_bind(&u.user.id)
                .push_bind(&u.user.context)
                .push("'all'")
                .push_bind(&u.user.codecs)
                .push("'no'")
                .push("'no'")
                .push("'yes'")
                .push("'no'")
                .push("'rfc4733'")
                .push("'username'")
                .push("'regmirror'");
        });
        endpoints.push(" ON DUPLICATE KEY UPDATE context = VALUES(context), allow = VALUES(allow)");
        endpoints.build().execute(&mut *tx).await?;
        done += chunk.len();
        progress(done);
    }
    tx.commit().await?;
    Ok(())
}

/// One exported user: id, plaintext password or HA1, realm, context, codecs.
pub type ExportRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Every user with an auth row, sorted by id: what `import` takes back.
pub async fn export_users(pool: &MySqlPool) -> Result<Vec<ExportRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT a.id, a.password, a.md5_cred, a.realm, e.context, e.allow \
         FROM ps_auths a LEFT JOIN ps_endpoints e ON e.id = a.id ORDER BY a.id",
    )
    .fetch_all(pool)
    .await?)
}

/// The users of the chan_sip realtime table `sipusers` (Kamailio's Asterisk realtime tutorial):
/// name, then the plaintext password (`secret`, else the tutorial's `sippasswd`) or
/// `md5secret`, context and allow.
pub async fn sipusers(
    pool: &MySqlPool,
) -> Result<
    Vec<(
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    )>,
    StoreError,
> {
    Ok(sqlx::query_as(
        "SELECT name, COALESCE(NULLIF(secret, ''), NULLIF(sippasswd, '')), NULLIF(md5secret, ''), \
         NULLIF(context, ''), NULLIF(allow, '') FROM sipusers ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

impl ImportUser {
    /// A user from its fields; `secret` is (password, ha1), one of them set.
    pub fn new(
        line: usize,
        id: &str,
        realm: &str,
        password: Option<String>,
        ha1: Option<String>,
        context: Option<String>,
        codecs: Option<String>,
    ) -> ImportUser {
        let storage = if ha1.is_some() {
            Storage::HashedOnly
        } else {
            Storage::Plaintext
        };
        let mut user = NewUser::new(id, realm, &password.unwrap_or_default(), storage);
        if let Some(c) = context {
            user.context = c;
        }
        if let Some(c) = codecs {
            user.codecs = c;
        }
        ImportUser { line, user, ha1 }
    }
}

/// One user of an existing Asterisk realtime database: an endpoint, the auth row it names and
/// the AOR named like the auth's username (the one regmirror registers).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RealtimeUser {
    pub endpoint: String,
    pub auth: String,
    pub username: Option<String>,
    pub realm: Option<String>,
    pub auth_type: Option<String>,
    /// A plaintext password is stored.
    pub plaintext: i64,
    /// An MD5 HA1 is stored (`md5_cred` or an `MD5:` `password_digest`).
    pub hashed: i64,
    /// The AOR's `max_contacts`; none: no AOR of that name.
    pub max_contacts: Option<i64>,
    pub rewrite_contact: Option<String>,
}

/// What `import --from-realtime` does to a realtime database: the auth rows to give the realm
/// Kamailio challenges with; the rows it cannot use (errors: nothing is written) and what it
/// leaves alone but an operator should know (warnings).
#[derive(Debug, Default, PartialEq)]
pub struct RealtimePlan {
    pub set_realm: Vec<String>,
    pub ready: usize,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Every endpoint that names an auth row, by endpoint id.
pub async fn realtime_users(pool: &MySqlPool) -> Result<Vec<RealtimeUser>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT e.id AS endpoint, a.id AS auth, a.username, a.realm, a.auth_type, \
         CAST(COALESCE(a.password, '') <> '' AS SIGNED) AS plaintext, \
         CAST(COALESCE(a.md5_cred, '') <> '' OR UPPER(COALESCE(a.password_digest, '')) \
         LIKE 'MD5:%' AS SIGNED) AS hashed, \
         o.max_contacts, CAST(e.rewrite_contact AS CHAR) AS rewrite_contact \
         FROM ps_endpoints e JOIN ps_auths a ON a.id = e.auth \
         LEFT JOIN ps_aors o ON o.id = a.username ORDER BY e.id",
    )
    .fetch_all(pool)
    .await?)
}

/// Plans the import of an existing realtime database in `realm`: only a missing realm is
/// written (what Kamailio's `subscriber` view needs), and only where a plaintext password lets
/// the HA1 follow it; an HA1 without its realm cannot be placed.
pub fn plan_realtime(users: &[RealtimeUser], realm: &str) -> RealtimePlan {
    let mut plan = RealtimePlan::default();
    for u in users {
        let name = format!("endpoint {:?} (auth {:?})", u.endpoint, u.auth);
        let Some(username) = u.username.as_deref().filter(|n| !n.is_empty()) else {
            plan.errors.push(format!(
                "{name}: the auth row has no username, so Kamailio cannot authenticate it"
            ));
            continue;
        };
        let md5_only = u.auth_type.as_deref() == Some("md5") || u.plaintext == 0;
        match u.realm.as_deref().filter(|r| !r.is_empty()) {
            _ if u.plaintext == 0 && u.hashed == 0 => {
                plan.errors.push(format!("{name}: no password and no HA1"));
                continue;
            }
            None if md5_only => {
                plan.errors.push(format!(
                    "{name}: its HA1 is bound to a realm the row does not name: set \
                     ps_auths.realm to the realm it was computed for, or store the password"
                ));
                continue;
            }
            None => plan.set_realm.push(u.auth.clone()),
            Some(r) if r != realm => {
                plan.warnings.push(format!(
                    "{name}: realm {r:?}, not {realm:?}: Kamailio authenticates it only in {r:?}"
                ));
                plan.ready += 1;
            }
            Some(_) => plan.ready += 1,
        }
        match u.max_contacts {
            None => plan.warnings.push(format!(
                "{name}: no AOR named {username:?}, so the nodes cannot hold its contact"
            )),
            Some(n) if n < 1 => plan.warnings.push(format!(
                "{name}: AOR {username:?} has max_contacts {n}, so the nodes cannot hold its contact"
            )),
            Some(_) => {}
        }
        if matches!(
            u.rewrite_contact.as_deref(),
            Some("yes" | "true" | "on" | "1")
        ) {
            plan.warnings.push(format!(
                "{name}: rewrite_contact = yes points calls at regmirror's address instead of \
                 Kamailio's: set it to no"
            ));
        }
    }
    plan
}

/// Gives the planned auth rows `realm`, in one transaction of batched statements; a row that
/// got a realm meanwhile is left as it is.
pub async fn apply_realtime(
    pool: &MySqlPool,
    plan: &RealtimePlan,
    realm: &str,
    mut progress: impl FnMut(usize),
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let mut done = 0;
    for chunk in plan.set_realm.chunks(BATCH) {
        let mut q: QueryBuilder<MySql> = QueryBuilder::new("UPDATE ps_auths SET realm = ");
        q.push_bind(realm)
            .push(" WHERE (realm IS NULL OR realm = '') AND id IN (");
        let mut ids = q.separated(", ");
        for id in chunk {
            ids.push_bind(id);
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
        done += chunk.len();
        progress(done);
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, realm: Option<&str>, plaintext: bool, hashed: bool) -> RealtimeUser {
        RealtimeUser {
            endpoint: id.into(),
            auth: format!("{id}-auth"),
            username: Some(id.into()),
            realm: realm.map(Into::into),
            auth_type: Some(if plaintext { "userpass" } else { "md5" }.into()),
            plaintext: plaintext.into(),
            hashed: hashed.into(),
            max_contacts: Some(1),
            rewrite_contact: Some("no".into()),
        }
    }

    #[test]
    fn a_realtime_database_gets_only_the_realms_it_lacks() {
        let mut no_aor = user("u5", Some("example.com"), true, false);
        no_aor.max_contacts = None;
        no_aor.rewrite_contact = Some("yes".into());
        let mut nameless = user("u6", None, true, false);
        nameless.username = None;
        let users = [
            user("u1", None, true, false),
            user("u2", Some("example.com"), true, false),
            user("u3", None, false, true),
            user("u4", Some("other.com"), false, true),
            no_aor,
            nameless,
            user("u7", Some(""), true, true),
            user("u8", None, false, false),
        ];
        let plan = plan_realtime(&users, "example.com");
        assert_eq!(plan.set_realm, ["u1-auth", "u7-auth"]);
        assert_eq!(plan.ready, 3);
        assert_eq!(plan.errors.len(), 3, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("\"u3\"") && plan.errors[0].contains("HA1"));
        assert!(plan.errors[1].contains("\"u6\"") && plan.errors[1].contains("no username"));
        assert!(plan.errors[2].contains("\"u8\"") && plan.errors[2].contains("no password"));
        assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("\"other.com\""));
        assert!(plan.warnings[1].contains("no AOR"));
        assert!(plan.warnings[2].contains("rewrite_contact"));
    }
}
