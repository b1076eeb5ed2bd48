//! Template input: the layout page's address and the room token it joins with.

use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};

/// How long the recorder's room token is valid: longer than any recording.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The console markers a template logs.
pub const START_MARKER: &str = "START_RECORDING";
pub const END_MARKER: &str = "END_RECORDING";

/// The script whose text, after the page has loaded, is the recording's error.
pub const ERROR_PROBE: &str = "document.querySelector('div.error')?.innerText";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("missing API key or secret key")]
    MissingApiKey,
    #[error("could not sign the room token: {0}")]
    Token(String),
}

/// `{base}/{layout}?url={ws_url, query-escaped}&token={token}`, as the original built it.
pub fn page_url(base: &str, layout: &str, ws_url: &str, token: &str) -> String {
    let url: String = url::form_urlencoded::byte_serialize(ws_url.as_bytes()).collect();
    format!("{base}/{layout}?url={url}&token={token}")
}

/// A token for a hidden, subscribe-only recorder participant `identity` of `room`, signed with
/// the API secret (the legacy protocol uses a random `RR_` identity, egress the egress id).
pub fn token(
    api_key: &str,
    api_secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, TemplateError> {
    if api_key.is_empty() || api_secret.is_empty() {
        return Err(TemplateError::MissingApiKey);
    }
    AccessToken::with_api_key(api_key, api_secret)
        .with_identity(identity)
        .with_ttl(TOKEN_TTL)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_owned(),
            can_subscribe: Some(true),
            can_publish: Some(false),
            can_publish_data: Some(false),
            hidden: true,
            recorder: true,
            ..VideoGrants::default()
        })
        .to_jwt()
        .map_err(|e| TemplateError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_url_matches_the_original() {
        assert_eq!(
            page_url(
                "https://recorder.livekit.io/#",
                "speaker-dark",
                "wss://fake.url.io",
                "eyJ.a.b"
            ),
            "https://recorder.livekit.io/#/speaker-dark?url=wss%3A%2F%2Ffake.url.io&token=eyJ.a.b"
        );
    }

    #[test]
    fn the_token_carries_exactly_the_recorder_grants() {
        let jwt = token("key", "secret-secret-secret-secret", "my-room", "EG_abc").unwrap();
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(
            "key",
            "secret-secret-secret-secret",
        )
        .verify(&jwt)
        .expect("signed with the api secret");
        assert_eq!(claims.iss, "key");
        assert_eq!(claims.sub, "EG_abc", "the identity asked for");
        let v = &claims.video;
        assert!(v.room_join && v.hidden && v.recorder);
        assert_eq!(v.room, "my-room");
        assert_eq!(v.can_subscribe, Some(true));
        assert_eq!(v.can_publish, Some(false));
        assert_eq!(v.can_publish_data, Some(false));
        assert!(!v.room_admin && !v.room_create && !v.room_record);
        let now = crate::util::now_millis() / 1000;
        let ttl = claims.exp as i64 - now;
        assert!(
            (TOKEN_TTL.as_secs() as i64 - 60..=TOKEN_TTL.as_secs() as i64).contains(&ttl),
            "ttl {ttl}"
        );
        assert!(livekit_api::access_token::TokenVerifier::with_api_key(
            "key",
            "another-secret-another"
        )
        .verify(&jwt)
        .is_err());
        let other = token("key", "secret-secret-secret-secret", "my-room", "RR_x").unwrap();
        assert_ne!(jwt, other);
    }

    #[test]
    fn missing_keys_fail_with_the_spec_message() {
        assert_eq!(
            token("", "s", "r", "i").unwrap_err().to_string(),
            "missing API key or secret key"
        );
        assert_eq!(
            token("k", "", "r", "i").unwrap_err().to_string(),
            "missing API key or secret key"
        );
    }
}
