//! The recorder protocol's channel names. The Redis connection, its
//! subscriptions and the claim race are the shared [`crate::bus`].

pub use crate::bus::{Bus, BusError, Event, Message};

/// Reservations, server -> recorders.
pub const RESERVATION_CHANNEL: &str = "RESERVE_RECORDER";
/// Final `RecordingInfo`s, recorder -> servers.
pub const RESULT_CHANNEL: &str = "RECORDING_RESULT";

/// RPCs for recording `id`, server -> recorder.
pub fn request_channel(id: &str) -> String {
    format!("RECORDING_REQUEST_{id}")
}

/// Replies for recording `id`, recorder -> server.
pub fn response_channel(id: &str) -> String {
    format!("RECORDING_RESPONSE_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_livekits() {
        assert_eq!(request_channel("RR_abc"), "RECORDING_REQUEST_RR_abc");
        assert_eq!(response_channel("RR_abc"), "RECORDING_RESPONSE_RR_abc");
    }
}
