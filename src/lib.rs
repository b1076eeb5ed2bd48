//! livekit-recorder: records a web page, or a LiveKit room through a layout page, to MP4 or RTMP.
//!
//! # Theory of operation
//! A recording is a [`session`]: a virtual X display ([`display`]: Xorg with the dummy driver at
//! the recording's frame rate, or Xvfb) and a private audio server ([`audio`], PulseAudio with a
//! null sink) host a Chromium ([`browser`], driven over
//! DevTools) that shows the page; a GStreamer [`pipeline`] captures the screen and the sink's
//! monitor, encodes H.264 + AAC, and writes a fragmented (crash-safe) MP4 or streams FLV. Every
//! child process is [`process`]-supervised in its own process group and never outlives its
//! session.
//!
//! What to record comes from a `StartRecordingRequest` ([`proto`]), merged with the YAML
//! [`config`]'s defaults and validated into a [`request::RecordingSpec`]. [`standalone`] mode runs
//! one session from the environment and ends on a signal; [`service`] mode takes sessions from
//! livekit-server v0.15-v1.1 over Redis; [`egress`] mode is a recording worker of
//! livekit-server v1.5.1 and later, over [`psrpc`] on the same Redis.

pub(crate) mod audio;
pub(crate) mod browser;
pub(crate) mod bus;
pub mod cli;
pub mod config;
pub mod display;
pub(crate) mod egress;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod options;
pub(crate) mod pipeline;
/// The capture's phase lock, for the display tests.
pub use pipeline::phase as capture_phase;
pub(crate) mod policy;
pub(crate) mod process;
pub mod proto;
pub mod psrpc;
pub mod request;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod signals;
pub(crate) mod standalone;
pub(crate) mod template;
pub(crate) mod templates;
pub mod upload;
pub mod util;

/// Fuzzing of every outside input (proptest), run with the unit tests.
#[cfg(test)]
mod fuzz;
