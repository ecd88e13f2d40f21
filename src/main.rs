//! `regmirror` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regmirror::config::{Config, LogFormat, NodeSource};

#[derive(Parser)]
#[command(
    name = "regmirror",
    version,
    about = "Mirrors Kamailio registrations onto every Asterisk node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision users in the shared schema (both tiers see them at once).
    User(regmirror::cli::user::UserArgs),
    /// Run the service.
    Run {
        /// Configuration file (TOML); REGMIRROR__SECTION__KEY variables override it.
        #[arg(short, long, env = "REGMIRROR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Farm summary, or one user's bindings, from a running service's admin listener
    /// (exit 0 ok, 1 usage, 2 the user has no binding, 3 service unreachable).
    Status(regmirror::cli::status::StatusArgs),
    /// The farm's nodes: list them, add one, drain one (Asterisk's maintenance mode, waiting
    /// for its calls to end), resume it, or remove it.
    Node(regmirror::cli::node::NodeArgs),
    /// Validate the configuration, and the farm list's rows when it is the database's
    /// (0 valid, 1 invalid, 3 database unreachable).
    CheckConfig {
        #[arg(short, long, env = "REGMIRROR_CONFIG")]
        config: Option<PathBuf>,
    },
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
    match cli.command {
        Command::User(args) => match current_thread() {
            Ok(rt) => ExitCode::from(rt.block_on(regmirror::cli::user::run(args))),
            Err(code) => code,
        },
        Command::Status(args) => ExitCode::from(regmirror::cli::status::run(args)),
        Command::Node(args) => match current_thread() {
            Ok(rt) => ExitCode::from(rt.block_on(regmirror::cli::node::run(args))),
            Err(code) => code,
        },
        Command::Run { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("regmirror: {e}");
                    return ExitCode::from(1);
                }
            };
            init_logging(&cfg);
            let rt = match current_thread() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(regmirror::runtime::run(
                cfg,
                config.clone(),
                shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Cannot start (socket in use, ...): 3, like every "cannot reach" failure.
                    tracing::error!(error = %e, "regmirror stopped");
                    eprintln!("regmirror: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Command::CheckConfig { config } => check_config(config.as_deref()),
    }
}

/// `check-config`: the file, and with `node_list.source = "database"` the farm list's rows
/// (exit 1 when one cannot be used, 3 when the database cannot be read).
fn check_config(path: Option<&std::path::Path>) -> ExitCode {
    let mut c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("regmirror: {e}");
            return ExitCode::from(1);
        }
    };
    let mut unusable = Vec::new();
    if c.node_list.source == NodeSource::Database {
        let read = current_thread().map(|rt| {
            rt.block_on(async {
                let pool = regmirror::runtime::node_list::pool(&c).map_err(|e| e.to_string())?;
                regmirror::runtime::node_list::read(&pool, &c)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        match read {
            Err(code) => return code,
            Ok(Err(e)) => {
                eprintln!("regmirror: farm list (dispatcher table): {e}");
                return ExitCode::from(3);
            }
            Ok(Ok((nodes, set_aside))) => (c.nodes, unusable) = (nodes, set_aside),
        }
    }
    for u in &unusable {
        eprintln!("regmirror: {u}: not used");
    }
    if c.nodes.is_empty() {
        eprintln!("regmirror: the farm list has no usable node");
    }
    println!(
        "configuration {}: {} node(s){}, listening on {}{}",
        if unusable.is_empty() && !c.nodes.is_empty() {
            "ok"
        } else {
            "has problems"
        },
        c.nodes.len(),
        match c.node_list.source {
            NodeSource::Database => format!(" (dispatcher set {})", c.node_list.dispatcher_set),
            NodeSource::Config => String::new(),
        },
        c.sip.listen,
        c.ha.as_ref().map_or_else(String::new, |h| format!(
            ", HA {:?} with peer {} (takeover after {} x {:?})",
            h.role, h.peer, h.takeover_after, h.probe_interval
        )
        .to_lowercase())
    );
    if unusable.is_empty() && !c.nodes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("regmirror: cannot start the runtime: {e}");
            ExitCode::from(3)
        })
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
