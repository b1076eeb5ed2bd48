//! livekit-recorder: records a web page, or a LiveKit room through a layout page, to MP4 or RTMP.
//!
//! # Theory of operation
//! A recording is a [`session`]: a virtual X display ([`display`], Xvfb) and a private audio
//! server ([`audio`], PulseAudio with a null sink) host a Chromium ([`browser`], driven over
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

pub mod audio;
pub mod browser;
pub mod bus;
pub mod cli;
pub mod config;
pub mod display;
pub mod egress;
pub mod health;
pub mod options;
pub mod pipeline;
pub mod process;
pub mod proto;
pub mod psrpc;
pub mod request;
pub mod service;
pub mod session;
pub mod signals;
pub mod standalone;
pub mod template;
pub mod templates;
pub mod upload;
pub mod util;
