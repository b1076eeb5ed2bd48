//! Standalone mode: one recording from a request given at start, ended by a signal (or by the
//! template), its result printed as one JSON line.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proto::livekit::StartRecordingRequest;
use crate::request;
use crate::session::{SessionContext, SessionHandle};
use crate::signals::{Shutdown, StopSignals};
use crate::upload::Uploader;

/// The recording id in standalone mode, as in the original.
pub const STANDALONE_ID: &str = "standalone";

/// The line standalone mode prints when it ends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub id: String,
    /// Empty on success.
    pub error: String,
    /// The local file, for file output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filepath: Option<PathBuf>,
    /// Where the file was uploaded, if anywhere.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub download_url: String,
    /// Seconds recorded.
    pub duration: i64,
    /// RTMP URLs streamed to, for stream output, as `rtmp://host/app/{stream_key}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmp: Vec<String>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Self {
            id: STANDALONE_ID.into(),
            error,
            filepath: None,
            download_url: String::new(),
            duration: 0,
            rtmp: Vec::new(),
        }
    }

    /// Done: no error, or only the word that `max_duration` ended a complete recording.
    pub fn ok(&self) -> bool {
        self.error.is_empty() || self.error == crate::session::MAX_DURATION_REACHED
    }
}

/// Records `req` until SIGINT, SIGTERM or SIGQUIT (or the template's END_RECORDING). The first
/// signal finishes the file; a second one forces the recorder down at once.
pub async fn run(
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    req: StartRecordingRequest,
    signals: StopSignals,
    root: CancellationToken,
) -> Outcome {
    let spec = match request::validate(STANDALONE_ID, &req, &config) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    let builtin_templates = match &spec.input {
        request::Input::Template { base_url, .. } => {
            crate::templates::start_if_needed(base_url).await
        }
        _ => None,
    };
    let shutdown = Shutdown::new(&root);
    let mut session = SessionHandle::spawn(
        spec,
        SessionContext {
            config,
            uploader,
            force: shutdown.force.clone(),
            events: None,
            builtin_templates,
        },
    );
    let signals = tokio::spawn(crate::signals::escalate(signals, shutdown.clone()));
    // The first signal finishes the recording; a second one forces it (see signals::escalate).
    let stopper = session.commands();
    let drain = shutdown.drain.clone();
    let stop = tokio::spawn(async move {
        drain.cancelled().await;
        tracing::info!("signal received: finishing the recording (signal again to force)");
        let _ = stopper.send(crate::session::Command::Stop).await;
    });
    crate::metrics::metrics().session_started("standalone");
    let result = session.wait().await;
    result.count("standalone");
    signals.abort();
    stop.abort();
    let info = crate::service::recording_info(&result);
    Outcome {
        id: info.id,
        error: info.error,
        filepath: result.file.as_ref().and_then(|f| f.local_path.clone()),
        download_url: info
            .file
            .as_ref()
            .map(|f| f.download_url.clone())
            .unwrap_or_default(),
        duration: info
            .file
            .map(|f| f.duration)
            .unwrap_or_else(|| info.rtmp.first().map(|r| r.duration).unwrap_or_default()),
        rtmp: info.rtmp.into_iter().map(|r| r.stream_url).collect(),
    }
}
