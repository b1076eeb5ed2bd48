//! The GStreamer graph of a recording: X display and PulseAudio monitor in, H.264 + AAC out, into a
//! crash-safe fragmented MP4 or an FLV stream per RTMP URL.
//!
//! ```text
//! ximagesrc -> capsfilter(fps) -> queue -> videoconvert -> capsfilter(I420) -> x264enc
//!           -> capsfilter(profile) -> h264parse -> queue --\
//!                                                           mux -> filesink | tee -> queue -> rtmp2sink ...
//! pulsesrc -> audioresample -> capsfilter(rate, 2ch) -> audioconvert -> avenc_aac
//!          -> aacparse -> queue --------------------------/
//! ```
//!
//! The bus is read by a task that turns messages into [`PipelineEvent`]s. Stopping sends EOS and
//! waits for it to reach the sink, so that the muxer finishes the file; dropping a [`Pipeline`]
//! sets it to NULL.

pub mod encoder;
pub mod phase;
pub mod remux;
pub mod rtmp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;

use crate::options::Options;

/// How long mp4mux fragments are; also how much a killed recording can lose at most.
const FRAGMENT_MS: u32 = 1000;
/// How long the page's screen updates are watched for the capture's phase (at most; it stops
/// after 10 updates, 0.33 s at 30 fps, and after 0.2 s on a still page).
const PHASE_WINDOW: Duration = Duration::from_millis(500);
/// Queues between the encoders and the muxer hold up to this much.
const QUEUE_TIME: u64 = 3_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer init failed: {0}")]
    Init(String),
    #[error("missing GStreamer element {0} (is its plugin installed?)")]
    MissingElement(String),
    #[error("could not build the pipeline: {0}")]
    Build(String),
    #[error("pipeline did not start: {0}")]
    Start(String),
    #[error("{0}")]
    Runtime(String),
    #[error("pipeline did not finish within {0:?}")]
    EosTimeout(Duration),
    /// An RTMP output request that cannot be done (the original's texts).
    #[error("{0}")]
    Output(String),
}

impl From<gst::glib::BoolError> for PipelineError {
    fn from(e: gst::glib::BoolError) -> Self {
        Self::Build(e.to_string())
    }
}

impl From<gst::PadLinkError> for PipelineError {
    fn from(e: gst::PadLinkError) -> Self {
        Self::Build(format!("pad link: {e:?}"))
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), PipelineError> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        guard_against_x_io_errors();
        gst::init().map_err(|e| e.to_string())
    })
    .clone()
    .map_err(PipelineError::Init)
}

/// Xlib's default reaction to a lost X server (the session's Xvfb died) is `exit(1)`, from
/// whichever thread noticed: the screen grabber would take the whole recorder (and in service
/// mode the daemon) down with it. This replaces it, process-wide, with a handler that parks the
/// grabbing thread instead; the session sees the dead Xvfb, pushes EOS past the parked branch
/// and finishes the file.
fn guard_against_x_io_errors() {
    type Handler = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
    unsafe extern "C" fn park_forever(_display: *mut libc::c_void) -> libc::c_int {
        tracing::error!("connection to the X server lost; parking the screen grabber");
        loop {
            std::thread::park();
        }
    }
    // SAFETY: dlopen/dlsym with valid C strings; the symbol has the C signature
    // `XIOErrorHandler XSetIOErrorHandler(XIOErrorHandler)`. The library handle is kept open
    // for the life of the process, as libX11 is by the X plugins anyway.
    unsafe {
        let lib = libc::dlopen(c"libX11.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if lib.is_null() {
            tracing::warn!("libX11 not found: a lost X server would end the process");
            return;
        }
        let sym = libc::dlsym(lib, c"XSetIOErrorHandler".as_ptr());
        if sym.is_null() {
            tracing::warn!("XSetIOErrorHandler not found: a lost X server would end the process");
            return;
        }
        let set: unsafe extern "C" fn(Option<Handler>) -> Option<Handler> =
            std::mem::transmute(sym);
        set(Some(park_forever));
    }
}

/// When the screen capture last delivered a frame: a frozen X server (or one stopped with
/// SIGSTOP) blocks the grabber, and no error is ever posted.
#[derive(Debug, Clone)]
pub struct VideoClock {
    origin: std::time::Instant,
    /// Nanoseconds from `origin` to the last frame.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for VideoClock {
    fn default() -> Self {
        Self {
            origin: std::time::Instant::now(),
            last: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl VideoClock {
    /// Ticks on every buffer leaving `element` (the capture's first element).
    fn watch(&self, element: &gst::Element) {
        let Some(pad) = element.static_pad("src") else {
            return;
        };
        let clock = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            clock.tick();
            gst::PadProbeReturn::Ok
        });
    }

    fn tick(&self) {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the last frame came.
    pub fn since_last_frame(&self) -> Duration {
        let last = Duration::from_nanos(self.last.load(std::sync::atomic::Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Where the encoded recording goes: an MP4 file, FLV to RTMP URLs, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sinks {
    pub file: Option<PathBuf>,
    /// `Some` (even empty) when the recording streams: URLs can be added while it runs.
    pub rtmp: Option<Vec<String>>,
}

/// What to capture and how to encode it.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub display: String,
    pub pulse_server: String,
    pub pulse_device: String,
    pub options: Options,
    pub sinks: Sinks,
}

/// What the pipeline reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineEvent {
    /// The pipeline reached PLAYING.
    Playing,
    /// EOS reached the sink: the output is finished.
    Eos,
    /// An element failed.
    Error { element: String, message: String },
    /// An RTMP output failed (could not connect, or dropped); the others go on.
    OutputFailed { url: String, message: String },
}

/// A built pipeline and its bus reader.
pub struct Pipeline {
    /// Released on a thread of its own (see [`Self::dispose`]); `None` only once released.
    pipeline: Option<gst::Pipeline>,
    /// The muxers (MP4 and/or FLV), where EOS is pushed when a branch is stuck.
    muxes: Vec<gst::Element>,
    events: mpsc::UnboundedReceiver<PipelineEvent>,
    outputs: Option<Arc<rtmp::Outputs>>,
    /// Events that arrived while waiting for something else, handed out first.
    deferred: std::collections::VecDeque<PipelineEvent>,
    playing: bool,
    /// When the screen last delivered a frame.
    video_clock: VideoClock,
    /// The X display captured, and its frame period (for the capture's phase, [`phase`]).
    display: String,
    period_ns: u64,
}

impl Pipeline {
    /// Builds the graph for `spec`; nothing runs until [`Self::play`].
    pub fn build(spec: &PipelineSpec) -> Result<Self, PipelineError> {
        init()?;
        let o = &spec.options;
        let pipeline = gst::Pipeline::with_name("pipeline");
        // The system's monotonic clock, not the audio server's: the screen is sampled on real
        // time, and pulsesrc slaves its timestamps to it.
        pipeline.use_clock(Some(&gst::SystemClock::obtain()));

        // Video: the whole screen at the requested rate.
        let framerate = gst::Fraction::new(
            i32::try_from(o.framerate).expect("framerate is checked to be small"),
            1,
        );
        let vsrc = make("ximagesrc", "video_src")?;
        vsrc.set_property("display-name", &spec.display);
        vsrc.set_property("use-damage", false);
        vsrc.set_property("show-pointer", false);
        let vrate = capsfilter(
            "video_rate",
            gst::Caps::builder("video/x-raw")
                .field("framerate", framerate)
                .build(),
        )?;
        let video_clock = VideoClock::default();
        video_clock.watch(&vrate);
        let vqueue_raw = queue("video_raw_queue", 0)?;
        let vconvert = make("videoconvert", "video_convert")?;
        vconvert.set_property("n-threads", 2u32);
        let vformat = capsfilter(
            "video_format",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )?;
        let venc = make("x264enc", "video_enc")?;
        guard_frames(&venc, o.framerate);
        let x264 = encoder::x264_properties(o, std::env::var(encoder::PRESET_ENV).ok().as_deref());
        for (name, value) in &x264 {
            venc.set_property_from_str(name, value);
        }
        tracing::info!(encoder = ?encoder::describe(&x264), "video encoder");
        let vprofile = capsfilter(
            "video_profile",
            gst::Caps::builder("video/x-h264")
                .field("profile", o.profile.as_str())
                .build(),
        )?;
        let vparse = make("h264parse", "video_parse")?;
        let vqueue = queue("video_queue", QUEUE_TIME)?;

        // Audio: the session sink's monitor at the requested rate.
        let asrc = make("pulsesrc", "audio_src")?;
        asrc.set_property("server", &spec.pulse_server);
        asrc.set_property("device", &spec.pulse_device);
        let aresample = make("audioresample", "audio_resample")?;
        let arate = capsfilter(
            "audio_rate",
            gst::Caps::builder("audio/x-raw")
                .field(
                    "rate",
                    i32::try_from(o.audio_frequency).expect("frequency is checked to be small"),
                )
                .field("channels", 2i32)
                .build(),
        )?;
        // avenc_aac wants planar float: the converter goes right before it.
        let aconvert = make("audioconvert", "audio_convert")?;
        let aenc = make("avenc_aac", "audio_enc")?;
        aenc.set_property(
            "bitrate",
            i32::try_from(o.audio_bitrate * 1000).expect("bitrate is checked to be small"),
        );
        let aparse = make("aacparse", "audio_parse")?;
        let aqueue = queue("audio_queue", QUEUE_TIME)?;

        let video = [
            &vsrc,
            &vrate,
            &vqueue_raw,
            &vconvert,
            &vformat,
            &venc,
            &vprofile,
            &vparse,
            &vqueue,
        ];
        let audio = [
            &asrc, &aresample, &arate, &aconvert, &aenc, &aparse, &aqueue,
        ];
        pipeline.add_many(video)?;
        pipeline.add_many(audio)?;
        gst::Element::link_many(video)?;
        gst::Element::link_many(audio)?;

        // Each muxer with its request pad templates for video and audio.
        let mut muxes: Vec<(gst::Element, &str, &str)> = Vec::new();
        if let Some(path) = &spec.sinks.file {
            let mux = make("mp4mux", "mux")?;
            // Fragmented while recording: a killed recorder leaves a playable file.
            mux.set_property("fragment-duration", FRAGMENT_MS);
            let sink = make("filesink", "file_sink")?;
            sink.set_property(
                "location",
                path.to_str().ok_or_else(|| {
                    PipelineError::Build(format!("output path {} is not UTF-8", path.display()))
                })?,
            );
            sink.set_property("sync", false);
            sink.set_property("async", false);
            pipeline.add_many([&mux, &sink])?;
            mux.link(&sink)?;
            muxes.push((mux, "video_%u", "audio_%u"));
        }
        let mut outputs = None;
        if let Some(urls) = &spec.sinks.rtmp {
            let mux = make("flvmux", "flv_mux")?;
            mux.set_property("streamable", true);
            let tee = make("tee", "tee")?;
            tee.set_property("allow-not-linked", true);
            pipeline.add_many([&mux, &tee])?;
            mux.link(&tee)?;
            let branches = rtmp::Outputs::new(&pipeline, &tee);
            for url in urls {
                branches.add(url)?;
            }
            outputs = Some(Arc::new(branches));
            muxes.push((mux, "video", "audio"));
        }
        if muxes.is_empty() {
            return Err(PipelineError::Build("no output".into()));
        }
        let video_to: Vec<_> = muxes.iter().map(|(m, v, _)| (m, *v)).collect();
        let audio_to: Vec<_> = muxes.iter().map(|(m, _, a)| (m, *a)).collect();
        feed_muxes(&pipeline, &vqueue, &video_to, "video")?;
        feed_muxes(&pipeline, &aqueue, &audio_to, "audio")?;
        let mux_elements: Vec<gst::Element> = muxes.into_iter().map(|(m, _, _)| m).collect();

        // Messages are read in the posting thread: an RTMP branch's error must be acted on
        // before it reaches the tee (see rtmp.rs); everything goes on to the session's channel.
        let (tx, events) = mpsc::unbounded_channel();
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let pipeline_name = pipeline.name().to_string();
        let branches = outputs.clone();
        bus.set_sync_handler(move |_, msg| {
            if let Some(event) = to_event(msg, &pipeline_name, branches.as_deref()) {
                let _ = tx.send(event);
            }
            gst::BusSyncReply::Drop
        });
        Ok(Self {
            pipeline: Some(pipeline),
            muxes: mux_elements,
            events,
            outputs,
            deferred: std::collections::VecDeque::new(),
            playing: false,
            video_clock,
            display: spec.display.clone(),
            period_ns: 1_000_000_000 / u64::from(o.framerate.max(1)),
        })
    }

    /// Sets the pipeline playing and waits until it is (or fails).
    pub async fn play(&mut self, timeout: Duration) -> Result<(), PipelineError> {
        self.lock_phase().await;
        self.graph().set_state(gst::State::Playing).map_err(|e| {
            PipelineError::Start(self.first_error().unwrap_or_else(|| e.to_string()))
        })?;
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(PipelineEvent::Playing) => return Ok(()),
                    Some(PipelineEvent::Error { element, message }) => {
                        return Err(PipelineError::Start(format!("{element}: {message}")))
                    }
                    Some(PipelineEvent::Eos) => {
                        return Err(PipelineError::Start("end of stream before start".into()))
                    }
                    // One RTMP URL failing does not stop the others: the session handles it.
                    Some(ev @ PipelineEvent::OutputFailed { .. }) => self.deferred.push_back(ev),
                    None => return Err(PipelineError::Start("bus closed".into())),
                }
            }
        };
        let r = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| PipelineError::Start(format!("not playing after {timeout:?}")))?;
        self.playing = r.is_ok();
        // A stall counts from here on.
        self.video_clock.tick();
        r
    }

    /// Places the screen reads half a frame period away from the page's updates ([`phase`]):
    /// watches the display for up to [`PHASE_WINDOW`], then sets the base time the pipeline
    /// starts with. Without a steady phase (a still page, Xvfb's 60 Hz, no DAMAGE extension) the
    /// pipeline picks its base time as usual.
    async fn lock_phase(&self) {
        if !phase::enabled(std::env::var(phase::PHASE_ENV).ok().as_deref()) {
            return;
        }
        let clock = gst::SystemClock::obtain();
        let now = move || clock.time().nseconds();
        let Some(update) =
            phase::watch(self.display.clone(), self.period_ns, PHASE_WINDOW, now).await
        else {
            return;
        };
        let graph = self.graph();
        let now = gst::SystemClock::obtain().time().nseconds();
        let base = phase::base_time(now, self.period_ns, update.offset_ns);
        // The application sets the base time: the pipeline keeps it when it goes to PLAYING.
        graph.set_start_time(gst::ClockTime::NONE);
        graph.set_base_time(gst::ClockTime::from_nseconds(base));
        tracing::debug!(
            updates = update.updates,
            update_offset_ms = update.offset_ns as f64 / 1e6,
            spread_ms = update.spread_ns as f64 / 1e6,
            read_offset_ms = (base % self.period_ns) as f64 / 1e6,
            "capture phase locked"
        );
    }

    /// When the screen last delivered a frame (the session's "no video" watchdog reads it).
    pub fn video_clock(&self) -> VideoClock {
        self.video_clock.clone()
    }

    /// The next event from the bus; `None` once the bus is gone.
    pub async fn next_event(&mut self) -> Option<PipelineEvent> {
        if let Some(ev) = self.deferred.pop_front() {
            return Some(ev);
        }
        self.events.recv().await
    }

    /// Ends the recording: sends EOS and waits until the sink has it, so the output is finished.
    /// If a branch is stuck (its source died), EOS is pushed into the muxer directly halfway
    /// through `timeout`. The pipeline keeps its state; [`Self::shutdown`] stops it.
    pub async fn finish(&mut self, timeout: Duration) -> Result<(), PipelineError> {
        if !self.playing {
            return Ok(());
        }
        let pipeline: gst::Pipeline = self.graph().clone();
        // Detached: a source blocked on a frozen server must not block us.
        drop(tokio::task::spawn_blocking(move || {
            pipeline.send_event(gst::event::Eos::new())
        }));
        let half = timeout / 2;
        match self.wait_eos(half).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                tracing::warn!("EOS did not reach the sink in time; pushing it into the muxer")
            }
            Err(e) => {
                tracing::warn!(error = %e, "pipeline error while finishing; pushing EOS into the muxer")
            }
        }
        let muxes = self.muxes.clone();
        drop(tokio::task::spawn_blocking(move || {
            for pad in muxes.iter().flat_map(|m| m.sink_pads()) {
                pad.send_event(gst::event::Eos::new());
            }
        }));
        match self.wait_eos(half).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PipelineError::EosTimeout(timeout)),
            Err(e) => Err(e),
        }
    }

    /// Streams to one more RTMP URL.
    pub fn add_output(&self, url: &str) -> Result<(), PipelineError> {
        match &self.outputs {
            Some(o) => o.add(url),
            None => Err(PipelineError::Output(
                "cannot add rtmp output to file recording".into(),
            )),
        }
    }

    /// Stops streaming to an RTMP URL.
    pub async fn remove_output(&self, url: &str) -> Result<(), PipelineError> {
        match &self.outputs {
            Some(o) => o.remove(url).await,
            None => Err(PipelineError::Output(
                "cannot remove rtmp output from file recording".into(),
            )),
        }
    }

    /// Waits up to `timeout` for EOS; Ok(false) on timeout, Err on an element error.
    async fn wait_eos(&mut self, timeout: Duration) -> Result<bool, PipelineError> {
        let wait = async {
            while let Some(ev) = self.events.recv().await {
                match ev {
                    PipelineEvent::Eos => return Ok(true),
                    PipelineEvent::Error { element, message } => {
                        return Err(PipelineError::Runtime(format!("{element}: {message}")))
                    }
                    PipelineEvent::Playing | PipelineEvent::OutputFailed { .. } => {}
                }
            }
            Ok(false)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Ok(false))
    }

    /// Stops the pipeline (NULL) and releases it, on a thread of its own: stopping and releasing
    /// close the X and audio connections, which blocks (or, for a lost X server, parks) the
    /// calling thread when a server is frozen or gone, and that must never be a runtime thread.
    /// Call it before the servers are stopped. Returns false if that has not finished within
    /// `timeout`; it goes on in the background.
    pub async fn dispose(self, timeout: Duration) -> bool {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        self.release(Some(done_tx));
        tokio::time::timeout(timeout, done).await.is_ok()
    }

    /// The graph; present until released.
    fn graph(&self) -> &gst::Pipeline {
        self.pipeline
            .as_ref()
            .expect("the pipeline is taken only when released, which consumes self")
    }

    fn release(mut self, done: Option<tokio::sync::oneshot::Sender<()>>) {
        self.playing = false;
        if let Some(pipeline) = self.pipeline.take() {
            release_on_thread(pipeline, done);
        }
    }

    fn first_error(&self) -> Option<String> {
        let bus = self.graph().bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            release_on_thread(pipeline, None);
        }
    }
}

/// Sets `pipeline` to NULL and drops it on a detached thread; signals `done` when finished.
fn release_on_thread(pipeline: gst::Pipeline, done: Option<tokio::sync::oneshot::Sender<()>>) {
    let spawned = std::thread::Builder::new()
        .name("pipeline-release".into())
        .spawn(move || {
            if let Err(e) = pipeline.set_state(gst::State::Null) {
                tracing::warn!(error = %e, "could not set the pipeline to NULL");
            }
            if let Some(bus) = pipeline.bus() {
                bus.unset_sync_handler();
            }
            drop(pipeline);
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a thread to release the pipeline");
    }
}

fn to_event(
    msg: &gst::Message,
    pipeline_name: &str,
    outputs: Option<&rtmp::Outputs>,
) -> Option<PipelineEvent> {
    use gst::MessageView;
    match msg.view() {
        MessageView::Eos(_) => Some(PipelineEvent::Eos),
        MessageView::Error(e) => {
            let element = e
                .src()
                .map(|s| s.name().to_string())
                .unwrap_or_else(|| "pipeline".into());
            // An RTMP sink's texts may name its URL: never with the stream key.
            let scrub = |t: String| outputs.map_or_else(|| t.clone(), |o| o.scrub(&t));
            let message = scrub(e.error().to_string());
            let details = scrub(e.debug().map(|d| d.to_string()).unwrap_or_default());
            tracing::debug!(element, error = %message, debug = %details, "pipeline error");
            if let Some(branch) = outputs.and_then(|o| o.on_element_error(&element)) {
                return branch
                    .ok()
                    .map(|url| PipelineEvent::OutputFailed { url, message });
            }
            Some(PipelineEvent::Error {
                element,
                message: e.error().to_string(),
            })
        }
        MessageView::Warning(w) => {
            let element = w.src().map(|s| s.name().to_string()).unwrap_or_default();
            let scrub = |t: String| outputs.map_or_else(|| t.clone(), |o| o.scrub(&t));
            let warning = scrub(w.error().to_string());
            let details = scrub(w.debug().map(|d| d.to_string()).unwrap_or_default());
            tracing::debug!(element, warning, debug = %details, "pipeline warning");
            None
        }
        MessageView::StateChanged(s) => {
            let from_pipeline = s
                .src()
                .map(|src| src.name() == pipeline_name)
                .unwrap_or(false);
            (from_pipeline && s.current() == gst::State::Playing).then_some(PipelineEvent::Playing)
        }
        _ => None,
    }
}

pub(crate) fn make(factory: &str, name: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| PipelineError::MissingElement(factory.to_owned()))
}

fn capsfilter(name: &str, caps: gst::Caps) -> Result<gst::Element, PipelineError> {
    let f = make("capsfilter", name)?;
    f.set_property("caps", caps);
    Ok(f)
}

/// A queue bounded by time only (`max_time` ns; 0 = a short raw-frame queue of 3 buffers).
pub(crate) fn queue(name: &str, max_time: u64) -> Result<gst::Element, PipelineError> {
    let q = make("queue", name)?;
    if max_time == 0 {
        q.set_property("max-size-buffers", 3u32);
        q.set_property("max-size-bytes", 0u32);
        q.set_property("max-size-time", 0u64);
    } else {
        q.set_property("max-size-time", max_time);
        q.set_property("max-size-buffers", 0u32);
        q.set_property("max-size-bytes", 0u32);
    }
    Ok(q)
}

/// Guards the frames entering the encoder: each frame's timestamp is moved to the nearest slot
/// of the frame-rate grid (at most half a frame), and a frame that lands on a slot already used
/// is dropped (the capture can stamp two frames alike, which the MP4 then stores
/// as a zero-length sample that players and ffmpeg reject as a non-monotonic DTS). Counts the
/// frames into the metrics, and the frames missing between them (a gap of more than one and a
/// half frame durations).
fn guard_frames(encoder: &gst::Element, framerate: u32) {
    let Some(pad) = encoder.static_pad("sink") else {
        return;
    };
    let rate = u64::from(framerate.max(1));
    let frame = 1_000_000_000 / rate;
    // (the first frame's timestamp, the last slot used; -1 before the first)
    let grid = std::sync::Mutex::new(None::<(u64, i64)>);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let m = crate::metrics::metrics();
        let pts = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
        let (Some(pts), Ok(mut grid)) = (pts, grid.lock()) else {
            m.frames_captured.inc();
            return gst::PadProbeReturn::Ok;
        };
        let (origin, last) = *grid.get_or_insert((pts, -1));
        // The nearest slot of the frame grid; a frame that lands on a slot already used (or
        // before it) is dropped.
        let slot =
            i64::try_from((pts.saturating_sub(origin) + frame / 2) / frame).unwrap_or(i64::MAX);
        if pts < origin || slot <= last {
            tracing::debug!(pts, slot, last, "frame with a repeated timestamp dropped");
            return gst::PadProbeReturn::Drop;
        }
        if last >= 0 && slot > last + 1 {
            m.frames_dropped
                .inc_by(u64::try_from(slot - last - 1).unwrap_or_default());
        }
        *grid = Some((origin, slot));
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let b = buffer.make_mut();
            let at = u64::try_from(slot).unwrap_or_default() * 1_000_000_000 / rate;
            b.set_pts(gst::ClockTime::from_nseconds(origin + at));
            b.set_duration(gst::ClockTime::from_nseconds(frame));
        }
        m.frames_captured.inc();
        gst::PadProbeReturn::Ok
    });
}

/// Links `from` to each muxer: directly when there is one, through a tee and a queue per muxer
/// when the encoded stream goes to a file and to RTMP at once.
fn feed_muxes(
    pipeline: &gst::Pipeline,
    from: &gst::Element,
    muxes: &[(&gst::Element, &str)],
    kind: &str,
) -> Result<(), PipelineError> {
    if let [(mux, template)] = muxes {
        return link_to_mux(from, mux, template);
    }
    let tee = make("tee", &format!("{kind}_tee"))?;
    pipeline.add(&tee)?;
    from.link(&tee)?;
    for (i, (mux, template)) in muxes.iter().enumerate() {
        let q = queue(&format!("{kind}_branch_queue_{i}"), QUEUE_TIME)?;
        pipeline.add(&q)?;
        tee.link(&q)?;
        link_to_mux(&q, mux, template)?;
    }
    Ok(())
}

fn link_to_mux(
    from: &gst::Element,
    mux: &gst::Element,
    template: &str,
) -> Result<(), PipelineError> {
    let mux_pad = mux
        .request_pad_simple(template)
        .ok_or_else(|| PipelineError::Build(format!("{} gave no {template} pad", mux.name())))?;
    let src = from.static_pad("src").expect("queues have a src pad");
    src.link(&mux_pad)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_repeated_timestamps_never_reach_the_encoder() {
        init().unwrap();
        let element = make("identity", "guarded").unwrap();
        guard_frames(&element, 30);
        let passed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = passed.clone();
        element
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let pts = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
                seen.lock().unwrap().push(pts.unwrap_or(u64::MAX));
                gst::PadProbeReturn::Drop
            });
        let src = gst::Pad::builder(gst::PadDirection::Src)
            .name("feed")
            .build();
        src.link(&element.static_pad("sink").unwrap()).unwrap();
        src.set_active(true).unwrap();
        element.set_state(gst::State::Playing).unwrap();
        src.push_event(gst::event::StreamStart::new("test"));
        src.push_event(gst::event::Caps::new(&gst::Caps::new_empty_simple(
            "video/x-raw",
        )));
        src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()));
        let frame = 33_333_333u64;
        let ms = 1_000_000u64;
        // Repeated, backwards, 1 ms late, then jittered frames (17 ms and 52 ms after the 5th).
        for pts in [
            0,
            0,
            frame,
            frame,
            2 * frame,
            frame,
            3 * frame,
            3 * frame + ms,
            4 * frame,
            4 * frame + 17 * ms,
            4 * frame + 52 * ms,
        ] {
            let mut buffer = gst::Buffer::new();
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_nseconds(pts));
            let _ = src.push(buffer);
        }
        element.set_state(gst::State::Null).unwrap();
        let grid: Vec<u64> = (0..7).map(|i| i * 1_000_000_000 / 30).collect();
        assert_eq!(
            *passed.lock().unwrap(),
            grid,
            "on the frame grid; the repeated, backwards and 1 ms late frames dropped"
        );
    }
}
