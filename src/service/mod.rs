//! Service mode: recordings taken from livekit-server over Redis.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the service until a signal ends it.
pub async fn run_with_signals(_config: Arc<Config>, _root: CancellationToken) -> ExitCode {
    eprintln!("livekit-recorder: service mode is not built yet");
    ExitCode::from(2)
}
