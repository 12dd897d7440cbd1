//! The `broker` binary: flags → a command (`wit`, `backup`), or logging → bind → `broker::run` until
//! SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use broker::config::{Command, Config, LogFormat};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Wit) => {
            print!("{}", broker::guests::WIT);
            return ExitCode::SUCCESS;
        }
        Some(Command::Backup { to }) => {
            return match broker::backup::backup(&config.db, config.db_max_mb, to) {
                Ok(file) => {
                    println!("backup written to {}", file.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("backup failed: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    // Log lines are written by a thread of their own: a synchronous stderr write per request showed
    // as ~4.5 % of the insert path's CPU. Held until main returns, the guard flushes what is queued;
    // past 128k queued lines new ones are dropped rather than stalling requests.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_env("BROKER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line: timestamp, level, target, and the same fields as the text lines.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match start(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    let listeners = broker::Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    broker::run(config, listeners, shutdown).await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for signals; stop Broker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
