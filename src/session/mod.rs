//! One recording, from display to finished file: the session actor.
//!
//! [`run`] starts the display, the audio server, the browser and the pipeline, records until it is
//! told to stop (a [`Command::Stop`], the template's END_RECORDING, a dead part or a pipeline
//! error), finishes the file, tears every part down and waits for all their processes to be gone,
//! and returns the result. A cancelled `force` token skips the graceful finish: what is written so
//! far stays, playable up to the last fragment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::audio::{AudioError, AudioServer};
use crate::browser::{Browser, BrowserError, BrowserOptions, ConsoleMessage};
use crate::config::Config;
use crate::display::{Display, DisplayError};
use crate::pipeline::{Pipeline, PipelineError, PipelineEvent, PipelineSpec, Sink};
use crate::proto::livekit::{FileResult, RecordingInfo, RtmpResult};
use crate::request::{Input, Output, RecordingSpec};
use crate::template::{self, TemplateError};
use crate::upload::Uploader;

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
/// How long the faststart rewrite of a finished file may take, per started minute of recording.
const REMUX_TIMEOUT_PER_MINUTE: Duration = Duration::from_secs(10);

/// What can be asked of a running session.
#[derive(Debug)]
pub enum Command {
    /// Finish the recording (EOS) and end.
    Stop,
    /// Stream to one more RTMP URL.
    AddOutput {
        url: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Stop streaming to an RTMP URL.
    RemoveOutput {
        url: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
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
    StartTimeout(Duration),
    /// The text of the template's `div.error`.
    #[error("{0}")]
    PageError(String),
    /// A part of the session died while recording.
    #[error("{0}")]
    PartDied(String),
    #[error("recording forced to stop: the file is not finalised and may lack its last second")]
    Forced,
}

/// The outcome of a session.
#[derive(Debug, Clone)]
pub struct SessionResult {
    /// What livekit-server expects (download_url is filled in by the upload, if any).
    pub info: RecordingInfo,
    /// The file written on this machine, when the output is a file and something was written.
    pub local_file: Option<PathBuf>,
}

/// A running session: send it commands, await its result.
pub struct SessionHandle {
    id: String,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<SessionResult>,
}

impl SessionHandle {
    /// Starts [`run`] as a task.
    pub fn spawn(
        spec: RecordingSpec,
        config: Arc<Config>,
        uploader: Option<Arc<Uploader>>,
        force: CancellationToken,
    ) -> Self {
        let (commands, rx) = mpsc::channel(16);
        let id = spec.id.clone();
        let task = tokio::spawn(run(spec, config, uploader, rx, force));
        Self { id, commands, task }
    }

    /// A sender for commands, to keep beside the handle.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// The task, for callers that keep the command sender and await the result themselves.
    pub fn into_task(self) -> tokio::task::JoinHandle<SessionResult> {
        self.task
    }

    /// Waits for the session's result.
    pub async fn wait(self) -> SessionResult {
        match self.task.await {
            Ok(r) => r,
            Err(e) => SessionResult {
                info: RecordingInfo {
                    id: self.id,
                    error: format!("recording task failed: {e}"),
                    ..Default::default()
                },
                local_file: None,
            },
        }
    }
}

/// The parts of a running session, torn down together whatever happened.
#[derive(Default)]
struct Parts {
    display: Option<Display>,
    audio: Option<AudioServer>,
    browser: Option<Browser>,
    pipeline: Option<Pipeline>,
}

/// What recording produced before teardown.
struct Recorded {
    /// From PLAYING to the end of the recording.
    duration: Duration,
    /// The file was finished by a clean EOS.
    finished: bool,
    /// Each RTMP URL streamed to, with its duration: removed and failed ones first, in order.
    rtmp: Vec<RtmpResult>,
}

/// Runs one recording to its end. Never panics on bad input; every failure is in the result.
pub async fn run(
    spec: RecordingSpec,
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    mut commands: mpsc::Receiver<Command>,
    force: CancellationToken,
) -> SessionResult {
    let started = Instant::now();
    let mut parts = Parts::default();
    let mut recorded = None;
    let outcome = record(
        &spec,
        &config,
        &mut parts,
        &mut commands,
        &force,
        &mut recorded,
    )
    .await;
    teardown(&mut parts).await;

    let mut error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
    let mut info = RecordingInfo {
        id: spec.id.clone(),
        room_name: spec.room_name().to_owned(),
        ..Default::default()
    };
    let mut local_file = None;
    if let Some(rec) = &recorded {
        let secs = i64::try_from(rec.duration.as_secs()).unwrap_or(i64::MAX);
        match &spec.output {
            Output::File { local_path, .. } => {
                if rec.finished {
                    let minutes =
                        u32::try_from(rec.duration.as_secs() / 60 + 1).unwrap_or(u32::MAX);
                    let t = Instant::now();
                    match crate::pipeline::remux::faststart(
                        local_path,
                        REMUX_TIMEOUT_PER_MINUTE * minutes,
                    )
                    .await
                    {
                        Ok(()) => {
                            tracing::debug!(took = ?t.elapsed(), "rewrote the file with its index in front")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "faststart rewrite failed; the fragmented file is kept")
                        }
                    }
                }
                if std::fs::metadata(local_path)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
                {
                    info.file = Some(FileResult {
                        download_url: String::new(),
                        duration: secs,
                    });
                    local_file = Some(local_path.clone());
                }
            }
            Output::Rtmp { .. } => info.rtmp = rec.rtmp.clone(),
        }
    }
    if error.is_empty() && recorded.is_none() {
        error = "recording ended before it started".into();
    }
    // Whatever was recorded is delivered, a failed recording's partial file included.
    if let (
        Some(uploader),
        Output::File {
            upload_key: Some(key),
            ..
        },
        Some(path),
    ) = (&uploader, &spec.output, &local_file)
    {
        match uploader.upload(path, key).await {
            Ok(url) => {
                if let Some(f) = info.file.as_mut() {
                    f.download_url = url;
                }
                // Removed only once the upload is confirmed.
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the uploaded file");
                }
                local_file = None;
            }
            Err(e) => {
                let kept = format!("{e}; the recording is kept at {}", path.display());
                error = if error.is_empty() {
                    kept
                } else {
                    format!("{error}; {kept}")
                };
            }
        }
    }
    info.error = error;
    tracing::info!(
        id = %info.id,
        error = %info.error,
        duration = info.file.as_ref().map(|f| f.duration).unwrap_or_default(),
        took = ?started.elapsed(),
        "recording ended"
    );
    SessionResult { info, local_file }
}

/// Starts the parts and records. `recorded` is set once the pipeline has played, whatever comes
/// after, so a failure mid-recording still reports the file written so far.
async fn record(
    spec: &RecordingSpec,
    config: &Config,
    parts: &mut Parts,
    commands: &mut mpsc::Receiver<Command>,
    force: &CancellationToken,
    recorded: &mut Option<Recorded>,
) -> Result<(), SessionError> {
    let o = spec.options;
    let is_template = matches!(spec.input, Input::Template { .. });
    let url = match &spec.input {
        Input::Url(u) => u.clone(),
        Input::Template {
            layout,
            room_name,
            base_url,
        } => {
            let token = template::token(&config.api_key, &config.api_secret, room_name)?;
            let base = if base_url.is_empty() {
                crate::templates::base_url().await?
            } else {
                base_url.clone()
            };
            template::page_url(&base, layout, &config.ws_url, &token)
        }
    };

    // Start-up, abandoned as soon as a stop arrives.
    let mut warm_up = None;
    let startup = async {
        // Audio first: its sink needs the longest to deliver (see AudioServer::warm_up).
        let audio = parts
            .audio
            .insert(AudioServer::start(o.audio_frequency).await?);
        warm_up = Some(audio.warm_up(AUDIO_WARM_UP));
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
        })
        .await?;
        let browser = parts.browser.insert(browser);
        browser.navigate(&url).await?;
        if is_template {
            if let Some(text) = browser.eval_string(template::ERROR_PROBE).await? {
                if !text.trim().is_empty() {
                    return Err(SessionError::PageError(text.trim().to_owned()));
                }
            }
        }
        let sink = match &spec.output {
            Output::File { local_path, .. } => Sink::File(local_path.clone()),
            Output::Rtmp { urls } => Sink::Rtmp(urls.clone()),
        };
        let pipeline = Pipeline::build(&PipelineSpec {
            display: display.name().to_owned(),
            pulse_server: audio.server(),
            pulse_device: audio.monitor(),
            options: o,
            sink,
        })?;
        parts.pipeline = Some(pipeline);
        Ok::<_, SessionError>(console)
    };
    let mut console = tokio::select! {
        r = startup => r?,
        _ = force.cancelled() => return Err(SessionError::Aborted),
        () = wait_stop(commands) => return Err(SessionError::Aborted),
    };

    if is_template {
        let timeout = config.start_timeout();
        tokio::select! {
            started = wait_marker(&mut console, template::START_MARKER) => {
                if !started {
                    return Err(SessionError::PartDied(dead_part(parts).unwrap_or_else(|| "Chromium closed the page".into())));
                }
            }
            _ = tokio::time::sleep(timeout) => return Err(SessionError::StartTimeout(timeout)),
            _ = force.cancelled() => return Err(SessionError::Aborted),
            () = wait_stop(commands) => return Err(SessionError::Aborted),
            note = any_part_died(parts) => return Err(SessionError::PartDied(note)),
            text = page_error(parts.browser.as_ref().expect("started above")) => return Err(SessionError::PageError(text)),
        }
        tracing::info!("template logged START_RECORDING");
    }

    if let Some(warm) = warm_up {
        match warm.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audio warm-up failed; the audio may start late")
            }
            Err(e) => tracing::warn!(error = %e, "audio warm-up task failed"),
        }
    }
    let pipeline = parts
        .pipeline
        .as_mut()
        .expect("the pipeline was built above");
    pipeline.play(PLAY_TIMEOUT).await?;
    let playing_since = Instant::now();
    *recorded = Some(Recorded {
        duration: Duration::ZERO,
        finished: false,
        rtmp: Vec::new(),
    });
    tracing::info!(id = %spec.id, "recording");
    // RTMP URLs streaming now (with their start) and those that stopped.
    let mut active: Vec<(String, Instant)> = match &spec.output {
        Output::Rtmp { urls } => urls.iter().map(|u| (u.clone(), playing_since)).collect(),
        Output::File { .. } => Vec::new(),
    };
    let mut ended: Vec<RtmpResult> = Vec::new();
    let stop_streaming =
        |active: &mut Vec<(String, Instant)>, ended: &mut Vec<RtmpResult>, url: &str| {
            if let Some(i) = active.iter().position(|(u, _)| u == url) {
                let (url, since) = active.remove(i);
                ended.push(RtmpResult {
                    stream_url: url,
                    duration: i64::try_from(since.elapsed().as_secs()).unwrap_or(i64::MAX),
                });
            }
        };

    enum End {
        Stop,
        Force,
        Failed(SessionError),
    }
    let end = {
        let (display, audio, browser) = (
            parts.display.as_ref().expect("started above"),
            parts.audio.as_ref().expect("started above"),
            parts.browser.as_ref().expect("started above"),
        );
        let pipeline = parts.pipeline.as_mut().expect("built above");
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Stop) | None => break End::Stop,
                    Some(Command::AddOutput { url, reply }) => {
                        let r = pipeline.add_output(&url).map_err(|e| e.to_string());
                        if r.is_ok() {
                            active.push((url, Instant::now()));
                        }
                        let _ = reply.send(r);
                    }
                    Some(Command::RemoveOutput { url, reply }) => {
                        let r = pipeline.remove_output(&url).await.map_err(|e| e.to_string());
                        if r.is_ok() {
                            stop_streaming(&mut active, &mut ended, &url);
                        }
                        let _ = reply.send(r);
                    }
                },
                _ = force.cancelled() => break End::Force,
                s = display.child().exited() => break End::Failed(SessionError::PartDied(display.child().death_note(&s))),
                s = audio.child().exited() => break End::Failed(SessionError::PartDied(audio.child().death_note(&s))),
                s = browser.child().exited() => break End::Failed(SessionError::PartDied(browser.child().death_note(&s))),
                msg = console.recv(), if is_template => match msg {
                    Some(m) if m.args.iter().any(|a| a == template::END_MARKER) => {
                        tracing::info!("template logged END_RECORDING");
                        break End::Stop;
                    }
                    Some(_) => {}
                    // The page's DevTools session is gone: the browser's exit says why.
                    None => {}
                },
                ev = pipeline.next_event() => match ev {
                    Some(PipelineEvent::Error { element, message }) => {
                        // A source fails when its server dies: name the server, not the element.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let died = [display.child(), audio.child(), browser.child()]
                            .into_iter()
                            .find_map(|c| c.exit_status().map(|s| c.death_note(&s)));
                        break End::Failed(match died {
                            Some(note) => SessionError::PartDied(note),
                            None => SessionError::Pipeline(PipelineError::Runtime(format!("{element}: {message}"))),
                        });
                    }
                    Some(PipelineEvent::OutputFailed { url, message }) => {
                        tracing::warn!(output = %crate::pipeline::rtmp::redact(&url), error = %message, "rtmp output failed; the others go on");
                        if let Err(e) = pipeline.remove_output(&url).await {
                            tracing::debug!(error = %e, "failed rtmp output already gone");
                        }
                        stop_streaming(&mut active, &mut ended, &url);
                        if active.is_empty() {
                            break End::Failed(SessionError::Pipeline(PipelineError::Runtime(
                                format!("every rtmp output failed, the last with: {message}"),
                            )));
                        }
                    }
                    Some(PipelineEvent::Eos) => break End::Stop,
                    Some(PipelineEvent::Playing) => {}
                    None => break End::Failed(SessionError::Pipeline(PipelineError::Runtime("pipeline bus closed".into()))),
                },
            }
        }
    };

    let pipeline = parts.pipeline.as_mut().expect("built above");
    let (finished, result) = match end {
        End::Force => (false, Err(SessionError::Forced)),
        End::Stop => tokio::select! {
            r = pipeline.finish(EOS_TIMEOUT) => match r {
                Ok(()) => (true, Ok(())),
                Err(e) => (false, Err(SessionError::Pipeline(e))),
            },
            _ = force.cancelled() => (false, Err(SessionError::Forced)),
        },
        End::Failed(err) => {
            tracing::warn!(error = %err, "recording failed; finishing the file written so far");
            let finished = tokio::select! {
                r = pipeline.finish(EOS_TIMEOUT) => match r {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not finish the file; it stays fragmented");
                        false
                    }
                },
                _ = force.cancelled() => false,
            };
            (finished, Err(err))
        }
    };
    for (url, _) in active.clone() {
        stop_streaming(&mut active, &mut ended, &url);
    }
    *recorded = Some(Recorded {
        duration: playing_since.elapsed(),
        finished,
        rtmp: ended,
    });
    result
}

/// Waits for a [`Command::Stop`] (or the command channel closing); answers other commands
/// with an error since nothing is recording yet.
async fn wait_stop(commands: &mut mpsc::Receiver<Command>) {
    loop {
        match commands.recv().await {
            Some(Command::Stop) | None => return,
            Some(Command::AddOutput { reply, .. }) | Some(Command::RemoveOutput { reply, .. }) => {
                let _ = reply.send(Err("pipeline not initialized".into()));
            }
        }
    }
}

/// Waits until the page logs `marker`; false if the console closes first.
async fn wait_marker(console: &mut mpsc::UnboundedReceiver<ConsoleMessage>, marker: &str) -> bool {
    while let Some(m) = console.recv().await {
        if m.args.iter().any(|a| a == marker) {
            return true;
        }
    }
    false
}

/// Resolves with the text of the template's `div.error` once it has one: a room that cannot be
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

/// Resolves with a death note when any started part exits.
async fn any_part_died(parts: &Parts) -> String {
    let display = parts.display.as_ref().map(|d| d.child());
    let audio = parts.audio.as_ref().map(|a| a.child());
    let browser = parts.browser.as_ref().map(|b| b.child());
    tokio::select! {
        n = watch(display) => n,
        n = watch(audio) => n,
        n = watch(browser) => n,
    }
}

async fn watch(c: Option<&crate::process::Child>) -> String {
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
        parts.display.as_ref().map(|d| d.child()),
        parts.audio.as_ref().map(|a| a.child()),
        parts.browser.as_ref().map(|b| b.child()),
    ]
    .into_iter()
    .flatten()
    .find_map(|c| c.exit_status().map(|s| c.death_note(&s)))
}

/// Stops every part that was started, the pipeline first, and waits until all their processes
/// are gone. A pipeline that cannot stop (a source blocked on a frozen X or audio server) is
/// given a moment, then the servers are killed, which unblocks it.
async fn teardown(parts: &mut Parts) {
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
    parts.browser = None;
    parts.audio = None;
    parts.display = None;
}
