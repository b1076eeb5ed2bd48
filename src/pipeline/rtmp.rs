//! RTMP outputs: one branch per URL behind the FLV muxer's tee (`tee -> queue_N -> sink_N`),
//! each isolated from the others.
//!
//! A branch whose server refuses or drops the connection is marked failed from the bus's sync
//! handler, in the failing sink's own thread, before its error can travel back to the tee; a
//! probe on its tee pad then drops its data (the tee sees success), so the other URLs go on. The
//! session is told ([`super::PipelineEvent::OutputFailed`]) and removes the branch.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{make, queue, PipelineError, QUEUE_TIME};
use crate::policy::{redact_stream_url as redact, MAX_RTMP_OUTPUTS};

/// The original recorder's error texts, word for word.
pub const ALREADY_EXISTS: &str = "output already exists";
pub const NOT_FOUND: &str = "output not found";

/// How long unlinking a branch may wait for its tee pad to be idle.
const UNLINK_TIMEOUT: Duration = Duration::from_secs(2);

struct Branch {
    id: u32,
    url: String,
    queue: gst::Element,
    sink: gst::Element,
    tee_pad: gst::Pad,
    failed: Arc<AtomicBool>,
}

/// The RTMP branches of a pipeline.
pub struct Outputs {
    pipeline: gst::Pipeline,
    tee: gst::Element,
    branches: Mutex<Vec<Branch>>,
    next_id: AtomicU32,
}

impl Outputs {
    pub fn new(pipeline: &gst::Pipeline, tee: &gst::Element) -> Self {
        Self {
            pipeline: pipeline.clone(),
            tee: tee.clone(),
            branches: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Branch>> {
        self.branches
            .lock()
            .expect("the branch list lock is never poisoned")
    }

    /// Adds a branch for `url`, running if the pipeline is. A branch added while recording asks
    /// the encoder for a keyframe, so its stream starts decodable.
    pub fn add(&self, url: &str) -> Result<(), PipelineError> {
        // The last check before the URL reaches C: the front-ends have checked it against the
        // configured policy already.
        crate::policy::check_rtmp_url(url, &crate::policy::NetworkPolicy::default())
            .map_err(|e| PipelineError::Output(e.to_string()))?;
        let mut branches = self.lock();
        if branches.iter().any(|b| b.url == url) {
            return Err(PipelineError::Output(ALREADY_EXISTS.into()));
        }
        if branches.len() >= MAX_RTMP_OUTPUTS {
            return Err(PipelineError::Output(
                crate::policy::PolicyError::TooManyRtmpOutputs.to_string(),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let q = queue(&format!("queue_{id}"), QUEUE_TIME)?;
        q.set_property_from_str("leaky", "downstream");
        let sink = make("rtmp2sink", &format!("sink_{id}"))?;
        sink.set_property("location", url);
        sink.set_property("sync", false);
        sink.set_property("async", false);
        self.pipeline.add_many([&q, &sink])?;
        q.link(&sink)?;
        sink.sync_state_with_parent()?;
        q.sync_state_with_parent()?;
        let tee_pad = self
            .tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| PipelineError::Build("tee gave no pad".into()))?;
        let failed = Arc::new(AtomicBool::new(false));
        let dropping = failed.clone();
        tee_pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                if dropping.load(Ordering::Acquire) {
                    gst::PadProbeReturn::Drop
                } else {
                    gst::PadProbeReturn::Ok
                }
            },
        );
        tee_pad.link(&q.static_pad("sink").expect("queues have a sink pad"))?;
        let running = self.pipeline.current_state() == gst::State::Playing;
        if running {
            let force_key_unit = gst::Structure::builder("GstForceKeyUnit")
                .field("all-headers", true)
                .build();
            tee_pad.push_event(gst::event::CustomUpstream::new(force_key_unit));
        }
        tracing::info!(output = %redact(url), "rtmp output added");
        branches.push(Branch {
            id,
            url: url.to_owned(),
            queue: q,
            sink,
            tee_pad,
            failed,
        });
        Ok(())
    }

    /// `text` (a GStreamer error or debug text) with every branch's URL in its redacted form.
    pub fn scrub(&self, text: &str) -> String {
        self.lock().iter().fold(text.to_owned(), |t, b| {
            if t.contains(&b.url) {
                t.replace(&b.url, &redact(&b.url))
            } else {
                t
            }
        })
    }

    /// Called from the bus's sync handler for an error from element `name`: if it belongs to a
    /// branch, marks the branch failed (its data is dropped from now on) and returns its URL.
    pub fn on_element_error(&self, name: &str) -> Option<Result<String, ()>> {
        let id: u32 = name
            .strip_prefix("queue_")
            .or_else(|| name.strip_prefix("sink_"))?
            .parse()
            .ok()?;
        let branches = self.lock();
        // An error from a branch already removed (or already failed) is noise.
        Some(match branches.iter().find(|b| b.id == id) {
            Some(b) if !b.failed.swap(true, Ordering::AcqRel) => Ok(b.url.clone()),
            _ => Err(()),
        })
    }

    /// Removes the branch for `url`: unlinks it from the tee when its pad is idle, then stops and
    /// drops its elements (on a blocking thread: a sink may be stuck connecting).
    pub async fn remove(&self, url: &str) -> Result<(), PipelineError> {
        let branch = {
            let mut branches = self.lock();
            let i = branches
                .iter()
                .position(|b| b.url == url)
                .ok_or_else(|| PipelineError::Output(NOT_FOUND.into()))?;
            branches.remove(i)
        };
        branch.failed.store(true, Ordering::Release);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        branch
            .tee_pad
            .add_probe(gst::PadProbeType::IDLE, move |pad, _| {
                if let Some(peer) = pad.peer() {
                    let _ = pad.unlink(&peer);
                }
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(());
                }
                gst::PadProbeReturn::Remove
            });
        if tokio::time::timeout(UNLINK_TIMEOUT, rx).await.is_err() {
            tracing::warn!(output = %redact(url), "tee pad never idle; removing the branch anyway");
        }
        let pipeline = self.pipeline.clone();
        let tee = self.tee.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _ = branch.sink.set_state(gst::State::Null);
            let _ = branch.queue.set_state(gst::State::Null);
            let _ = pipeline.remove_many([&branch.queue, &branch.sink]);
            tee.release_request_pad(&branch.tee_pad);
        });
        if tokio::time::timeout(UNLINK_TIMEOUT, done).await.is_err() {
            tracing::warn!(output = %redact(url), "rtmp sink slow to stop; left to finish in the background");
        }
        tracing::info!(output = %redact(url), "rtmp output removed");
        Ok(())
    }
}
