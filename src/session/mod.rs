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
mod engine;
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
/// [`SessionEvent::StreamFailed`]); the last is always [`SessionEvent::Complete`] or
/// [`SessionEvent::Failed`], even when the session's task itself died.
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
    /// The recording ended without an error and its outputs are delivered: the file (size,
    /// duration, location) and every stream (times, status).
    Complete(Box<SessionResult>),
    /// The recording failed: the error, and what was recorded and delivered all the same.
    Failed(Box<SessionResult>),
}

impl SessionEvent {
    /// The last event of a session, from its result.
    pub fn ended(result: SessionResult) -> Self {
        if result.error.is_none() {
            Self::Complete(Box::new(result))
        } else {
            Self::Failed(Box::new(result))
        }
    }
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
    #[error("no video from the display for {0:?}: the X server is frozen")]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Why it failed, as the metrics count it (one of [`crate::metrics::FAILURE_REASONS`]);
    /// `None` when it completed.
    pub fn failure_reason(&self) -> Option<&'static str> {
        match (self.end, &self.error) {
            (_, None) => None,
            (EndReason::Aborted, _) => Some("aborted"),
            (EndReason::Forced, _) => Some("forced"),
            (EndReason::Failed, _) => Some("recording"),
            // Recorded to its end; only the upload failed.
            (_, Some(_)) => Some("upload"),
        }
    }

    /// Counts the ended session in the metrics of front-end `mode`.
    pub fn count(&self, mode: &str) {
        crate::metrics::metrics().session_ended(mode, self.failure_reason(), self.duration());
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
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<SessionResult>,
    /// What to report if the task itself fails.
    fallback: Fallback,
}

impl SessionHandle {
    /// Starts a recording on the real parts (Xvfb, PulseAudio, Chromium, GStreamer).
    pub fn spawn(spec: RecordingSpec, ctx: SessionContext) -> Self {
        let engine = engine::Machine::new(&spec, &ctx);
        Self::spawn_with(spec, ctx, engine)
    }

    /// Starts [`run`] on `engine` as a task, watched by a second one: the session's last event
    /// is sent even when its task panics.
    fn spawn_with<E: engine::Engine + 'static>(
        spec: RecordingSpec,
        ctx: SessionContext,
        engine: E,
    ) -> Self {
        let (commands, rx) = mpsc::channel(16);
        let fallback = Fallback {
            id: spec.id.clone(),
            room_name: spec.room_name().to_owned(),
            file: spec.output.file.clone(),
        };
        let events = ctx.events.clone();
        let inner = tokio::spawn(run(spec, ctx, engine, rx));
        let watch = fallback.clone();
        let task = tokio::spawn(async move {
            let result = match inner.await {
                Ok(r) => r,
                Err(e) => watch.result(&e.to_string()),
            };
            if let Some(tx) = events {
                let _ = tx.send(SessionEvent::ended(result.clone()));
            }
            result
        });
        Self {
            commands,
            task,
            fallback,
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
            Err(e) => self.fallback.result(&e.to_string()),
        }
    }
}

/// What a session's result says when its task died: enough of the request to name the file.
#[derive(Clone)]
struct Fallback {
    id: String,
    room_name: String,
    file: Option<crate::request::FileOutput>,
}

impl Fallback {
    /// The result of a session whose task died: its file is named in the error when anything
    /// was written (it plays up to its last fragment), else a work file is removed.
    fn result(&self, error: &str) -> SessionResult {
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

/// Runs one recording on `engine` to its end. Never panics on bad input; every failure is in
/// the result.
async fn run<E: engine::Engine>(
    spec: RecordingSpec,
    ctx: SessionContext,
    mut engine: E,
    mut commands: mpsc::Receiver<Command>,
) -> SessionResult {
    let t0 = Instant::now();
    let recorded = record::record(&spec, &ctx, &mut engine, &mut commands).await;
    drop(engine);
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
mod tests;
