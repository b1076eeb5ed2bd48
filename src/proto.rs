//! Protobuf types generated from `proto/` (prost), with protojson serde impls (pbjson).
//! Lint allowances for generated code are confined to this module.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

/// Package `livekit`: recording API and the internal Redis messages.
pub mod livekit {
    include!(concat!(env!("OUT_DIR"), "/livekit.rs"));
    include!(concat!(env!("OUT_DIR"), "/livekit.serde.rs"));
}
