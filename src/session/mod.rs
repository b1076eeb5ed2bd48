//! One recording, from display to delivered file: the session actor.
//!
//! [`run`] goes through its phases in order: start the parts (display, audio server, browser,
//! pipeline), wait for the page's START_RECORDING when the page has markers, record until
//! something ends it (a [`Command::Stop`], the page's END_RECORDING, the maximum duration, a
//! dead part or a pipeline error), finish the file, tear every part down, then deliver the file
//! (faststart, size, upload). Along the way it reports [`SessionEvent`]s, and it returns a
//! [`SessionResult`] that each front-end turns into its own wire format. A cancelled `force`
//! token skips the graceful finish: what is written so far stays, playable up to the last
//! fragment.

mod deliver;
mod record;
mod streams;
mod watchdog;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::audio::AudioError;
use crate::browser::BrowserError;
use crate::config::Config;
use crate::display::DisplayError;
use crate::pipeline::PipelineError;
use crate::request::RecordingSpec;
use crate::template::TemplateError;
use crate::upload::Uploader;

pub use deliver::FileOutcome;
pub use streams::StreamOutcome;

/// What can be asked of a running session.
#[derive(Debug)]
pub enum Command {
    /// Finish the recording (EOS) and end.
    Stop,
    /// Stream to one more RTMP URL.
    AddOutput {
        url: String,
        reply: oneshot::Sender<Result<(), OutputError>>,
    },
    /// Stop streaming to an RTMP URL.
    RemoveOutput {
        url: String,
        reply: oneshot::Sender<Result<(), OutputError>>,
    },
}

/// Why an AddOutput or RemoveOutput was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Nothing records yet (or any more).
    #[error("pipeline not initialized")]
    NotRecording,
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What a session reports while it runs, in this order (each at most once, but
/// [`SessionEvent::StreamFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The page is up and has not logged START_RECORDING yet: nobody to record in the room.
    WaitingForStart,
    /// Media flows into the outputs.
    Active { started_at: SystemTime },
    /// The recording is being finished, for this reason.
    Ending { reason: EndReason },
    /// An RTMP URL failed; the other outputs go on.
    StreamFailed { url: String, error: String },
}

/// What a result says when the recording reached `max_duration` (livekit egress's words).
pub const MAX_DURATION_REACHED: &str = "max duration reached";

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A [`Command::Stop`] (or a stop signal).
    Stopped,
    /// The page logged END_RECORDING, or the stream ended.
    SourceClosed,
    /// The maximum duration was reached.
    LimitReached,
    /// Stopped before anything was recorded.
    Aborted,
    /// Forced down without finishing the file.
    Forced,
    /// Something failed (see the error).
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Display(#[from] DisplayError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Browser(#[from] BrowserError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Templates(#[from] crate::templates::TemplatesError),
    /// The original's text for a recording stopped before it started.
    #[error("Recording aborted")]
    Aborted,
    #[error("template did not log START_RECORDING within {0:?}")]
    StartTimeout(std::time::Duration),
    /// The text of the template's `div.error` (cut to 1 KB: a page writes what it likes).
    #[error("{}", crate::policy::bound_error(.0))]
    PageError(String),
    /// A part of the session died while recording.
    #[error("{0}")]
    PartDied(String),
    #[error("recording forced to stop: the file is not finalised and may lack its last second")]
    Forced,
    #[error("every rtmp output failed, the last with: {0}")]
    AllStreamsFailed(String),
    /// The watchdog: `Inspector.targetCrashed`.
    #[error("Chromium's page crashed (its renderer process is gone)")]
    RendererCrashed,
    /// The watchdog: page checks went unanswered.
    #[error("the page stopped responding: {misses} checks in a row, one every {every:?}, went unanswered")]
    PageUnresponsive {
        misses: u32,
        every: std::time::Duration,
    },
    /// The watchdog: the screen capture delivered nothing.
    #[error("no video from the display for {0:?}: the X server (Xvfb) is frozen")]
    NoVideo(std::time::Duration),
    /// The watchdog: the browser's control connection is gone.
    #[error("the DevTools connection to Chromium closed")]
    DevToolsClosed,
    /// The file could not be written (a full disk, say).
    #[error("could not write the recording to {path}: {message}")]
    WriteFailed { path: String, message: String },
    #[error("recording ended before it started")]
    NeverStarted,
    /// The session's task itself failed (a bug): the error is all there is.
    #[error("recording task failed: {0}")]
    Task(String),
}

/// The outcome of a session.
#[derive(Debug, Clone)]
pub struct SessionResult {
    pub id: String,
    /// The room, for template input; empty otherwise.
    pub room_name: String,
    /// When media started flowing, if it did.
    pub started_at: Option<SystemTime>,
    pub ended_at: SystemTime,
    pub end: EndReason,
    /// `None` on success. The recording's own error first, then an upload's.
    pub error: Option<String>,
    /// The file written, when the output has one and anything was written.
    pub file: Option<FileOutcome>,
    /// Every RTMP URL streamed to, ended ones first, in order.
    pub streams: Vec<StreamOutcome>,
}

impl SessionResult {
    /// A session that failed before it could record anything.
    pub fn failed(id: &str, room_name: &str, error: &SessionError) -> Self {
        Self {
            id: id.to_owned(),
            room_name: room_name.to_owned(),
            started_at: None,
            ended_at: SystemTime::now(),
            end: EndReason::Failed,
            error: Some(error.to_string()),
            file: None,
            streams: Vec::new(),
        }
    }

    /// Seconds recorded, from the first frame to the end.
    pub fn duration(&self) -> std::time::Duration {
        self.started_at
            .and_then(|s| self.ended_at.duration_since(s).ok())
            .unwrap_or_default()
    }
}

/// What a session needs besides its spec.
#[derive(Clone)]
pub struct SessionContext {
    pub config: Arc<Config>,
    /// Where an upload key goes; `None` keeps files local.
    pub uploader: Option<Arc<Uploader>>,
    /// Cancelled: force the session down without finishing the file.
    pub force: CancellationToken,
    /// Where [`SessionEvent`]s go, if anyone listens.
    pub events: Option<mpsc::UnboundedSender<SessionEvent>>,
    /// The built-in templates' base (legacy form), started by the mode that needs them; `None`
    /// when this binary has none.
    pub builtin_templates: Option<String>,
}

impl SessionContext {
    fn emit(&self, event: SessionEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }
}

/// A running session: send it commands, await its result.
pub struct SessionHandle {
    id: String,
    room_name: String,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<SessionResult>,
    /// The recording's file, to account for if the task itself fails.
    file: Option<crate::request::FileOutput>,
}

impl SessionHandle {
    /// Starts [`run`] as a task.
    pub fn spawn(spec: RecordingSpec, ctx: SessionContext) -> Self {
        let (commands, rx) = mpsc::channel(16);
        let id = spec.id.clone();
        let room_name = spec.room_name().to_owned();
        let file = spec.output.file.clone();
        let task = tokio::spawn(run(spec, ctx, rx));
        Self {
            id,
            room_name,
            commands,
            task,
            file,
        }
    }

    /// A sender for commands, to keep beside the handle.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Waits for the session's result; a task that failed (panicked) becomes a failed result.
    pub async fn wait(&mut self) -> SessionResult {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => self.task_failed(&e.to_string()),
        }
    }

    /// The result of a session whose task died: its file is named in the error when anything
    /// was written (it plays up to its last fragment), else a work file is removed.
    fn task_failed(&self, error: &str) -> SessionResult {
        tracing::error!(id = %self.id, error, "recording task failed");
        let mut r = SessionResult::failed(
            &self.id,
            &self.room_name,
            &SessionError::Task(error.to_owned()),
        );
        let Some(file) = &self.file else {
            return r;
        };
        let path = &file.local_path;
        match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => {
                if let Err(e) = deliver::trim_to_complete_fragments(path) {
                    tracing::debug!(error = %e, "could not check the file's fragments");
                }
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(m.len());
                let shown = path.display().to_string();
                r.error = Some(format!(
                    "recording task failed: {error}; the recording is kept at {shown}"
                ));
                r.file = Some(FileOutcome {
                    local_path: Some(path.clone()),
                    uploaded: false,
                    name: shown.clone(),
                    location: shown,
                    size,
                    duration: std::time::Duration::ZERO,
                });
            }
            _ => deliver::discard(file),
        }
        r
    }
}

/// Runs one recording to its end. Never panics on bad input; every failure is in the result.
pub async fn run(
    spec: RecordingSpec,
    ctx: SessionContext,
    mut commands: mpsc::Receiver<Command>,
) -> SessionResult {
    let t0 = Instant::now();
    let recorded = record::record(&spec, &ctx, &mut commands).await;
    // Nothing records any more: RPCs that arrive while the file is delivered get a clear no.
    commands.close();

    let mut error = recorded.error.as_ref().map(ToString::to_string);
    let mut file = None;
    if let (Some(out), None) = (&spec.output.file, recorded.started) {
        // Nothing was recorded: a work file (created when the pipeline started) goes, and an
        // empty local file too.
        deliver::discard_unstarted(out);
    }
    if let (Some(out), Some(started)) = (&spec.output.file, recorded.started) {
        let (delivered, upload_error) = deliver::deliver(
            out,
            recorded.ended.duration_since(started.0),
            recorded.finished,
            ctx.uploader.as_deref(),
        )
        .await;
        file = delivered;
        if let Some(e) = upload_error {
            error = Some(match error {
                Some(first) => format!("{first}; {e}"),
                None => e,
            });
        }
    }
    let ended_at = SystemTime::now()
        .checked_sub(recorded.ended.elapsed())
        .unwrap_or_else(SystemTime::now);
    let result = SessionResult {
        id: spec.id.clone(),
        room_name: spec.room_name().to_owned(),
        started_at: recorded.started.map(|(_, at)| at),
        ended_at,
        end: recorded.end,
        error,
        file,
        streams: recorded.streams,
    };
    tracing::info!(
        id = %result.id,
        error = result.error.as_deref().unwrap_or(""),
        end = ?result.end,
        duration = ?result.duration(),
        took = ?t0.elapsed(),
        "recording ended"
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::FileOutput;

    fn panicking(file: Option<FileOutput>) -> SessionHandle {
        let (commands, _rx) = mpsc::channel(1);
        SessionHandle {
            id: "RR_panic".into(),
            room_name: "room".into(),
            commands,
            task: tokio::spawn(async { panic!("a bug") }),
            file,
        }
    }

    #[tokio::test]
    async fn a_panicked_session_names_its_file_or_removes_an_empty_work_file() {
        let dir = tempfile::tempdir().unwrap();
        let work = FileOutput {
            local_path: dir.path().join("RR_panic-x-room.mp4"),
            upload_key: Some("room.mp4".into()),
            keep: false,
        };
        // Written to: kept and named, so nothing is lost and nothing is leaked silently.
        std::fs::write(&work.local_path, vec![1u8; 2048]).unwrap();
        let r = panicking(Some(work.clone())).wait().await;
        assert_eq!(r.end, EndReason::Failed);
        let error = r.error.unwrap();
        assert!(error.starts_with("recording task failed: "), "{error}");
        assert!(error.contains("a bug"), "{error}");
        assert!(
            error.ends_with(&format!(
                "the recording is kept at {}",
                work.local_path.display()
            )),
            "{error}"
        );
        let f = r.file.unwrap();
        assert_eq!(f.local_path.as_ref(), Some(&work.local_path));
        assert_eq!(f.size, 2048);
        // Empty: removed.
        std::fs::write(&work.local_path, b"").unwrap();
        let r = panicking(Some(work.clone())).wait().await;
        assert!(r.file.is_none());
        assert!(!work.local_path.exists(), "the empty work file is removed");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left in the work dir"
        );
    }
}
