//! The envelope around every psrpc payload: `internal.Msg`, laid out as `google.protobuf.Any`
//! (`type_url = 1`, `value = 2`) plus a `channel = 3` that is empty on Redis. Go peers decode
//! the value by its type URL and type-assert it to what the channel carries, so each channel
//! must only ever carry its own type; [`unwrap`] checks that on the way in.

use prost::Message as _;

use super::proto::internal::{ClaimRequest, ClaimResponse, Msg, Request, Response};

/// What precedes a message's full name in its type URL.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A message that travels in an envelope.
pub trait Envelope: prost::Message + Default {
    /// Its protobuf full name, `internal.<Name>`.
    const NAME: &'static str;
}

impl Envelope for Request {
    const NAME: &'static str = "internal.Request";
}

impl Envelope for Response {
    const NAME: &'static str = "internal.Response";
}

impl Envelope for ClaimRequest {
    const NAME: &'static str = "internal.ClaimRequest";
}

impl Envelope for ClaimResponse {
    const NAME: &'static str = "internal.ClaimResponse";
}

/// `type.googleapis.com/<name>`.
pub fn type_url(name: &str) -> String {
    format!("{TYPE_URL_PREFIX}{name}")
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a psrpc envelope: {0}")]
    Malformed(#[source] prost::DecodeError),
    #[error("expected {expected}, got type {got:?}")]
    WrongType { expected: &'static str, got: String },
    #[error("undecodable {name}: {source}")]
    Value {
        name: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

/// The bytes to publish for `msg`.
pub fn wrap<M: Envelope>(msg: &M) -> Vec<u8> {
    Msg {
        type_url: type_url(M::NAME),
        value: msg.encode_to_vec(),
        channel: String::new(),
    }
    .encode_to_vec()
}

/// The `M` in `bytes`, if that is what they hold. The type is the type URL's part after its last
/// `/`, as Go's `anypb` reads it; unknown fields (a newer peer's) are skipped.
pub fn unwrap<M: Envelope>(bytes: &[u8]) -> Result<M, EnvelopeError> {
    let msg = Msg::decode(bytes).map_err(EnvelopeError::Malformed)?;
    let name = msg.type_url.rsplit('/').next().unwrap_or_default();
    if name != M::NAME {
        return Err(EnvelopeError::WrongType {
            expected: M::NAME,
            got: msg.type_url.chars().take(120).collect(),
        });
    }
    M::decode(msg.value.as_slice()).map_err(|source| EnvelopeError::Value {
        name: M::NAME,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ClaimRequest{request_id: "REQ_1", server_id: "SRV_2", affinity: 0.5}` in a `Msg`, written
    /// by hand from the field numbers: (field << 3 | wire type), then length or fixed bytes.
    fn claim_request_fixture() -> Vec<u8> {
        let value: Vec<u8> = [
            &[0x0a, 0x05][..], // 1 request_id, len 5
            b"REQ_1",
            &[0x12, 0x05], // 2 server_id, len 5
            b"SRV_2",
            &[0x1d, 0x00, 0x00, 0x00, 0x3f], // 3 affinity, fixed32 0.5f32 little-endian
        ]
        .concat();
        assert_eq!(value.len(), 19);
        [
            &[0x0a, 41][..], // Msg.type_url = 1, len 41
            b"type.googleapis.com/internal.ClaimRequest",
            &[0x12, 19], // Msg.value = 2, len 19
            &value,
            // Msg.channel = 3 is empty: not written.
        ]
        .concat()
    }

    #[test]
    fn claim_request_bytes_are_psrpcs() {
        let claim = ClaimRequest {
            request_id: "REQ_1".into(),
            server_id: "SRV_2".into(),
            affinity: 0.5,
        };
        let bytes = wrap(&claim);
        assert_eq!(bytes, claim_request_fixture());
        assert_eq!(bytes.len(), 64);
        assert_eq!(unwrap::<ClaimRequest>(&bytes).expect("decodes"), claim);
    }

    #[test]
    fn claim_response_bytes_are_psrpcs() {
        let bytes = wrap(&ClaimResponse {
            request_id: "REQ_1".into(),
            server_id: "SRV_2".into(),
        });
        let expected = [
            &[0x0a, 42][..],
            b"type.googleapis.com/internal.ClaimResponse",
            &[0x12, 14, 0x0a, 0x05],
            b"REQ_1",
            &[0x12, 0x05],
            b"SRV_2",
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    /// A Request as a Go client writes it, with `skip_claim` (9) and a `Msg.channel` (3) set.
    #[test]
    fn requests_from_go_decode() {
        let value = [
            &[0x0a, 0x05][..],
            b"REQ_a",
            &[0x12, 0x05],
            b"CLI_b",
            &[0x18, 0x01],                   // 3 sent_at = 1
            &[0x20, 0xac, 0x02],             // 4 expiry = 300 (varint)
            &[0x28, 0x01],                   // 5 multi = true
            &[0x42, 0x03, 0x0a, 0x01, 0x78], // 8 raw_request, len 3
            &[0x48, 0x01],                   // 9 skip_claim = true
        ]
        .concat();
        let bytes = [
            &[0x0a, 36][..],
            b"type.googleapis.com/internal.Request",
            &[0x12, value.len() as u8],
            &value,
            &[0x1a, 0x03],
            b"x.y",
        ]
        .concat();
        let r: Request = unwrap(&bytes).expect("decodes");
        assert_eq!(r.request_id, "REQ_a");
        assert_eq!(r.client_id, "CLI_b");
        assert_eq!((r.sent_at, r.expiry), (1, 300));
        assert!(r.multi && r.skip_claim);
        assert_eq!(r.raw_request, [0x0a, 0x01, 0x78]);
        assert!(r.request.is_none() && r.metadata.is_empty());
    }

    #[test]
    fn error_responses_encode_by_field_number() {
        let bytes = wrap(&Response {
            request_id: "REQ_a".into(),
            server_id: "SRV_b".into(),
            sent_at: 2,
            error: "boom".into(),
            code: "not_found".into(),
            ..Response::default()
        });
        let value = [
            &[0x0a, 0x05][..],
            b"REQ_a",
            &[0x12, 0x05],
            b"SRV_b",
            &[0x18, 0x02],
            &[0x2a, 0x04], // 5 error
            b"boom",
            &[0x32, 0x09], // 6 code
            b"not_found",
        ]
        .concat();
        let expected = [
            &[0x0a, 37][..],
            b"type.googleapis.com/internal.Response",
            &[0x12, value.len() as u8],
            &value,
        ]
        .concat();
        assert_eq!(bytes, expected);
        // An empty raw_response (Empty) is not written at all.
        let ok = Response {
            request_id: "REQ_a".into(),
            ..Response::default()
        };
        assert_eq!(unwrap::<Response>(&wrap(&ok)).expect("decodes"), ok);
    }

    #[test]
    fn wrong_types_and_garbage_are_refused() {
        let claim = claim_request_fixture();
        assert!(matches!(
            unwrap::<Request>(&claim),
            Err(EnvelopeError::WrongType {
                expected: "internal.Request",
                ..
            })
        ));
        assert!(matches!(
            unwrap::<ClaimResponse>(&claim),
            Err(EnvelopeError::WrongType { .. })
        ));
        assert!(matches!(
            unwrap::<Request>(b"\xff\xff\xff"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            unwrap::<Request>(b""),
            Err(EnvelopeError::WrongType { .. })
        ));
        // The right type URL around a value that is not that message.
        let bad_value = [
            &[0x0a, 36][..],
            b"type.googleapis.com/internal.Request",
            &[0x12, 0x02, 0x0a, 0x05],
        ]
        .concat();
        assert!(matches!(
            unwrap::<Request>(&bad_value),
            Err(EnvelopeError::Value { .. })
        ));
    }
}
