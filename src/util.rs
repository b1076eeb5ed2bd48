//! Small helpers shared by several modules.

use rand::Rng;

/// The alphabet of shortuuid, which livekit's ids are drawn from.
const BASE57: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// `n` random characters of the base57 alphabet.
pub fn random_token(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| BASE57[rng.random_range(0..BASE57.len())] as char)
        .collect()
}

/// A livekit-style id: `prefix` and 12 random characters (`NewGuid` in livekit/protocol).
pub fn new_guid(prefix: &str) -> String {
    format!("{prefix}{}", random_token(12))
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_look_like_livekits() {
        let id = new_guid("RR_");
        assert_eq!(id.len(), 15);
        assert!(id.starts_with("RR_"));
        assert!(id[3..].bytes().all(|b| BASE57.contains(&b)));
        assert_ne!(new_guid("RR_"), new_guid("RR_"));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(1000);
        let t = truncate(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with('…'), "{}", t.len());
    }
}
