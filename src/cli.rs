//! Command line and environment: which mode, which config, which request. Compatible with the
//! original's `LIVEKIT_RECORDER_CONFIG`, `RECORDING_REQUEST` and `SERVICE_MODE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::signals::Shutdown;
use crate::{request, standalone};

/// Records web pages and LiveKit rooms to MP4 files or RTMP streams.
#[derive(Debug, Parser)]
#[command(name = "livekit-recorder", version, about)]
pub struct Args {
    /// Run as a service that takes recordings from livekit-server over Redis
    /// (SERVICE_MODE=1/true/yes/on).
    #[arg(
        long,
        env = "SERVICE_MODE",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub service_mode: bool,
    /// Run as an egress worker of livekit-server v1.5.1 and later (psrpc over Redis)
    /// (EGRESS_MODE=1/true/yes/on). Wins over SERVICE_MODE, which the container image sets.
    #[arg(
        long,
        env = "EGRESS_MODE",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub egress_mode: bool,
    /// YAML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// YAML config as a string; wins over --config.
    #[arg(
        long,
        env = "LIVEKIT_RECORDER_CONFIG",
        value_name = "YAML",
        hide_env_values = true
    )]
    pub config_body: Option<String>,
    /// Standalone mode: StartRecordingRequest JSON file.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Standalone mode: StartRecordingRequest JSON; wins over --request.
    #[arg(
        long,
        env = "RECORDING_REQUEST",
        value_name = "JSON",
        hide_env_values = true
    )]
    pub request_body: Option<String>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Serve the built-in layout templates (to look at them, or to check custom ones against).
    ServeTemplates {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
    },
}

/// Exit codes: 0 success, 1 the recording failed, 2 bad configuration or request.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::ServeTemplates { listen }) = args.command {
        return serve_templates(listen);
    }
    let loaded = match config::load(args.config_body.as_deref(), args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("livekit-recorder: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = loaded.config;
    if args.egress_mode {
        credentials_from_env(&mut config, |k| std::env::var(k).ok());
    }
    let uploader = match crate::upload::Uploader::from_config(&config.file_output) {
        Ok(u) => u.map(Arc::new),
        Err(e) => {
            eprintln!("livekit-recorder: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: GStreamer reads this at init.
    if std::env::var_os("GST_DEBUG").is_none() {
        std::env::set_var("GST_DEBUG", config.gst_debug_level());
    }
    init_tracing(&config);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("livekit-recorder: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let root = CancellationToken::new();
    // Before anything starts: a stop signal must never find the default action (exit) in place.
    let signals = match runtime.block_on(async { crate::signals::StopSignals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livekit-recorder: could not install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let code = if args.egress_mode {
        let config = Arc::new(config);
        runtime.block_on(run_with_signals(
            config.health_port,
            signals,
            root,
            |shutdown, status| crate::egress::run(config, shutdown, status),
        ))
    } else if args.service_mode {
        let config = Arc::new(config);
        runtime.block_on(run_with_signals(
            config.health_port,
            signals,
            root,
            |shutdown, status| crate::service::run(config, uploader, shutdown, status),
        ))
    } else {
        runtime.block_on(run_standalone(&args, config, uploader, signals, root))
    };
    // Anything still running (a stuck reader) must not keep the process up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

/// Runs a front-end (`serve`: the legacy service or the egress worker) with the health port
/// and the stop signals until it returns; the exit code for the process.
async fn run_with_signals<F, Fut, E>(
    health_port: u16,
    signals: crate::signals::StopSignals,
    root: CancellationToken,
    serve: F,
) -> ExitCode
where
    F: FnOnce(Shutdown, crate::health::Probe) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let shutdown = Shutdown::new(&root);
    let signals = tokio::spawn(crate::signals::escalate(signals, shutdown.clone()));
    let probe = crate::health::Probe::new();
    let health_stop = CancellationToken::new();
    let health = if health_port != 0 {
        match crate::health::bind(health_port).await {
            Ok(listener) => Some(tokio::spawn(crate::health::serve(
                listener,
                probe.clone(),
                health_stop.clone(),
            ))),
            Err(source) => {
                eprintln!(
                    "livekit-recorder: could not serve health on port {health_port}: {source}"
                );
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let result = serve(shutdown, probe).await;
    signals.abort();
    health_stop.cancel();
    if let Some(h) = health {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), h).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livekit-recorder: {e}");
            ExitCode::from(1)
        }
    }
}

/// As livekit/egress: `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET` and `LIVEKIT_WS_URL` fill the
/// keys the config leaves empty.
fn credentials_from_env(config: &mut Config, var: impl Fn(&str) -> Option<String>) {
    for (field, name) in [
        (&mut config.api_key, "LIVEKIT_API_KEY"),
        (&mut config.api_secret, "LIVEKIT_API_SECRET"),
        (&mut config.ws_url, "LIVEKIT_WS_URL"),
    ] {
        if field.is_empty() {
            if let Some(v) = var(name).filter(|v| !v.is_empty()) {
                *field = v;
            }
        }
    }
}

fn serve_templates(listen: std::net::SocketAddr) -> ExitCode {
    if !crate::templates::built() {
        eprintln!(
            "livekit-recorder: {}",
            crate::templates::TemplatesError::NotBuilt
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("livekit-recorder: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                eprintln!(
                    "serving the built-in templates on http://{listen}/#/<layout>?url=..&token=.."
                );
                tokio::select! {
                    () = crate::templates::serve(listener) => ExitCode::from(1),
                    _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("livekit-recorder: could not listen on {listen}: {e}");
                ExitCode::from(2)
            }
        }
    })
}

async fn run_standalone(
    args: &Args,
    config: Config,
    uploader: Option<Arc<crate::upload::Uploader>>,
    signals: crate::signals::StopSignals,
    root: CancellationToken,
) -> ExitCode {
    let req = match request::load(args.request_body.as_deref(), args.request.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("livekit-recorder: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = standalone::run(Arc::new(config), uploader, req, signals, root).await;
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("the outcome always serializes")
    );
    if outcome.ok() {
        tracing::info!("recording complete");
        ExitCode::SUCCESS
    } else {
        eprintln!("livekit-recorder: recording failed: {}", outcome.error);
        ExitCode::from(1)
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // chromiumoxide's handler logs protocol noise as WARN/ERROR: CDP events newer than the
        // crate knows ("WS Invalid message"), and the socket reset when Chromium exits on
        // Browser.close. A lost DevTools connection is reported by the recorder itself.
        EnvFilter::new(format!(
            "{},chromiumoxide=warn,chromiumoxide::handler=off,tungstenite=warn",
            config.tracing_level()
        ))
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_mode_takes_the_originals_spellings() {
        let parse = |args: &[&str]| Args::try_parse_from(args.iter().copied());
        assert!(parse(&["r", "--service-mode"]).unwrap().service_mode);
        assert!(parse(&["r", "--service-mode", "1"]).unwrap().service_mode);
        assert!(!parse(&["r", "--service-mode", "0"]).unwrap().service_mode);
        assert!(!parse(&["r"]).unwrap().service_mode);
        assert!(parse(&["r", "--service-mode", "maybe"]).is_err());
    }

    #[test]
    fn egress_credentials_come_from_the_environment_when_the_config_has_none() {
        let mut c = Config {
            api_key: "from-config".into(),
            ..Config::default()
        };
        credentials_from_env(&mut c, |k| Some(format!("env-{k}")));
        assert_eq!(c.api_key, "from-config", "the config wins");
        assert_eq!(c.api_secret, "env-LIVEKIT_API_SECRET");
        assert_eq!(c.ws_url, "env-LIVEKIT_WS_URL");
        let mut c = Config::default();
        credentials_from_env(&mut c, |_| Some(String::new()));
        assert!(c.api_secret.is_empty(), "an empty variable fills nothing");
    }

    #[test]
    fn egress_mode_is_its_own_switch() {
        let parse = |args: &[&str]| Args::try_parse_from(args.iter().copied());
        assert!(parse(&["r", "--egress-mode"]).unwrap().egress_mode);
        assert!(!parse(&["r"]).unwrap().egress_mode);
        // The image sets SERVICE_MODE=1; EGRESS_MODE picks the egress worker over it.
        let both = parse(&["r", "--egress-mode", "--service-mode"]).unwrap();
        assert!(both.egress_mode && both.service_mode);
    }
}
