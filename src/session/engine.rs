//! What the recording phases drive: the display, the audio server, the browser and the pipeline,
//! seen as one [`Engine`]. [`Machine`] is the real one (processes and a GStreamer pipeline); the
//! phase logic in `record` only sees the trait, so its tests drive a scripted engine instead.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::watchdog::{Alarm, Watchdog};
use super::{SessionContext, SessionError};
use crate::audio::AudioServer;
use crate::browser::{Browser, BrowserOptions, ConsoleMessage};
use crate::display::Display;
use crate::pipeline::{Pipeline, PipelineError, PipelineEvent, PipelineSpec, Sinks};
use crate::process::Child;
use crate::request::RecordingSpec;
use crate::template;

/// The page's console messages (only read for pages with markers).
pub(super) type Console = mpsc::Receiver<ConsoleMessage>;

/// How long the audio sink may take to deliver its first block.
const AUDIO_WARM_UP: Duration = Duration::from_secs(3);
/// How often a template page is checked for an error while it has not started.
const PAGE_ERROR_POLL: Duration = Duration::from_millis(500);
/// How long the pipeline may take to stop before its servers are killed under it.
const PIPELINE_STOP_WAIT: Duration = Duration::from_secs(3);

/// Something that happened to the parts on their own, while the session waits or records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Happening {
    /// The pipeline reported an event (`None`: its bus closed). Only once it plays.
    Pipeline(Option<PipelineEvent>),
    /// A process exited: its death note.
    Died(String),
    /// The watchdog found the page or the screen dead.
    Alarm(Alarm),
    /// The page shows an error (its `div.error`). Only before it plays, for pages with markers.
    PageError(String),
}

/// The parts of a recording as the phases see them. Every method is cancel-safe where the phases
/// `select!` on it ([`Engine::next`], [`Engine::died`]).
pub(super) trait Engine: Send + Sync {
    /// Starts the parts, loads `url` and builds the pipeline; the page's console comes back.
    /// Parts started before a failure stay for [`Engine::teardown`].
    fn start(&mut self, url: &str) -> impl Future<Output = Result<Console, SessionError>> + Send;
    /// Starts capturing: from here on, the recording has started.
    fn play(&mut self, timeout: Duration)
        -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// The next thing that happens to the parts; never, if nothing does.
    fn next(&mut self) -> impl Future<Output = Happening> + Send;
    /// Resolves when any started process exits, with its death note.
    fn died(&self) -> impl Future<Output = String> + Send;
    /// The first started part (display, audio, browser) that has exited, if any.
    fn dead_part(&self) -> Option<String>;
    fn add_output(&mut self, url: &str) -> Result<(), PipelineError>;
    fn remove_output(
        &mut self,
        url: &str,
    ) -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// Ends the recording with EOS and waits (up to `timeout`) until the outputs are finished.
    fn finish(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// Stops every part that was started and waits until their processes are gone.
    fn teardown(&mut self) -> impl Future<Output = ()> + Send;
}

/// The real parts: the X server (Xorg or Xvfb), PulseAudio, Chromium and the GStreamer pipeline, each started only
/// once the one before it runs.
pub(super) struct Machine {
    spec: RecordingSpec,
    ctx: SessionContext,
    markers: bool,
    display: Option<Display>,
    audio: Option<AudioServer>,
    browser: Option<Browser>,
    pipeline: Option<Pipeline>,
    /// Watches the page (and, once playing, the screen).
    watchdog: Option<Watchdog>,
    playing: bool,
}

impl Machine {
    pub(super) fn new(spec: &RecordingSpec, ctx: &SessionContext) -> Self {
        Self {
            spec: spec.clone(),
            ctx: ctx.clone(),
            markers: super::record::has_markers(spec),
            display: None,
            audio: None,
            browser: None,
            pipeline: None,
            watchdog: None,
            playing: false,
        }
    }

    fn children(&self) -> [Option<&Child>; 3] {
        [
            self.display.as_ref().map(Display::child),
            self.audio.as_ref().map(AudioServer::child),
            self.browser.as_ref().map(Browser::child),
        ]
    }

    fn running_pipeline(&self) -> Result<&Pipeline, PipelineError> {
        self.pipeline
            .as_ref()
            .ok_or_else(|| PipelineError::Runtime("pipeline not built".into()))
    }
}

impl Engine for Machine {
    async fn start(&mut self, url: &str) -> Result<Console, SessionError> {
        let o = self.spec.options;
        let config = &self.ctx.config;
        // Audio first: its sink needs the longest to deliver (see AudioServer::warm_up).
        let audio = self
            .audio
            .insert(AudioServer::start(o.audio_frequency).await?);
        let warm_up = audio.warm_up(AUDIO_WARM_UP);
        let display = self
            .display
            .insert(Display::start(o.width, o.height, o.depth, o.framerate).await?);
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
            console: self.markers,
        })
        .await?;
        let browser = self.browser.insert(browser);
        browser.navigate(url).await?;
        if self.markers {
            if let Some(text) = browser.eval_string(template::ERROR_PROBE).await? {
                if !text.trim().is_empty() {
                    return Err(SessionError::PageError(text.trim().to_owned()));
                }
            }
        }
        // A page that hangs or crashes before START would otherwise be waited on forever.
        self.watchdog = Some(Watchdog::start(browser.monitor(), &config.watchdog, None));
        let out = &self.spec.output;
        self.pipeline = Some(Pipeline::build(&PipelineSpec {
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

    async fn play(&mut self, timeout: Duration) -> Result<(), PipelineError> {
        let pipeline = self
            .pipeline
            .as_mut()
            .ok_or_else(|| PipelineError::Runtime("pipeline not built".into()))?;
        pipeline.play(timeout).await?;
        self.playing = true;
        if let Some(browser) = &self.browser {
            self.watchdog = Some(Watchdog::start(
                browser.monitor(),
                &self.ctx.config.watchdog,
                Some(pipeline.video_clock()),
            ));
        }
        Ok(())
    }

    async fn next(&mut self) -> Happening {
        let Self {
            watchdog,
            display,
            audio,
            browser,
            pipeline,
            markers,
            playing,
            ..
        } = self;
        let children = [
            display.as_ref().map(Display::child),
            audio.as_ref().map(AudioServer::child),
            browser.as_ref().map(Browser::child),
        ];
        tokio::select! {
            note = any_died(children) => Happening::Died(note),
            alarm = alarm_or_never(watchdog.as_mut()) => Happening::Alarm(alarm),
            text = page_error_of(browser.as_ref(), *markers && !*playing) => Happening::PageError(text),
            ev = pipeline_event_of(pipeline.as_mut(), *playing) => Happening::Pipeline(ev),
        }
    }

    async fn died(&self) -> String {
        any_died(self.children()).await
    }

    fn dead_part(&self) -> Option<String> {
        self.children()
            .into_iter()
            .flatten()
            .find_map(|c| c.exit_status().map(|s| c.death_note(&s)))
    }

    fn add_output(&mut self, url: &str) -> Result<(), PipelineError> {
        self.running_pipeline()?.add_output(url)
    }

    async fn remove_output(&mut self, url: &str) -> Result<(), PipelineError> {
        self.running_pipeline()?.remove_output(url).await
    }

    async fn finish(&mut self, timeout: Duration) -> Result<(), PipelineError> {
        match self.pipeline.as_mut() {
            Some(p) => p.finish(timeout).await,
            None => Err(PipelineError::Runtime("pipeline not built".into())),
        }
    }

    /// The pipeline first: one that cannot stop (a source blocked on a frozen X or audio server)
    /// is given a moment, then the servers are killed, which unblocks it.
    async fn teardown(&mut self) {
        self.watchdog = None;
        self.playing = false;
        if let Some(p) = self.pipeline.take() {
            if !p.dispose(PIPELINE_STOP_WAIT).await {
                tracing::warn!("pipeline still stopping; stopping its servers under it");
            }
        }
        let browser = async {
            if let Some(b) = self.browser.as_mut() {
                if let Err(e) = b.stop().await {
                    tracing::error!(error = %e, "Chromium teardown");
                }
            }
        };
        let audio = async {
            if let Some(a) = self.audio.as_mut() {
                if let Err(e) = a.stop().await {
                    tracing::error!(error = %e, "PulseAudio teardown");
                }
            }
        };
        let display = async {
            if let Some(d) = self.display.as_mut() {
                if let Err(e) = d.stop().await {
                    tracing::error!(error = %e, "X server teardown");
                }
            }
        };
        tokio::join!(browser, audio, display);
    }
}

async fn alarm_or_never(watchdog: Option<&mut Watchdog>) -> Alarm {
    match watchdog {
        Some(w) => w.alarm().await,
        None => std::future::pending().await,
    }
}

async fn pipeline_event_of(
    pipeline: Option<&mut Pipeline>,
    playing: bool,
) -> Option<PipelineEvent> {
    match pipeline {
        Some(p) if playing => p.next_event().await,
        _ => std::future::pending().await,
    }
}

async fn page_error_of(browser: Option<&Browser>, watch: bool) -> String {
    match browser {
        Some(b) if watch => page_error(b).await,
        _ => std::future::pending().await,
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

/// Resolves with a death note when any of the started processes exits.
async fn any_died([d, a, b]: [Option<&Child>; 3]) -> String {
    tokio::select! {
        n = watch(d) => n,
        n = watch(a) => n,
        n = watch(b) => n,
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
