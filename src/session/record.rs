//! The recording phases of a session: start the parts, wait for the page's START, record until
//! something ends it, finish the file, tear everything down.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::streams::{StreamOutcome, Streams};
use super::watchdog::{Alarm, Watchdog};
use super::{Command, EndReason, OutputError, SessionContext, SessionError, SessionEvent};
use crate::audio::AudioServer;
use crate::browser::{Browser, BrowserOptions, ConsoleMessage};
use crate::display::Display;
use crate::pipeline::{Pipeline, PipelineError, PipelineEvent, PipelineSpec, Sinks};
use crate::process::Child;
use crate::request::{Input, RecordingSpec};
use crate::template;

/// How long the pipeline has to reach PLAYING.
const PLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a template page is checked for an error while it has not started.
const PAGE_ERROR_POLL: Duration = Duration::from_millis(500);
/// How long the pipeline may take to stop before its servers are killed under it.
const PIPELINE_STOP_WAIT: Duration = Duration::from_secs(3);
/// How long the audio sink may take to deliver its first block.
const AUDIO_WARM_UP: Duration = Duration::from_secs(3);
/// How long EOS has to travel through the pipeline.
const EOS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pipeline error waits for a dying server to be noticed (to name it, not the source).
const DEATH_NOTICE: Duration = Duration::from_millis(200);
/// How long a lost DevTools connection waits for Chromium's exit to be noticed (a browser that
/// dies closes the connection first).
const DISCONNECT_NOTICE: Duration = Duration::from_secs(1);

type Console = mpsc::Receiver<ConsoleMessage>;

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

/// Runs the phases and tears the parts down, whatever happened.
pub(super) async fn record(
    spec: &RecordingSpec,
    ctx: &SessionContext,
    commands: &mut mpsc::Receiver<Command>,
) -> Recorded {
    let mut rec = Recording {
        spec,
        ctx,
        starting: Parts::default(),
        running: None,
        streams: Streams::default(),
        started: None,
        watchdog: None,
    };
    let (end, error, finished) = rec.phases(commands).await;
    let ended = Instant::now();
    rec.teardown().await;
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

/// The parts while they start (any may be missing), and what teardown stops.
#[derive(Default)]
struct Parts {
    display: Option<Display>,
    audio: Option<AudioServer>,
    browser: Option<Browser>,
    pipeline: Option<Pipeline>,
}

impl Parts {
    /// The running parts, once every one has started; else the parts as they are.
    fn into_running(self) -> Result<Running, Box<Parts>> {
        match self {
            Parts {
                display: Some(display),
                audio: Some(audio),
                browser: Some(browser),
                pipeline: Some(pipeline),
            } => Ok(Running {
                display,
                audio,
                browser,
                pipeline,
            }),
            parts => Err(Box::new(parts)),
        }
    }
}

impl From<Running> for Parts {
    fn from(r: Running) -> Self {
        Self {
            display: Some(r.display),
            audio: Some(r.audio),
            browser: Some(r.browser),
            pipeline: Some(r.pipeline),
        }
    }
}

/// Every part, started.
struct Running {
    display: Display,
    audio: AudioServer,
    browser: Browser,
    pipeline: Pipeline,
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

struct Recording<'a> {
    spec: &'a RecordingSpec,
    ctx: &'a SessionContext,
    /// The parts while starting; empty once they run.
    starting: Parts,
    running: Option<Running>,
    streams: Streams,
    started: Option<(Instant, SystemTime)>,
    /// Watches the page (and, once playing, the screen) while the recording waits or records.
    watchdog: Option<Watchdog>,
}

impl Recording<'_> {
    fn markers(&self) -> bool {
        matches!(
            self.spec.input,
            Input::Template { .. } | Input::Page { markers: true, .. }
        )
    }

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
        if self.markers() {
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

    /// Starts the servers and the browser, loads the page and builds the pipeline.
    async fn start(&mut self) -> Result<Console, SessionError> {
        let url = self.page_url()?;
        let markers = self.markers();
        let o = self.spec.options;
        let config = &self.ctx.config;
        let parts = &mut self.starting;
        // Audio first: its sink needs the longest to deliver (see AudioServer::warm_up).
        let audio = parts
            .audio
            .insert(AudioServer::start(o.audio_frequency).await?);
        let warm_up = audio.warm_up(AUDIO_WARM_UP);
        let display = parts
            .display
            .insert(Display::start(o.width, o.height, o.depth).await?);
        let (browser, console) = Browser::launch(&BrowserOptions {
            display: display.name().to_owned(),
            pulse_server: audio.server(),
            pulse_sink: audio.sink().to_owned(),
            width: o.width,
            height: o.height,
            insecure: config.insecure,
            binary: (!config.chromium_path.is_empty())
                .then(|| PathBuf::from(&config.chromium_path)),
            policy: match crate::templates::serving() {
                Some(addr) => config.network_policy().exempting(addr),
                None => config.network_policy(),
            },
            sandbox: config.chromium_sandbox(),
            console: markers,
        })
        .await?;
        let browser = parts.browser.insert(browser);
        browser.navigate(&url).await?;
        if markers {
            if let Some(text) = browser.eval_string(template::ERROR_PROBE).await? {
                if !text.trim().is_empty() {
                    return Err(SessionError::PageError(text.trim().to_owned()));
                }
            }
        }
        let out = &self.spec.output;
        parts.pipeline = Some(Pipeline::build(&PipelineSpec {
            display: display.name().to_owned(),
            pulse_server: audio.server(),
            pulse_device: audio.monitor(),
            options: o,
            sinks: Sinks {
                file: out.file.as_ref().map(|f| f.local_path.clone()),
                rtmp: out.rtmp.clone(),
            },
        })?);
        match warm_up.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audio warm-up failed; the audio may start late")
            }
            Err(e) => tracing::warn!(error = %e, "audio warm-up task failed"),
        }
        Ok(console)
    }

    /// Waits for the page's START_RECORDING (bounded only by `start_timeout` when configured).
    async fn wait_start(
        &mut self,
        console: &mut Console,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), SessionError> {
        let parts = &self.starting;
        let browser = parts.browser.as_ref().expect("the browser started before");
        let timeout = self.ctx.config.start_timeout();
        // A page that hangs or crashes before START would otherwise be waited on forever.
        let watchdog = self.watchdog.insert(Watchdog::start(
            browser.monitor(),
            &self.ctx.config.watchdog,
            None,
        ));
        tokio::select! {
            alarm = watchdog.alarm() => Err(alarm_error(alarm, parts.dead_part().await)),
            started = wait_marker(console, template::START_MARKER) => {
                if started {
                    Ok(())
                } else {
                    Err(SessionError::PartDied(dead_part(parts).unwrap_or_else(|| "Chromium closed the page".into())))
                }
            }
            () = sleep_or_never(timeout) => Err(SessionError::StartTimeout(timeout.unwrap_or_default())),
            _ = self.ctx.force.cancelled() => Err(SessionError::Aborted),
            () = wait_stop(commands) => Err(SessionError::Aborted),
            note = any_part_died(parts) => Err(SessionError::PartDied(note)),
            text = page_error(browser) => Err(SessionError::PageError(text)),
        }
    }

    /// Plays the pipeline: from here on, the recording has started.
    async fn play(&mut self) -> Result<(), SessionError> {
        let running = match std::mem::take(&mut self.starting).into_running() {
            Ok(r) => self.running.insert(r),
            Err(parts) => {
                self.starting = *parts;
                return Err(SessionError::NeverStarted);
            }
        };
        running.pipeline.play(PLAY_TIMEOUT).await?;
        self.watchdog = Some(Watchdog::start(
            running.browser.monitor(),
            &self.ctx.config.watchdog,
            Some(running.pipeline.video_clock()),
        ));
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
        let markers = self.markers();
        let limit = self
            .spec
            .max_duration
            .map(|d| tokio::time::Instant::now() + d);
        let force = self.ctx.force.clone();
        let mut watchdog = self.watchdog.take();
        // A closed console (Chromium gone, or its DevTools connection) is left to the watchdog
        // and the exit watch to explain; it is not read again.
        let mut console_open = true;
        loop {
            let Running {
                display,
                audio,
                browser,
                pipeline,
            } = self.running.as_mut().expect("watch runs after play");
            let children = [display.child(), audio.child(), browser.child()];
            let step = tokio::select! {
                cmd = commands.recv() => self.on_command(cmd).await,
                _ = force.cancelled() => Step::End(Stop::Forced),
                note = any_child_died(children) => Step::End(Stop::Failed(SessionError::PartDied(note))),
                msg = console.recv(), if markers && console_open => {
                    console_open = msg.is_some();
                    on_console(msg)
                }
                ev = pipeline.next_event() => self.on_pipeline(ev).await,
                () = sleep_until_or_never(limit) => Step::End(Stop::LimitReached),
                alarm = alarm_or_never(watchdog.as_mut()) => {
                    let running = self.running.as_ref().expect("watch runs after play");
                    let dead = running.dead_part_after(&alarm).await;
                    Step::End(Stop::Failed(alarm_error(alarm, dead)))
                }
            };
            if let Step::End(stop) = step {
                return stop;
            }
        }
    }

    async fn on_command(&mut self, cmd: Option<Command>) -> Step {
        let running = self.running.as_mut().expect("commands run while recording");
        match cmd {
            Some(Command::Stop) | None => return Step::End(Stop::Stopped),
            Some(Command::AddOutput { url, reply }) => {
                let r = running.pipeline.add_output(&url).map_err(OutputError::from);
                if r.is_ok() {
                    self.streams.start(&url, SystemTime::now());
                }
                let _ = reply.send(r);
            }
            Some(Command::RemoveOutput { url, reply }) => {
                let r = running
                    .pipeline
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

    async fn on_pipeline(&mut self, ev: Option<PipelineEvent>) -> Step {
        let running = self.running.as_mut().expect("events come while recording");
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
                Step::End(Stop::Failed(match running.dead_part() {
                    Some(note) => SessionError::PartDied(note),
                    None => SessionError::Pipeline(PipelineError::Runtime(format!(
                        "{element}: {message}"
                    ))),
                }))
            }
            Some(PipelineEvent::OutputFailed { url, message }) => {
                tracing::warn!(output = %crate::policy::redact_stream_url(&url), error = %message, "rtmp output failed; the others go on");
                if let Err(e) = running.pipeline.remove_output(&url).await {
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
        let running = self.running.as_mut().expect("finish runs after play");
        let force = self.ctx.force.clone();
        tokio::select! {
            r = running.pipeline.finish(EOS_TIMEOUT) => match r {
                Ok(()) => (reason, error, true),
                Err(e) => {
                    tracing::warn!(error = %e, "could not finish the file; it stays fragmented");
                    (reason, error.or(Some(SessionError::Pipeline(e))), false)
                }
            },
            _ = force.cancelled() => (EndReason::Forced, error.or(Some(SessionError::Forced)), false),
        }
    }

    /// Stops every part that was started, the pipeline first, and waits until all their
    /// processes are gone. A pipeline that cannot stop (a source blocked on a frozen X or audio
    /// server) is given a moment, then the servers are killed, which unblocks it.
    async fn teardown(&mut self) {
        self.watchdog = None;
        let mut parts = match self.running.take() {
            Some(r) => Parts::from(r),
            None => std::mem::take(&mut self.starting),
        };
        if let Some(p) = parts.pipeline.take() {
            if !p.dispose(PIPELINE_STOP_WAIT).await {
                tracing::warn!("pipeline still stopping; stopping its servers under it");
            }
        }
        let browser = async {
            if let Some(b) = parts.browser.as_mut() {
                if let Err(e) = b.stop().await {
                    tracing::error!(error = %e, "Chromium teardown");
                }
            }
        };
        let audio = async {
            if let Some(a) = parts.audio.as_mut() {
                if let Err(e) = a.stop().await {
                    tracing::error!(error = %e, "PulseAudio teardown");
                }
            }
        };
        let display = async {
            if let Some(d) = parts.display.as_mut() {
                if let Err(e) = d.stop().await {
                    tracing::error!(error = %e, "Xvfb teardown");
                }
            }
        };
        tokio::join!(browser, audio, display);
    }
}

impl Running {
    fn children(&self) -> [&Child; 3] {
        [
            self.display.child(),
            self.audio.child(),
            self.browser.child(),
        ]
    }

    fn dead_part(&self) -> Option<String> {
        self.children()
            .into_iter()
            .find_map(|c| c.exit_status().map(|s| c.death_note(&s)))
    }

    /// A part whose death explains `alarm` (a dying Chromium closes DevTools first), if one
    /// dies within a moment.
    async fn dead_part_after(&self, alarm: &Alarm) -> Option<String> {
        if *alarm != Alarm::DevToolsClosed {
            return self.dead_part();
        }
        // Then the first dead part in order: a dead X server takes Chromium with it.
        let _ = tokio::time::timeout(DISCONNECT_NOTICE, any_child_died(self.children())).await;
        self.dead_part()
    }
}

impl Parts {
    /// As [`Running::dead_part_after`], while starting: a part that dies within a moment.
    async fn dead_part(&self) -> Option<String> {
        let _ = tokio::time::timeout(DISCONNECT_NOTICE, any_part_died(self)).await;
        dead_part(self)
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

async fn alarm_or_never(watchdog: Option<&mut Watchdog>) -> Alarm {
    match watchdog {
        Some(w) => w.alarm().await,
        None => std::future::pending().await,
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

/// Resolves with the text of the page's `div.error` once it has one: a room that cannot be
/// joined shows its error after the page has loaded, and would otherwise wait for a START that
/// never comes.
async fn page_error(browser: &Browser) -> String {
    loop {
        tokio::time::sleep(PAGE_ERROR_POLL).await;
        match browser.eval_string(template::ERROR_PROBE).await {
            Ok(Some(text)) if !text.trim().is_empty() => return text.trim().to_owned(),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the page's error"),
        }
    }
}

/// Resolves with a death note when a server or the browser exits.
async fn any_child_died([d, a, b]: [&Child; 3]) -> String {
    tokio::select! {
        n = watch(Some(d)) => n,
        n = watch(Some(a)) => n,
        n = watch(Some(b)) => n,
    }
}

/// Resolves with a death note when any started part exits.
async fn any_part_died(parts: &Parts) -> String {
    tokio::select! {
        n = watch(parts.display.as_ref().map(Display::child)) => n,
        n = watch(parts.audio.as_ref().map(AudioServer::child)) => n,
        n = watch(parts.browser.as_ref().map(Browser::child)) => n,
    }
}

async fn watch(c: Option<&Child>) -> String {
    match c {
        Some(c) => {
            let s = c.exited().await;
            c.death_note(&s)
        }
        None => std::future::pending().await,
    }
}

fn dead_part(parts: &Parts) -> Option<String> {
    [
        parts.display.as_ref().map(Display::child),
        parts.audio.as_ref().map(AudioServer::child),
        parts.browser.as_ref().map(Browser::child),
    ]
    .into_iter()
    .flatten()
    .find_map(|c| c.exit_status().map(|s| c.death_note(&s)))
}
