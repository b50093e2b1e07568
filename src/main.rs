use std::process::ExitCode;

use byok_bridge::config::Settings;
use byok_bridge::startup::Application;
use byok_bridge::telemetry;

const USAGE: &str = "\
byok-bridge: BYOK routing sidecar for Directus

Usage:
  byok-bridge [serve]     run the HTTP service (configured by environment variables; see README)
  byok-bridge --version   print the version
  byok-bridge --help      print this help
";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => serve().await,
        ["--version" | "-V"] => {
            println!("byok-bridge {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help" | "-h"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("byok-bridge: unknown arguments\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("byok-bridge: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    let bind_addr = settings.bind_addr;
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, %bind_addr, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.local_addr(), version = env!("CARGO_PKG_VERSION"), "byok-bridge listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (container stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
