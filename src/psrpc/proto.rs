//! Generated psrpc types (prost, no serde): the envelope of package `internal` and the egress
//! worker's messages of package `rpc`. `livekit.*` fields are [`livekit_protocol`] types.
//! Lint allowances for generated code are confined to this module.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

/// Package `internal` of livekit/psrpc: `Msg`, `Request`, `Response`, `ClaimRequest`,
/// `ClaimResponse`.
pub mod internal {
    include!(concat!(env!("OUT_DIR"), "/psrpc/internal.rs"));
}

/// Package `rpc` of livekit/protocol: `StartEgressRequest`, `ListActiveEgressRequest`,
/// `ListActiveEgressResponse`.
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/psrpc/rpc.rs"));
}

#[cfg(test)]
mod tests {
    use super::rpc::{start_egress_request::Request, StartEgressRequest};
    use prost::Message as _;

    /// A StartEgressRequest as livekit-server writes it, by field number:
    /// egress_id = 1, the request oneof (`oneof_tag`), room_id = 3, room_name = 18.
    fn start_request(oneof_tag: &[u8], body: &[u8]) -> Vec<u8> {
        [
            &[0x0a, 0x04][..],
            b"EG_1",
            oneof_tag,
            &[body.len() as u8],
            body,
            &[0x1a, 0x04], // 3 room_id
            b"RM_1",
            &[0x92, 0x01, 0x04], // 18 room_name: (18 << 3 | 2) = 146 as a varint
            b"room",
        ]
        .concat()
    }

    #[test]
    fn web_requests_decode() {
        // WebEgressRequest{url = 1: "https://x"}; web = 11: (11 << 3 | 2) = 0x5a.
        let web = [&[0x0a, 0x09][..], b"https://x"].concat();
        let r =
            StartEgressRequest::decode(start_request(&[0x5a], &web).as_slice()).expect("decodes");
        assert_eq!(r.egress_id, "EG_1");
        assert_eq!(r.room_id, "RM_1");
        assert_eq!(r.room_name, "room");
        match r.request {
            Some(Request::Web(w)) => assert_eq!(w.url, "https://x"),
            other => panic!("not a web request: {other:?}"),
        }
    }

    #[test]
    fn room_composite_requests_decode() {
        // RoomCompositeEgressRequest{room_name = 1: "room", layout = 2: "grid"}; room_composite = 5.
        let rc = [&[0x0a, 0x04][..], b"room", &[0x12, 0x04], b"grid"].concat();
        let r =
            StartEgressRequest::decode(start_request(&[0x2a], &rc).as_slice()).expect("decodes");
        match r.request {
            Some(Request::RoomComposite(rc)) => {
                assert_eq!(
                    (rc.room_name.as_str(), rc.layout.as_str()),
                    ("room", "grid")
                )
            }
            other => panic!("not a room composite request: {other:?}"),
        }
    }

    #[test]
    fn other_request_types_are_recognisable() {
        let body = [&[0x0a, 0x04][..], b"room"].concat();
        // track = 7, track_composite = 6, participant = 13.
        let track = StartEgressRequest::decode(start_request(&[0x3a], &body).as_slice());
        assert!(matches!(
            track.expect("decodes").request,
            Some(Request::Track(_))
        ));
        let tc = StartEgressRequest::decode(start_request(&[0x32], &body).as_slice());
        assert!(matches!(
            tc.expect("decodes").request,
            Some(Request::TrackComposite(_))
        ));
        let p = StartEgressRequest::decode(start_request(&[0x6a], &body).as_slice());
        assert!(matches!(
            p.expect("decodes").request,
            Some(Request::Participant(_))
        ));
        // egress = 16 (the unified request) and replay = 17: two-byte tags.
        let unified = StartEgressRequest::decode(start_request(&[0x82, 0x01], &body).as_slice());
        assert!(matches!(
            unified.expect("decodes").request,
            Some(Request::Egress(_))
        ));
        let replay = StartEgressRequest::decode(start_request(&[0x8a, 0x01], &body).as_slice());
        assert!(matches!(
            replay.expect("decodes").request,
            Some(Request::Replay(_))
        ));
        // A type newer than these (field 19): the oneof stays unset, the rest decodes.
        let newer = StartEgressRequest::decode(start_request(&[0x9a, 0x01], &body).as_slice())
            .expect("decodes");
        assert!(newer.request.is_none());
        assert_eq!(newer.room_name, "room");
    }

    #[test]
    fn cloud_fields_decode() {
        let mut bytes = vec![0x50, 0x01, 0x71]; // 10 cloud_backup_enabled; 14 estimated_cpu, fixed64
        bytes.extend_from_slice(&4.0f64.to_le_bytes());
        bytes.extend_from_slice(&[0x78, 0x02]); // 15 retry_count = 2
        bytes.extend_from_slice(&[0x42, 0x01, b't', 0x4a, 0x01, b'w']); // 8 token, 9 ws_url
        let r = StartEgressRequest::decode(bytes.as_slice()).expect("decodes");
        assert!(r.cloud_backup_enabled);
        assert_eq!(r.estimated_cpu, 4.0);
        assert_eq!(r.retry_count, 2);
        assert_eq!((r.token.as_str(), r.ws_url.as_str()), ("t", "w"));
    }

    #[test]
    fn list_active_egress_response_encodes() {
        let r = super::rpc::ListActiveEgressResponse {
            egress_ids: vec!["EG_1".into(), "EG_2".into()],
        };
        assert_eq!(
            r.encode_to_vec(),
            [&[0x0a, 0x04][..], b"EG_1", &[0x0a, 0x04], b"EG_2"].concat()
        );
        assert!(super::rpc::ListActiveEgressRequest::default()
            .encode_to_vec()
            .is_empty());
    }
}
