//! One egress's `EgressInfo` as it moves through its states: STARTING (with a word on what it
//! waits for), ACTIVE, ENDING, then COMPLETE, FAILED, ABORTED or LIMIT_REACHED with its file
//! and stream results. Times are unix nanoseconds; stream URLs never carry their keys.

use std::time::SystemTime;

use livekit_protocol::{
    egress_info, stream_info, EgressInfo, EgressStatus, FileInfo, StreamInfo, StreamInfoList,
};

use super::request::nanos;
use crate::policy::redact_stream_url;
use crate::session::{EndReason, SessionResult};

/// What `details` says while the page has not logged START_RECORDING.
pub const WAITING_DETAILS: &str =
    "waiting for the page to log START_RECORDING (no participant has published yet)";
/// The texts livekit egress uses.
pub const STOP_DETAILS: &str = "End reason: StopEgress API";
pub const SOURCE_CLOSED_DETAILS: &str = "End reason: Source closed";
pub const LIMIT_DETAILS: &str = "End reason: Limit reached";
pub const ABORTED_ERROR: &str = "Stop called before pipeline could start";

/// HTTP-like error codes egress reports.
const CODE_ABORTED: i32 = 412;
const CODE_LIMIT: i32 = 413;
const CODE_FAILED: i32 = 500;

/// Unix nanoseconds.
pub fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(nanos)
        .unwrap_or_default()
}

pub fn now_ns() -> i64 {
    unix_ns(SystemTime::now())
}

/// The info of one egress and the live state of its streams.
pub struct Tracker {
    info: EgressInfo,
    /// (the URL as given, its result entry).
    streams: Vec<(String, StreamInfo)>,
}

impl Tracker {
    pub fn new(info: EgressInfo) -> Self {
        Self {
            info,
            streams: Vec::new(),
        }
    }

    pub fn status(&self) -> EgressStatus {
        EgressStatus::try_from(self.info.status).unwrap_or(EgressStatus::EgressFailed)
    }

    /// Whether the egress has reached a final state.
    pub fn ended(&self) -> bool {
        !matches!(
            self.status(),
            EgressStatus::EgressStarting | EgressStatus::EgressActive | EgressStatus::EgressEnding
        )
    }

    /// The info as of now (`updated_at` set).
    pub fn snapshot(&mut self) -> EgressInfo {
        self.info.updated_at = now_ns();
        let mut info = self.info.clone();
        info.stream_results = self.streams.iter().map(|(_, s)| s.clone()).collect();
        info
    }

    pub fn waiting_for_start(&mut self) {
        self.info.details = WAITING_DETAILS.into();
    }

    /// Media flows: ACTIVE, the initial streams started.
    pub fn active(&mut self, started_at: SystemTime, urls: &[String]) {
        self.info.status = EgressStatus::EgressActive as i32;
        self.info.started_at = unix_ns(started_at);
        self.info.details.clear();
        for url in urls {
            self.stream_started(url, started_at);
        }
    }

    /// ENDING with the reason in `details`; false if it was ending already.
    pub fn ending(&mut self, details: &str) -> bool {
        if self.status() == EgressStatus::EgressEnding || self.ended() {
            return false;
        }
        self.info.status = EgressStatus::EgressEnding as i32;
        self.info.details = details.into();
        true
    }

    pub fn ending_for(&mut self, reason: EndReason) -> bool {
        let details = match reason {
            EndReason::SourceClosed => SOURCE_CLOSED_DETAILS,
            EndReason::LimitReached => LIMIT_DETAILS,
            _ => STOP_DETAILS,
        };
        self.ending(details)
    }

    pub fn stream_started(&mut self, url: &str, at: SystemTime) {
        self.streams
            .retain(|(u, s)| u != url || s.status != stream_info::Status::Active as i32);
        self.streams.push((
            url.to_owned(),
            StreamInfo {
                url: redact_stream_url(url),
                started_at: unix_ns(at),
                status: stream_info::Status::Active as i32,
                ..Default::default()
            },
        ));
    }

    /// The stream of `url` ended (removed: `error` None; failed: its error).
    pub fn stream_ended(&mut self, url: &str, error: Option<&str>) {
        let now = now_ns();
        if let Some((_, s)) = self
            .streams
            .iter_mut()
            .find(|(u, s)| u == url && s.status == stream_info::Status::Active as i32)
        {
            s.ended_at = now;
            s.duration = now - s.started_at;
            match error {
                Some(e) => {
                    s.status = stream_info::Status::Failed as i32;
                    s.error = crate::util::truncate(e, 1024);
                }
                None => s.status = stream_info::Status::Finished as i32,
            }
        }
    }

    /// The final state from the session's result.
    // The deprecated single result is still what older servers read.
    #[allow(deprecated)]
    pub fn finish(&mut self, r: &SessionResult) {
        let started = r.started_at.map(unix_ns).unwrap_or_default();
        let ended = unix_ns(r.ended_at);
        self.info.ended_at = ended;
        if r.started_at.is_some() {
            self.info.started_at = started;
        }
        self.info.file_results = r
            .file
            .iter()
            .map(|f| FileInfo {
                filename: f.name.clone(),
                started_at: started,
                ended_at: ended,
                duration: nanos(f.duration),
                size: i64::try_from(f.size).unwrap_or(i64::MAX),
                location: f.location.clone(),
            })
            .collect();
        self.streams = r
            .streams
            .iter()
            .map(|s| {
                let (start, end) = (unix_ns(s.started_at), unix_ns(s.ended_at));
                (
                    s.url.clone(),
                    StreamInfo {
                        url: redact_stream_url(&s.url),
                        started_at: start,
                        ended_at: end,
                        duration: end - start,
                        status: if s.error.is_some() {
                            stream_info::Status::Failed as i32
                        } else {
                            stream_info::Status::Finished as i32
                        },
                        error: s
                            .error
                            .as_deref()
                            .map(|e| crate::util::truncate(e, 1024))
                            .unwrap_or_default(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        // The deprecated single result, filled when it is the only output kind.
        self.info.result = match (&self.info.file_results[..], self.streams.is_empty()) {
            ([f], true) => Some(egress_info::Result::File(f.clone())),
            ([], false) => Some(egress_info::Result::Stream(StreamInfoList {
                info: self.streams.iter().map(|(_, s)| s.clone()).collect(),
            })),
            _ => None,
        };
        let (status, error, code) = match (r.end, &r.error) {
            (EndReason::Aborted, _) => (
                EgressStatus::EgressAborted,
                ABORTED_ERROR.to_owned(),
                CODE_ABORTED,
            ),
            (_, Some(e)) => (
                EgressStatus::EgressFailed,
                crate::util::truncate(e, 1024),
                CODE_FAILED,
            ),
            (EndReason::LimitReached, None) => (
                EgressStatus::EgressLimitReached,
                crate::session::MAX_DURATION_REACHED.to_owned(),
                CODE_LIMIT,
            ),
            (_, None) => (EgressStatus::EgressComplete, String::new(), 0),
        };
        self.info.status = status as i32;
        self.info.error = error;
        self.info.error_code = code;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{FileOutcome, StreamOutcome};
    use std::time::Duration;

    fn result(end: EndReason, error: Option<&str>) -> SessionResult {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        SessionResult {
            id: "EG_1".into(),
            room_name: String::new(),
            started_at: Some(t0),
            ended_at: t0 + Duration::from_secs(10),
            end,
            error: error.map(str::to_owned),
            file: Some(FileOutcome {
                local_path: None,
                uploaded: true,
                name: "a/b.mp4".into(),
                location: "s3://bucket/a/b.mp4".into(),
                size: 4096,
                duration: Duration::from_secs(10),
            }),
            streams: vec![StreamOutcome {
                url: "rtmp://h/app/secret".into(),
                started_at: t0,
                ended_at: t0 + Duration::from_secs(4),
                error: Some("refused".into()),
            }],
        }
    }

    #[test]
    fn a_complete_recording_reports_its_file_and_streams() {
        let mut t = Tracker::new(EgressInfo {
            egress_id: "EG_1".into(),
            ..Default::default()
        });
        assert_eq!(t.status(), EgressStatus::EgressStarting);
        t.waiting_for_start();
        assert_eq!(t.snapshot().details, WAITING_DETAILS);
        t.active(SystemTime::now(), &["rtmp://h/app/secret".into()]);
        assert_eq!(t.status(), EgressStatus::EgressActive);
        assert!(t.snapshot().details.is_empty());
        assert_eq!(
            t.snapshot().stream_results[0].url,
            "rtmp://h/app/{stream_key}"
        );
        assert!(t.ending(STOP_DETAILS));
        assert!(!t.ending(SOURCE_CLOSED_DETAILS), "ENDING once");
        t.finish(&result(EndReason::Stopped, None));
        let info = t.snapshot();
        assert_eq!(info.status, EgressStatus::EgressComplete as i32);
        assert_eq!(info.details, STOP_DETAILS);
        let f = &info.file_results[0];
        assert_eq!((f.size, f.duration), (4096, 10_000_000_000));
        assert_eq!(f.ended_at - f.started_at, 10_000_000_000);
        assert_eq!(f.location, "s3://bucket/a/b.mp4");
        let s = &info.stream_results[0];
        assert_eq!(s.status, stream_info::Status::Failed as i32);
        assert_eq!((s.duration, s.error.as_str()), (4_000_000_000, "refused"));
        assert!(
            info.result.is_none(),
            "two kinds of output: no legacy result"
        );
        assert!(t.ended());
    }

    #[test]
    fn final_states_follow_egress() {
        let mut t = Tracker::new(EgressInfo::default());
        t.finish(&result(EndReason::Aborted, Some("Recording aborted")));
        let i = t.snapshot();
        assert_eq!(i.status, EgressStatus::EgressAborted as i32);
        assert_eq!((i.error.as_str(), i.error_code), (ABORTED_ERROR, 412));

        t.finish(&result(EndReason::LimitReached, None));
        let i = t.snapshot();
        assert_eq!(
            (i.status, i.error_code),
            (EgressStatus::EgressLimitReached as i32, 413)
        );

        t.finish(&result(EndReason::Failed, Some("Chromium died")));
        let i = t.snapshot();
        assert_eq!(i.status, EgressStatus::EgressFailed as i32);
        assert_eq!((i.error.as_str(), i.error_code), ("Chromium died", 500));
    }

    #[test]
    fn live_streams_change_state() {
        let mut t = Tracker::new(EgressInfo::default());
        t.active(SystemTime::now(), &["rtmp://h/a/1".into()]);
        t.stream_started("rtmp://h/a/2", SystemTime::now());
        t.stream_ended("rtmp://h/a/1", None);
        t.stream_ended("rtmp://h/a/2", Some("dropped"));
        let s = t.snapshot().stream_results;
        assert_eq!(s[0].status, stream_info::Status::Finished as i32);
        assert_eq!(s[1].status, stream_info::Status::Failed as i32);
        assert!(s
            .iter()
            .all(|s| s.ended_at >= s.started_at && s.ended_at > 0));
    }
}
