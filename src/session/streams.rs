//! The RTMP URLs of a recording: which stream now, since when, and how each one ended.

use std::time::SystemTime;

/// How one RTMP URL ended (or stands, at the end of the recording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOutcome {
    pub url: String,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    /// Why it failed; `None` when it streamed until removed or until the recording ended.
    pub error: Option<String>,
}

/// Streams in start order; ended ones keep their place.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    active: Vec<(String, SystemTime)>,
    ended: Vec<StreamOutcome>,
}

impl Streams {
    pub(crate) fn start(&mut self, url: &str, at: SystemTime) {
        if !self.is_active(url) {
            self.active.push((url.to_owned(), at));
        }
    }

    pub(crate) fn is_active(&self, url: &str) -> bool {
        self.active.iter().any(|(u, _)| u == url)
    }

    pub(crate) fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Ends `url` (removed, or failed with `error`); false if it was not streaming.
    pub(crate) fn end(&mut self, url: &str, error: Option<String>) -> bool {
        let Some(i) = self.active.iter().position(|(u, _)| u == url) else {
            return false;
        };
        let (url, started_at) = self.active.remove(i);
        self.ended.push(StreamOutcome {
            url,
            started_at,
            ended_at: SystemTime::now(),
            error,
        });
        true
    }

    /// Ends every stream still active and returns them all, ended ones first.
    pub(crate) fn finish(mut self) -> Vec<StreamOutcome> {
        let urls: Vec<String> = self.active.iter().map(|(u, _)| u.clone()).collect();
        for url in urls {
            self.end(&url, None);
        }
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_end_once_and_keep_their_times() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let mut s = Streams::default();
        s.start("rtmp://a/1", t0);
        s.start("rtmp://a/2", t0);
        s.start("rtmp://a/1", SystemTime::now());
        assert_eq!(s.active_count(), 2, "a URL streams once");
        assert!(s.end("rtmp://a/2", Some("refused".into())));
        assert!(!s.end("rtmp://a/2", None), "ended already");
        assert!(!s.is_active("rtmp://a/2"));
        let all = s.finish();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].url, "rtmp://a/2");
        assert_eq!(all[0].error.as_deref(), Some("refused"));
        assert_eq!(all[1].url, "rtmp://a/1");
        assert_eq!(all[1].started_at, t0);
        assert!(all[1].error.is_none());
        assert!(all[1].ended_at > t0);
    }
}
