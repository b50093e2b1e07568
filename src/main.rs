use std::process::ExitCode;

use byok_bridge::config::Settings;
use byok_bridge::directus::DirectusClient;
use byok_bridge::providers::ProviderClient;
use byok_bridge::services::key_vault::KeyVault;
use byok_bridge::startup::Application;
use byok_bridge::telemetry;
use byok_bridge::{import_keys, rewrap};

/// mimalloc: allocation and freeing were a tenth of the gateway's CPU under glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
byok-bridge: BYOK routing sidecar for Directus

Usage:
  byok-bridge [serve]     run the HTTP service (configured by environment variables; see README)
  byok-bridge rewrap      re-encrypt every stored key under ENCRYPTION_KEY (ENCRYPTION_KEYS_PREVIOUS still
                          decrypt); prints counts as JSON, never key material; safe to re-run
  byok-bridge import-keys [--verify]
                          store users' keys from another platform, sealed: JSON lines {\"user\", \"provider\",
                          \"key\"} on standard input; counts as JSON on standard output, refused lines (by number,
                          never the key) on standard error. Without --verify keys are stored unverified and
                          checked with their provider later; exit 1 if any line was not stored
  byok-bridge healthcheck exit 0 if the service on BIND_ADDR answers /readyz with 200 (ready or degraded),
                          1 otherwise: for container healthchecks in an image without a shell or curl
  byok-bridge --version   print the version
  byok-bridge --help      print this help
";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => serve().await,
        ["rewrap"] => rewrap().await,
        ["import-keys"] => import_keys(false).await,
        ["import-keys", "--verify"] => import_keys(true).await,
        ["healthcheck"] => healthcheck().await,
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

fn settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|error| {
        eprintln!("byok-bridge: {error}");
        ExitCode::from(2)
    })
}

async fn rewrap() -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _logs = telemetry::init(settings.log_format);
    let Some(keyring) = settings.keyring else {
        eprintln!("byok-bridge: ENCRYPTION_KEY: is not set. rewrap seals every key under it.");
        return ExitCode::from(2);
    };
    let directus = DirectusClient::new(settings.directus_url, settings.directus_token, settings.directus_timeout);
    match rewrap::rewrap_all(&directus, &keyring).await {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).expect("plain struct"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "rewrap stopped; re-run it to continue");
            ExitCode::FAILURE
        }
    }
}

async fn import_keys(verify: bool) -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _logs = telemetry::init(settings.log_format);
    if settings.keyring.is_none() {
        eprintln!("byok-bridge: ENCRYPTION_KEY: is not set. import-keys seals every key under it.");
        return ExitCode::from(2);
    }
    let directus = DirectusClient::new(settings.directus_url, settings.directus_token, settings.directus_timeout);
    let providers = ProviderClient::new(
        settings.providers.base_urls,
        settings.provider_timeout,
        settings.provider_generation_timeout,
    );
    let vault = KeyVault::new(settings.keyring, directus.clone(), providers);
    let report = import_keys::import_keys(&vault, &directus, std::io::stdin().lock(), verify).await;
    println!("{}", serde_json::to_string(&report).expect("plain struct"));
    if report.imported == report.read { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn healthcheck() -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let mut addr = settings.bind_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build();
    let answer = match client {
        Ok(client) => client.get(format!("http://{addr}/readyz")).send().await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(response) if response.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("byok-bridge: /readyz answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("byok-bridge: /readyz on {addr}: {}", error.without_url());
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _logs = telemetry::init(settings.log_format);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start");
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
