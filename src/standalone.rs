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
use crate::signals::StopSignals;
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
    /// RTMP URLs streamed to, for stream output.
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

    pub fn ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// Records `req` until SIGINT, SIGTERM or SIGQUIT (or the template's END_RECORDING). The first
/// signal finishes the file; a second one forces the recorder down at once.
pub async fn run(
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    req: StartRecordingRequest,
    mut signals: StopSignals,
    root: CancellationToken,
) -> Outcome {
    let spec = match request::validate(STANDALONE_ID, &req, &config) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    let force = root.child_token();
    let mut session = SessionHandle::spawn(
        spec,
        SessionContext {
            config,
            uploader,
            force: force.clone(),
            events: None,
        },
    );
    let stopper = session.commands();
    let signals = tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = signals.recv() => {}
                () = force.cancelled() => return,
            }
            count += 1;
            if count == 1 {
                tracing::info!("signal received: finishing the recording (signal again to force)");
                let _ = stopper.send(crate::session::Command::Stop).await;
            } else {
                tracing::warn!("second signal: forcing the recorder down");
                force.cancel();
                return;
            }
        }
    });
    let result = session.wait().await;
    signals.abort();
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
