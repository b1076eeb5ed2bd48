//! psrpc's Redis channel names (`pkg/info/channels.go`, the "legacy" names every bus uses on
//! Redis): parts joined with `|`, empty parts dropped, each part sanitised so that only
//! `[0-9A-Za-z_]` stays as it is.

use std::fmt::Write as _;

/// Requests to the servers of a method.
const REQUEST: &str = "REQ";
/// The client's choice among the servers that claimed a request.
const CLAIM_RESPONSE: &str = "RCLAIM";
/// Servers' claims, to one client.
const CLAIM_REQUEST: &str = "CLAIM";
/// Servers' responses, to one client.
const RESPONSE: &str = "RES";

/// Appends `part` to `out`: `[0-9A-Za-z_]` as is, any other character below U+10000 as `u+%04x`,
/// above it as `U+%08x` (lower-case hex).
pub fn sanitize_part(part: &str, out: &mut String) {
    for c in part.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if u32::from(c) < 0x10000 {
            let _ = write!(out, "u+{:04x}", u32::from(c));
        } else {
            let _ = write!(out, "U+{:08x}", u32::from(c));
        }
    }
}

/// The channel of `parts`: each sanitised, empty ones dropped, joined with `|`.
pub fn join(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('|');
        }
        sanitize_part(part, &mut out);
    }
    out
}

/// `<service>|<method>|<topic>|REQ`: where clients publish requests and servers listen.
pub fn request_channel(service: &str, method: &str, topic: &str) -> String {
    join(&[service, method, topic, REQUEST])
}

/// `<service>|<method>|<topic>|RCLAIM`: where the client names the server it chose.
pub fn claim_response_channel(service: &str, method: &str, topic: &str) -> String {
    join(&[service, method, topic, CLAIM_RESPONSE])
}

/// `<service>|<client_id>|CLAIM`: where servers offer to handle a client's request.
pub fn claim_request_channel(service: &str, client_id: &str) -> String {
    join(&[service, client_id, CLAIM_REQUEST])
}

/// `<service>|<client_id>|RES`: where servers answer a client.
pub fn response_channel(service: &str, client_id: &str) -> String {
    join(&[service, client_id, RESPONSE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_channels_are_livekits() {
        assert_eq!(
            request_channel("EgressInternal", "StartEgress", ""),
            "EgressInternal|StartEgress|REQ"
        );
        assert_eq!(
            claim_response_channel("EgressInternal", "StartEgress", ""),
            "EgressInternal|StartEgress|RCLAIM"
        );
        assert_eq!(
            request_channel("EgressHandler", "StopEgress", "EG_abc123"),
            "EgressHandler|StopEgress|EG_abc123|REQ"
        );
        assert_eq!(
            claim_response_channel("EgressHandler", "StopEgress", "EG_abc123"),
            "EgressHandler|StopEgress|EG_abc123|RCLAIM"
        );
        assert_eq!(
            claim_request_channel("IOInfo", "CLI_0123456789ab"),
            "IOInfo|CLI_0123456789ab|CLAIM"
        );
        assert_eq!(
            response_channel("IOInfo", "CLI_0123456789ab"),
            "IOInfo|CLI_0123456789ab|RES"
        );
        assert_eq!(
            request_channel("IOInfo", "CreateEgress", ""),
            "IOInfo|CreateEgress|REQ"
        );
    }

    #[test]
    fn parts_are_sanitised() {
        // '-' U+002D, '.' U+002E, 'é' U+00E9, '€' U+20AC, '😀' U+1F600, '|' U+007C.
        assert_eq!(
            request_channel("Svc", "M", "a-b.c"),
            "Svc|M|au+002dbu+002ec|REQ"
        );
        assert_eq!(join(&["é€"]), "u+00e9u+20ac");
        assert_eq!(join(&["x😀y"]), "xU+0001f600y");
        assert_eq!(join(&["a|b"]), "au+007cb", "a topic cannot forge a part");
        assert_eq!(join(&["Az_09"]), "Az_09");
        assert_eq!(join(&["a b"]), "au+0020b");
    }

    #[test]
    fn empty_parts_are_dropped() {
        assert_eq!(join(&["", "A", "", "B", ""]), "A|B");
        assert_eq!(join(&[]), "");
        assert_eq!(join(&["", ""]), "");
    }
}
