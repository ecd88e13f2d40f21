//! `regmirror user add|remove|passwd|list|show`: provisioning once for both tiers.
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use rand::distributions::Alphanumeric;
use rand::Rng;

use super::exit_code;
use crate::store::provision::{self, NewUser, Storage};
use crate::store::{self, StoreError};

/// Provision PJSIP users (ps_endpoints, ps_auths, ps_aors) that Asterisk and
/// Kamailio both authenticate against.
#[derive(Args)]
pub struct UserArgs {
    /// Database URL, e.g. mysql://provisioner:PASS@db:3306/regmirror
    #[arg(
        long,
        env = "REGMIRROR_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: UserCommand,
}

/// Where the password comes from. Never a plain argv value by default: that
/// shows up in `ps`.
#[derive(Args, Clone, Default)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with_all = ["password_file", "password"])]
    pub password_stdin: bool,
    /// Read the password from the first line of this file.
    #[arg(long, value_name = "PATH", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// The password itself (demo convenience: visible in `ps`; prefer the others).
    #[arg(long, hide = true)]
    pub password: Option<String>,
    /// Store only MD5(user:realm:password) (md5_cred), no plaintext.
    #[arg(long)]
    pub hashed_only: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user: endpoint, auth and AOR in one transaction. Without a
    /// password source (or REGMIRROR_USER_PASSWORD) a random password is
    /// generated and printed once.
    Add {
        /// User id: endpoint, auth and AOR id, and the SIP username.
        id: String,
        /// Digest realm; must be the realm Kamailio and Asterisk both challenge with.
        #[arg(long, env = "REGMIRROR_REALM")]
        realm: Option<String>,
        /// Dialplan context for calls from this phone.
        #[arg(long, default_value = "phones")]
        context: String,
        /// Allowed codecs, in order (after disallow=all).
        #[arg(long, default_value = "ulaw,alaw")]
        codecs: String,
        /// AOR max_contacts (at least 1).
        #[arg(long, default_value_t = 1)]
        max_contacts: u32,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Delete a user's endpoint, auth and AOR rows.
    Remove { id: String },
    /// Replace a user's credential (same realm).
    Passwd {
        id: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Many users at once, from CSV or chan_sip's `sipusers` table: checked first, then one
    /// transaction; a re-run changes nothing; `--dry-run` says what it would do.
    Import(super::import::ImportArgs),
    /// Every user as CSV (what `import --csv` takes), secrets included.
    Export,
    /// List users.
    List,
    /// Show one user (never its secret).
    Show { id: String },
}

/// Runs the subcommand; returns the exit code.
pub async fn run(args: UserArgs) -> u8 {
    match execute(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("regmirror user: {e}");
            exit_code(&e)
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The password and whether it was generated here.
fn read_password(src: &PasswordSource) -> Result<(String, bool), StoreError> {
    let first_line = |text: &str| text.lines().next().unwrap_or("").to_string();
    if src.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| invalid("password", format!("cannot read standard input: {e}")))?;
        return Ok((first_line(&line), false));
    }
    if let Some(path) = &src.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("password", format!("cannot read {}: {e}", path.display())))?;
        return Ok((first_line(&text), false));
    }
    if let Some(p) = &src.password {
        eprintln!("regmirror user: warning: --password is visible to other users in `ps`; prefer --password-stdin");
        return Ok((p.clone(), false));
    }
    if let Ok(p) = std::env::var("REGMIRROR_USER_PASSWORD") {
        return Ok((p, false));
    }
    let generated: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    Ok((generated, true))
}

async fn execute(args: UserArgs) -> Result<(), StoreError> {
    let url = args.database_url.filter(|u| !u.is_empty()).ok_or_else(|| {
        invalid(
            "database URL",
            "pass --database-url or set REGMIRROR_DATABASE_URL",
        )
    })?;
    // Validate before connecting: a bad id is a usage error whatever the database says.
    match &args.command {
        UserCommand::Add { id, .. }
        | UserCommand::Remove { id }
        | UserCommand::Passwd { id, .. }
        | UserCommand::Show { id } => provision::validate_id(id)?,
        UserCommand::List | UserCommand::Import(_) | UserCommand::Export => {}
    }
    match args.command {
        UserCommand::Add {
            id,
            realm,
            context,
            codecs,
            max_contacts,
            password,
        } => {
            let realm = realm.filter(|r| !r.is_empty()).ok_or_else(|| {
                invalid(
                    "realm",
                    "pass --realm or set REGMIRROR_REALM (one realm for both tiers)",
                )
            })?;
            provision::validate_realm(&realm)?;
            let storage = storage_of(&password);
            let (secret, generated) = read_password(&password)?;
            let mut user = NewUser::new(&id, &realm, &secret, storage);
            user.context = context;
            user.codecs = codecs;
            user.max_contacts = max_contacts;
            let pool = store::connect(&url).await?;
            provision::add_user(&pool, &user).await?;
            let how = match storage {
                Storage::Plaintext => "plaintext",
                Storage::HashedOnly => "hashed only",
            };
            println!("added user {id} (realm {realm}, {how})");
            if generated {
                print_generated(&secret);
            }
        }
        UserCommand::Remove { id } => {
            let pool = store::connect(&url).await?;
            provision::remove_user(&pool, &id).await?;
            println!("removed user {id}");
        }
        UserCommand::Passwd { id, password } => {
            let storage = storage_of(&password);
            let (secret, generated) = read_password(&password)?;
            provision::validate_password(&secret)?;
            let pool = store::connect(&url).await?;
            provision::set_password(&pool, &id, &secret, storage).await?;
            println!("password of {id} replaced");
            if generated {
                print_generated(&secret);
            }
        }
        UserCommand::Import(import) => {
            let pool = store::connect(&url).await?;
            super::import::import(&pool, import).await?;
        }
        UserCommand::Export => {
            let pool = store::connect(&url).await?;
            super::import::export(&pool).await?;
        }
        UserCommand::List => {
            let pool = store::connect(&url).await?;
            for u in provision::list_users(&pool).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.id,
                    u.realm.as_deref().unwrap_or("-"),
                    storage_name(u.storage),
                    if u.complete { "ok" } else { "incomplete" }
                );
            }
        }
        UserCommand::Show { id } => {
            let pool = store::connect(&url).await?;
            let u = provision::show_user(&pool, &id).await?;
            println!("id:           {}", u.id);
            println!("username:     {}", u.username.as_deref().unwrap_or("-"));
            println!("realm:        {}", u.realm.as_deref().unwrap_or("-"));
            println!("credential:   {}", storage_name(u.storage));
            println!("context:      {}", u.context.as_deref().unwrap_or("-"));
            println!("codecs:       {}", u.codecs.as_deref().unwrap_or("-"));
            println!(
                "max_contacts: {}",
                u.max_contacts
                    .map_or_else(|| "-".to_string(), |m| m.to_string())
            );
            println!(
                "rows:         {}",
                if u.complete {
                    "endpoint, auth, aor"
                } else {
                    "incomplete"
                }
            );
            if let Some(n) = provision::live_contacts(&pool, &id).await? {
                println!("registered:   {n} live contact(s) in Kamailio");
            }
        }
    }
    Ok(())
}

fn storage_of(src: &PasswordSource) -> Storage {
    if src.hashed_only {
        Storage::HashedOnly
    } else {
        Storage::Plaintext
    }
}

fn storage_name(s: Option<Storage>) -> &'static str {
    match s {
        Some(Storage::Plaintext) => "plaintext",
        Some(Storage::HashedOnly) => "hashed-only",
        None => "-",
    }
}

fn print_generated(secret: &str) {
    // Printed once, to stdout only, so it can be captured; never logged.
    println!("generated password: {secret}");
    if std::io::stdout().is_terminal() {
        eprintln!("regmirror user: store it now; it is not shown again");
    }
}
