//! The recording phases of a session: start the parts, wait for the page's START, record until
//! something ends it, finish the file, tear everything down. The parts are an [`Engine`]: the
//! real one in production, a scripted one in this module's tests.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::engine::{Console, Engine, Happening};
use super::streams::{StreamOutcome, Streams};
use super::watchdog::Alarm;
use super::{Command, EndReason, OutputError, SessionContext, SessionError, SessionEvent};
use crate::browser::ConsoleMessage;
use crate::pipeline::{PipelineError, PipelineEvent};
use crate::request::{Input, RecordingSpec};
use crate::template;

/// How long the pipeline has to reach PLAYING.
const PLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long EOS has to travel through the pipeline.
const EOS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pipeline error waits for a dying server to be noticed (to name it, not the source).
const DEATH_NOTICE: Duration = Duration::from_millis(200);
/// How long a lost DevTools connection waits for Chromium's exit to be noticed (a browser that
/// dies closes the connection first).
const DISCONNECT_NOTICE: Duration = Duration::from_secs(1);

/// What the recording phases produced, before delivery.
pub(super) struct Recorded {
    /// When the pipeline started playing.
    pub started: Option<(Instant, SystemTime)>,
    pub ended: Instant,
    pub end: EndReason,
    pub error: Option<SessionError>,
    /// The file was finished by a clean EOS.
    pub finished: bool,
    pub streams: Vec<StreamOutcome>,
}

/// Whether the page marks its own start and end (START_RECORDING / END_RECORDING).
pub(super) fn has_markers(spec: &RecordingSpec) -> bool {
    matches!(
        spec.input,
        Input::Template { .. } | Input::Page { markers: true, .. }
    )
}

/// Runs the phases on `engine` and tears it down, whatever happened.
pub(super) async fn record<E: Engine>(
    spec: &RecordingSpec,
    ctx: &SessionContext,
    engine: &mut E,
    commands: &mut mpsc::Receiver<Command>,
) -> Recorded {
    let mut rec = Recording {
        spec,
        ctx,
        engine,
        streams: Streams::default(),
        started: None,
    };
    let (end, error, finished) = rec.phases(commands).await;
    let ended = Instant::now();
    rec.engine.teardown().await;
    let end = match (&error, rec.started) {
        (Some(SessionError::Aborted), _) => EndReason::Aborted,
        (Some(SessionError::Forced), _) => EndReason::Forced,
        (_, None) => EndReason::Failed,
        _ => end,
    };
    let error = match (error, rec.started) {
        (None, None) => Some(SessionError::NeverStarted),
        (e, _) => e,
    };
    Recorded {
        started: rec.started,
        ended,
        end,
        error,
        finished,
        streams: rec.streams.finish(),
    }
}

/// How the recording loop ended.
enum Stop {
    Stopped,
    SourceClosed,
    LimitReached,
    Forced,
    Failed(SessionError),
    /// The file cannot be written: finishing it would write more, so it is not tried.
    WriteFailed(SessionError),
}

/// One step of the recording loop.
enum Step {
    Continue,
    End(Stop),
}

struct Recording<'a, E> {
    spec: &'a RecordingSpec,
    ctx: &'a SessionContext,
    engine: &'a mut E,
    streams: Streams,
    started: Option<(Instant, SystemTime)>,
}

impl<E: Engine> Recording<'_, E> {
    /// Start, wait for START, play, record, finish: (why it ended, its error, file finished).
    async fn phases(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
    ) -> (EndReason, Option<SessionError>, bool) {
        let force = self.ctx.force.clone();
        let started = tokio::select! {
            r = self.start() => r,
            _ = force.cancelled() => Err(SessionError::Aborted),
            () = wait_stop(commands) => Err(SessionError::Aborted),
        };
        let mut console = match started {
            Ok(c) => c,
            Err(e) => return (EndReason::Failed, Some(e), false),
        };
        if has_markers(self.spec) {
            self.ctx.emit(SessionEvent::WaitingForStart);
            if let Err(e) = self.wait_start(&mut console, commands).await {
                return (EndReason::Failed, Some(e), false);
            }
            tracing::info!("page logged START_RECORDING");
        }
        if let Err(e) = self.play().await {
            return (EndReason::Failed, Some(e), false);
        }
        let stop = self.watch(&mut console, commands).await;
        self.finish(stop).await
    }

    /// The page's address: built by the front-end, or the legacy template form.
    fn page_url(&self) -> Result<String, SessionError> {
        Ok(match &self.spec.input {
            Input::Url(u) | Input::Page { url: u, .. } => u.clone(),
            Input::Template {
                layout,
                room_name,
                base_url,
            } => {
                let config = &self.ctx.config;
                let identity = crate::util::new_guid("RR_");
                let token =
                    template::token(&config.api_key, &config.api_secret, room_name, &identity)?;
                let base = if base_url.is_empty() {
                    self.ctx
                        .builtin_templates
                        .clone()
                        .ok_or(crate::templates::TemplatesError::NotBuilt)?
                } else {
                    base_url.clone()
                };
                template::page_url(&base, layout, &config.ws_url, &token)
            }
        })
    }

    async fn start(&mut self) -> Result<Console, SessionError> {
        let url = self.page_url()?;
        self.engine.start(&url).await
    }

    /// Waits for the page's START_RECORDING (bounded only by `start_timeout` when configured).
    async fn wait_start(
        &mut self,
        console: &mut Console,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), SessionError> {
        let timeout = self.ctx.config.start_timeout();
        let force = self.ctx.force.clone();
        let engine = &mut *self.engine;
        let trouble = tokio::select! {
            started = wait_marker(console, template::START_MARKER) => {
                if started {
                    return Ok(());
                }
                Happening::Died(engine.dead_part().unwrap_or_else(|| "Chromium closed the page".into()))
            }
            h = engine.next() => h,
            () = sleep_or_never(timeout) => return Err(SessionError::StartTimeout(timeout.unwrap_or_default())),
            _ = force.cancelled() => return Err(SessionError::Aborted),
            () = wait_stop(commands) => return Err(SessionError::Aborted),
        };
        Err(match trouble {
            Happening::Died(note) => SessionError::PartDied(note),
            Happening::PageError(text) => SessionError::PageError(text),
            Happening::Alarm(alarm) => alarm_error(alarm, self.dead_part_after(true).await),
            Happening::Pipeline(ev) => SessionError::Pipeline(PipelineError::Runtime(format!(
                "pipeline event before it played: {ev:?}"
            ))),
        })
    }

    /// Plays the pipeline: from here on, the recording has started.
    async fn play(&mut self) -> Result<(), SessionError> {
        self.engine.play(PLAY_TIMEOUT).await?;
        let now = (Instant::now(), SystemTime::now());
        self.started = Some(now);
        for url in self.spec.output.rtmp.iter().flatten() {
            self.streams.start(url, now.1);
        }
        tracing::info!(id = %self.spec.id, "recording");
        self.ctx.emit(SessionEvent::Active { started_at: now.1 });
        Ok(())
    }

    /// Records until something ends it.
    async fn watch(
        &mut self,
        console: &mut Console,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Stop {
        let markers = has_markers(self.spec);
        let limit = self
            .spec
            .max_duration
            .map(|d| tokio::time::Instant::now() + d);
        let force = self.ctx.force.clone();
        // A closed console (Chromium gone, or its DevTools connection) is left to the watchdog
        // and the exit watch to explain; it is not read again.
        let mut console_open = true;
        loop {
            let step = tokio::select! {
                cmd = commands.recv() => self.on_command(cmd).await,
                _ = force.cancelled() => Step::End(Stop::Forced),
                msg = console.recv(), if markers && console_open => {
                    console_open = msg.is_some();
                    on_console(msg)
                }
                h = self.engine.next() => self.on_happening(h).await,
                () = sleep_until_or_never(limit) => Step::End(Stop::LimitReached),
            };
            if let Step::End(stop) = step {
                return stop;
            }
        }
    }

    async fn on_command(&mut self, cmd: Option<Command>) -> Step {
        match cmd {
            Some(Command::Stop) | None => return Step::End(Stop::Stopped),
            Some(Command::AddOutput { url, reply }) => {
                let r = self.engine.add_output(&url).map_err(OutputError::from);
                if r.is_ok() {
                    self.streams.start(&url, SystemTime::now());
                }
                let _ = reply.send(r);
            }
            Some(Command::RemoveOutput { url, reply }) => {
                let r = self
                    .engine
                    .remove_output(&url)
                    .await
                    .map_err(OutputError::from);
                if r.is_ok() {
                    self.streams.end(&url, None);
                }
                let _ = reply.send(r);
            }
        }
        Step::Continue
    }

    async fn on_happening(&mut self, h: Happening) -> Step {
        match h {
            Happening::Pipeline(ev) => self.on_pipeline(ev).await,
            Happening::Died(note) => Step::End(Stop::Failed(SessionError::PartDied(note))),
            Happening::Alarm(alarm) => {
                let dead = self.dead_part_after(alarm == Alarm::DevToolsClosed).await;
                Step::End(Stop::Failed(alarm_error(alarm, dead)))
            }
            // Only looked for before the recording plays.
            Happening::PageError(_) => Step::Continue,
        }
    }

    async fn on_pipeline(&mut self, ev: Option<PipelineEvent>) -> Step {
        match ev {
            Some(PipelineEvent::Error { element, message }) if element == FILE_SINK => {
                // A full disk, or any write error: nothing more can be written, not even the
                // file's end; what is there is kept up to its last complete fragment.
                let path = self
                    .spec
                    .output
                    .file
                    .as_ref()
                    .map(|f| f.local_path.display().to_string())
                    .unwrap_or_default();
                Step::End(Stop::WriteFailed(SessionError::WriteFailed {
                    path,
                    message,
                }))
            }
            Some(PipelineEvent::Error { element, message }) => {
                // A source fails when its server dies: name the server, not the element.
                tokio::time::sleep(DEATH_NOTICE).await;
                Step::End(Stop::Failed(match self.engine.dead_part() {
                    Some(note) => SessionError::PartDied(note),
                    None => SessionError::Pipeline(PipelineError::Runtime(format!(
                        "{element}: {message}"
                    ))),
                }))
            }
            Some(PipelineEvent::OutputFailed { url, message }) => {
                tracing::warn!(output = %crate::policy::redact_stream_url(&url), error = %message, "rtmp output failed; the others go on");
                if let Err(e) = self.engine.remove_output(&url).await {
                    tracing::debug!(error = %e, "failed rtmp output already gone");
                }
                self.streams.end(&url, Some(message.clone()));
                self.ctx.emit(SessionEvent::StreamFailed {
                    url,
                    error: message.clone(),
                });
                if self.streams.active_count() == 0 && self.spec.output.file.is_none() {
                    return Step::End(Stop::Failed(SessionError::AllStreamsFailed(message)));
                }
                Step::Continue
            }
            Some(PipelineEvent::Eos) => Step::End(Stop::SourceClosed),
            Some(PipelineEvent::Playing) => Step::Continue,
            None => Step::End(Stop::Failed(SessionError::Pipeline(
                PipelineError::Runtime("pipeline bus closed".into()),
            ))),
        }
    }

    /// A part whose death explains an alarm, if one dies within a moment (`wait`: a dying
    /// Chromium closes DevTools before its exit is seen; a dead X server takes Chromium with it,
    /// so the first dead part in order is named).
    async fn dead_part_after(&self, wait: bool) -> Option<String> {
        if wait {
            let _ = tokio::time::timeout(DISCONNECT_NOTICE, self.engine.died()).await;
        }
        self.engine.dead_part()
    }

    /// Finishes the file (EOS) unless forced: (why it ended, its error, file finished).
    async fn finish(&mut self, stop: Stop) -> (EndReason, Option<SessionError>, bool) {
        let (reason, error) = match stop {
            Stop::Stopped => (EndReason::Stopped, None),
            Stop::SourceClosed => (EndReason::SourceClosed, None),
            Stop::LimitReached => (EndReason::LimitReached, None),
            Stop::Forced => return (EndReason::Forced, Some(SessionError::Forced), false),
            Stop::Failed(e) => (EndReason::Failed, Some(e)),
            Stop::WriteFailed(e) => {
                tracing::error!(error = %e, "the recording cannot be written; ending it");
                return (EndReason::Failed, Some(e), false);
            }
        };
        match &error {
            None => self.ctx.emit(SessionEvent::Ending { reason }),
            Some(e) => {
                tracing::warn!(error = %e, "recording failed; finishing the file written so far")
            }
        }
        let force = self.ctx.force.clone();
        tokio::select! {
            r = self.engine.finish(EOS_TIMEOUT) => match r {
                Ok(()) => (reason, error, true),
                Err(e) => {
                    tracing::warn!(error = %e, "could not finish the file; it stays fragmented");
                    (reason, error.or(Some(SessionError::Pipeline(e))), false)
                }
            },
            _ = force.cancelled() => (EndReason::Forced, error.or(Some(SessionError::Forced)), false),
        }
    }
}

/// The element that writes the file (see the pipeline).
const FILE_SINK: &str = "file_sink";

/// The session's error for a watchdog's alarm; a dead part, when there is one, says it better.
fn alarm_error(alarm: Alarm, dead_part: Option<String>) -> SessionError {
    if let Some(note) = dead_part {
        return SessionError::PartDied(note);
    }
    match alarm {
        Alarm::RendererCrashed => SessionError::RendererCrashed,
        Alarm::DevToolsClosed => SessionError::DevToolsClosed,
        Alarm::PageUnresponsive { misses, every } => {
            SessionError::PageUnresponsive { misses, every }
        }
        Alarm::NoVideo(d) => SessionError::NoVideo(d),
    }
}

/// END_RECORDING on the console ends the recording; a closed console is left to the browser's
/// exit to explain.
fn on_console(msg: Option<ConsoleMessage>) -> Step {
    match msg {
        Some(m) if m.args.iter().any(|a| a == template::END_MARKER) => {
            tracing::info!("page logged END_RECORDING");
            Step::End(Stop::SourceClosed)
        }
        _ => Step::Continue,
    }
}

/// Waits for a [`Command::Stop`] (or the command channel closing); answers other commands
/// with an error since nothing is recording yet.
async fn wait_stop(commands: &mut mpsc::Receiver<Command>) {
    loop {
        match commands.recv().await {
            Some(Command::Stop) | None => return,
            Some(Command::AddOutput { reply, .. }) | Some(Command::RemoveOutput { reply, .. }) => {
                let _ = reply.send(Err(OutputError::NotRecording));
            }
        }
    }
}

/// Waits until the page logs `marker`; false if the console closes first.
async fn wait_marker(console: &mut Console, marker: &str) -> bool {
    while let Some(m) = console.recv().await {
        if m.args.iter().any(|a| a == marker) {
            return true;
        }
    }
    false
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
