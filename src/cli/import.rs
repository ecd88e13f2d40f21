//! `regmirror user import | export`: many users at once, from CSV, from the chan_sip
//! `sipusers` table of Kamailio's Asterisk realtime tutorial or from an existing Asterisk
//! realtime database in place, back out as CSV. Every row is
//! checked before anything is written (each bad one named with its line), then the whole
//! import is one transaction of batched statements; a re-run of the same input writes nothing.
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::mysql::MySqlPool;

use crate::store::import::{
    apply_import, apply_realtime, export_users, plan_import, plan_realtime, realtime_users,
    sipusers, ImportUser,
};
use crate::store::StoreError;

/// Most bad rows printed before the count of the rest.
const SHOWN_ERRORS: usize = 20;

#[derive(Args)]
pub struct ImportArgs {
    /// CSV with a header line: `user`, `password` or `ha1`, and optionally `realm` (else
    /// --realm), `context`, `codecs`; `-` reads standard input.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present_any = ["from_sipusers", "from_realtime"]
    )]
    pub csv: Option<std::path::PathBuf>,
    /// The chan_sip realtime table `sipusers` in this database (name, secret or sippasswd or
    /// md5secret, context, allow).
    #[arg(long, conflicts_with_all = ["csv", "from_realtime"])]
    pub from_sipusers: bool,
    /// This database's own PJSIP realtime users, in place: gives auth rows without a realm
    /// --realm (what Kamailio's `subscriber` view needs) and changes nothing else; reports
    /// users Kamailio or the nodes cannot use.
    #[arg(long, conflicts_with_all = ["csv", "hashed_only"])]
    pub from_realtime: bool,
    /// The realm of rows that name none: the one Kamailio and Asterisk both challenge with.
    #[arg(long, env = "REGMIRROR_REALM")]
    pub realm: Option<String>,
    /// Store only MD5(user:realm:password) of rows that give a password.
    #[arg(long)]
    pub hashed_only: bool,
    /// Print what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The users of a CSV text (line numbers count the header as line 1).
pub fn users_of_csv(text: &[u8], realm: Option<&str>) -> Result<Vec<ImportUser>, StoreError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text);
    let header = reader
        .headers()
        .map_err(|e| invalid("csv", format!("header: {e}")))?
        .clone();
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let user_col = col("user").ok_or_else(|| invalid("csv", "the header has no `user` column"))?;
    let (pw, ha1, realm_col, ctx, codecs) = (
        col("password"),
        col("ha1"),
        col("realm"),
        col("context"),
        col("codecs"),
    );
    if pw.is_none() && ha1.is_none() {
        return Err(invalid(
            "csv",
            "the header has neither `password` nor `ha1`",
        ));
    }
    let mut users = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| invalid("csv", format!("line {line}: {e}")))?;
        let field = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let row_realm = field(realm_col).or_else(|| realm.map(str::to_string));
        users.push(ImportUser::new(
            line,
            record.get(user_col).unwrap_or(""),
            row_realm.as_deref().unwrap_or(""),
            field(pw),
            field(ha1),
            field(ctx),
            field(codecs),
        ));
    }
    Ok(users)
}

/// Each row's error, `line N: ...`; and a user given twice is one.
fn row_errors(users: &[ImportUser]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    for u in users {
        if let Err(e) = u.check() {
            errors.push(format!("line {}: user {:?}: {e}", u.line, u.user.id));
        } else if u.ha1.is_some() && !u.user.password.is_empty() {
            errors.push(format!(
                "line {}: user {:?}: give a password or an ha1, not both",
                u.line, u.user.id
            ));
        } else if !seen.insert(u.user.id.clone()) {
            errors.push(format!(
                "line {}: user {:?} appears twice",
                u.line, u.user.id
            ));
        }
    }
    errors
}

/// Prints each error (at most `SHOWN_ERRORS`, then a count) and refuses the import.
fn refuse(errors: &[String], rows: usize) -> Result<(), StoreError> {
    if errors.is_empty() {
        return Ok(());
    }
    for e in errors.iter().take(SHOWN_ERRORS) {
        eprintln!("regmirror user import: {e}");
    }
    if errors.len() > SHOWN_ERRORS {
        eprintln!(
            "regmirror user import: ... and {} more",
            errors.len() - SHOWN_ERRORS
        );
    }
    Err(invalid(
        "input",
        format!("{} bad row(s) of {rows}; nothing was written", errors.len()),
    ))
}

fn progress_bar(writes: usize, what: &str) -> ProgressBar {
    ProgressBar::new(writes as u64).with_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} ({{elapsed}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// `--from-realtime`: the database's own users, in place.
async fn import_realtime(pool: &MySqlPool, realm: &str, dry_run: bool) -> Result<(), StoreError> {
    crate::store::provision::validate_realm(realm)?;
    let users = realtime_users(pool).await?;
    let plan = plan_realtime(&users, realm);
    for w in &plan.warnings {
        eprintln!("regmirror user import: warning: {w}");
    }
    refuse(&plan.errors, users.len())?;
    let summary = format!(
        "{} auth row(s) to give realm {realm:?}, {} ready (of {} endpoint(s) with an auth)",
        plan.set_realm.len(),
        plan.ready,
        users.len()
    );
    if dry_run {
        for id in &plan.set_realm {
            println!("set realm {id}");
        }
        println!("dry run: {summary}; nothing was written");
        return Ok(());
    }
    let bar = progress_bar(plan.set_realm.len(), "auth rows written");
    apply_realtime(pool, &plan, realm, |done| bar.set_position(done as u64)).await?;
    bar.finish_and_clear();
    println!("imported: {summary}");
    Ok(())
}

pub async fn import(pool: &MySqlPool, args: ImportArgs) -> Result<(), StoreError> {
    let realm = args.realm.as_deref().filter(|r| !r.is_empty());
    if args.from_realtime {
        let realm = realm
            .ok_or_else(|| invalid("realm", "pass --realm or set REGMIRROR_REALM for realtime"))?;
        return import_realtime(pool, realm, args.dry_run).await;
    }
    let mut users = match &args.csv {
        Some(path) => users_of_csv(&read_input(path)?, realm)?,
        None => {
            let realm = realm.ok_or_else(|| {
                invalid("realm", "pass --realm or set REGMIRROR_REALM for sipusers")
            })?;
            sipusers(pool)
                .await?
                .into_iter()
                .enumerate()
                .map(|(i, (name, password, md5, context, allow))| {
                    // chan_sip separates codecs with `;` or `,`; PJSIP with `,`.
                    let codecs = allow.map(|a| a.replace(';', ","));
                    let ha1 = if password.is_some() { None } else { md5 };
                    ImportUser::new(i + 1, &name, realm, password, ha1, context, codecs)
                })
                .collect()
        }
    };
    if args.hashed_only {
        for u in users.iter_mut().filter(|u| u.ha1.is_none()) {
            u.user.storage = crate::store::provision::Storage::HashedOnly;
        }
    }
    refuse(&row_errors(&users), users.len())?;
    let total = users.len();
    let plan = plan_import(pool, users).await?;
    let summary = format!(
        "{} to add, {} to update, {} unchanged (of {total})",
        plan.add.len(),
        plan.update.len(),
        plan.unchanged
    );
    if args.dry_run {
        for u in &plan.add {
            println!("add {}", u.user.id);
        }
        for u in &plan.update {
            println!("update {}", u.user.id);
        }
        println!("dry run: {summary}; nothing was written");
        return Ok(());
    }
    let writes = plan.add.len() + plan.update.len();
    let bar = progress_bar(writes, "users written");
    apply_import(pool, &plan, |done| bar.set_position(done as u64)).await?;
    bar.finish_and_clear();
    println!("imported: {summary}");
    Ok(())
}

fn read_input(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut text = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut text).map(drop)
    } else {
        std::fs::read(path).map(|t| text = t)
    };
    read.map_err(|e| invalid("csv", format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
}

/// Every user as CSV on standard output, in the form `import --csv` takes back (secrets
/// included: keep the file as you keep the database).
pub async fn export(pool: &MySqlPool) -> Result<(), StoreError> {
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    let io = |e: csv::Error| invalid("output", e.to_string());
    out.write_record(["user", "password", "ha1", "realm", "context", "codecs"])
        .map_err(io)?;
    let rows = export_users(pool).await?;
    for (id, password, ha1, realm, context, codecs) in &rows {
        let ha1 = if password.is_some() {
            None
        } else {
            ha1.as_deref()
        };
        out.write_record([
            id.as_str(),
            password.as_deref().unwrap_or(""),
            ha1.unwrap_or(""),
            realm.as_deref().unwrap_or(""),
            context.as_deref().unwrap_or(""),
            codecs.as_deref().unwrap_or(""),
        ])
        .map_err(io)?;
    }
    out.flush().map_err(|e| invalid("output", e.to_string()))?;
    eprintln!("regmirror user export: {} user(s)", rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_carry_their_line_and_bad_rows_are_named() {
        let text = b"user,password,ha1,realm,context\n\
                     2001,pw-2001,,,phones\n\
                     2002,,0123456789abcdef0123456789abcdef,other.test,\n\
                     bad id,pw,,,\n\
                     2004,,,,\n\
                     2001,pw,,,\n\
                     2005,pw,0123456789abcdef0123456789abcdef,,\n";
        let users = users_of_csv(text, Some("regmirror.test")).unwrap();
        assert_eq!(users.len(), 6);
        assert_eq!(users[0].line, 2);
        assert_eq!(users[0].user.realm, "regmirror.test");
        assert_eq!(users[1].user.realm, "other.test");
        assert_eq!(
            users[1].ha1.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let errors = row_errors(&users);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("line 4: user \"bad id\""),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("line 5: user \"2004\""), "{errors:?}");
        assert!(
            errors[2].contains("line 6") && errors[2].contains("twice"),
            "{errors:?}"
        );
        assert!(
            errors[3].contains("line 7") && errors[3].contains("not both"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_header_without_user_or_secret_is_refused() {
        assert!(users_of_csv(b"name,password\n1,x\n", None).is_err());
        assert!(users_of_csv(b"user,realm\n1,x\n", None).is_err());
    }
}
