//! After the recording: the file is finished (index in front), measured, and uploaded when the
//! recording has an upload; whatever was recorded is delivered, a failed recording's partial
//! file included.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::request::FileOutput;
use crate::upload::Uploader;

/// How long the faststart rewrite of a finished file may take, per started minute of recording.
const REMUX_TIMEOUT_PER_MINUTE: Duration = Duration::from_secs(10);

/// The recording's file, as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// The file on this machine, when it stays here (local output, or an upload that failed).
    pub local_path: Option<PathBuf>,
    /// What the recording is known as: the object key of an upload, else the local path.
    pub name: String,
    /// Where it can be fetched: the upload's URL, else the local path.
    pub location: String,
    /// Bytes, as written (and uploaded).
    pub size: u64,
    /// From the first frame to the end of the recording.
    pub duration: Duration,
}

/// Finishes, measures and uploads `file`. `None` when nothing was written; the error is the
/// upload's, naming where the file was kept.
pub(crate) async fn deliver(
    file: &FileOutput,
    recorded: Duration,
    finished: bool,
    uploader: Option<&Uploader>,
) -> (Option<FileOutcome>, Option<String>) {
    let path = &file.local_path;
    if finished {
        let minutes = u32::try_from(recorded.as_secs() / 60 + 1).unwrap_or(u32::MAX);
        let t = Instant::now();
        match crate::pipeline::remux::faststart(path, REMUX_TIMEOUT_PER_MINUTE * minutes).await {
            Ok(()) => {
                tracing::debug!(took = ?t.elapsed(), "rewrote the file with its index in front")
            }
            Err(e) => {
                tracing::warn!(error = %e, "faststart rewrite failed; the fragmented file is kept")
            }
        }
    }
    let size = match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => return (None, None),
    };
    let local = path.display().to_string();
    let mut outcome = FileOutcome {
        local_path: Some(path.clone()),
        name: local.clone(),
        location: local,
        size,
        duration: recorded,
    };
    let (Some(uploader), Some(key)) = (uploader, &file.upload_key) else {
        return (Some(outcome), None);
    };
    outcome.name = key.clone();
    match uploader.upload(path, key).await {
        Ok(url) => {
            outcome.location = url;
            // Removed only once the upload is confirmed.
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove the uploaded file");
            }
            outcome.local_path = None;
            (Some(outcome), None)
        }
        Err(e) => {
            let error = format!("{e}; the recording is kept at {}", path.display());
            (Some(outcome), Some(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_or_missing_file_delivers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileOutput {
            local_path: dir.path().join("none.mp4"),
            upload_key: None,
        };
        assert_eq!(
            deliver(&file, Duration::ZERO, false, None).await,
            (None, None)
        );
        std::fs::write(&file.local_path, b"").unwrap();
        assert_eq!(
            deliver(&file, Duration::ZERO, false, None).await,
            (None, None)
        );
    }

    #[tokio::test]
    async fn a_local_file_is_measured_and_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileOutput {
            local_path: dir.path().join("a.mp4"),
            upload_key: None,
        };
        std::fs::write(&file.local_path, vec![7u8; 1234]).unwrap();
        let (outcome, error) = deliver(&file, Duration::from_secs(3), false, None).await;
        let outcome = outcome.unwrap();
        assert!(error.is_none());
        assert_eq!(outcome.size, 1234);
        assert_eq!(outcome.duration, Duration::from_secs(3));
        assert_eq!(outcome.location, file.local_path.display().to_string());
        assert_eq!(outcome.local_path.as_ref(), Some(&file.local_path));
    }
}
