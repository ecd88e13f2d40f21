//! regmirror: a small dispatcher; the work lives in the library.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "regmirror",
    version,
    about = "Mirrors Kamailio registrations onto every node of an Asterisk farm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision users in the shared schema (both tiers see them at once).
    User(regmirror::cli::user::UserArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 1.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("regmirror: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let code = match cli.command {
        Command::User(args) => runtime.block_on(regmirror::cli::user::run(args)),
    };
    ExitCode::from(code)
}
