//! Prometheus metrics of the recorder, served on the health port at `/metrics`.
//!
//! One process-wide registry. Labels are bounded sets (the mode, a failure reason from a fixed
//! list, the storage backend): never a room name, URL or id.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric of the recorder.
pub struct Metrics {
    registry: Registry,
    /// Recordings started, by front-end (`standalone`, `service`, `egress`).
    pub recordings_started: IntCounterVec,
    /// Recordings that ended without an error.
    pub recordings_completed: IntCounterVec,
    /// Recordings that ended with an error, by reason (see [`FAILURE_REASONS`]).
    pub recordings_failed: IntCounterVec,
    /// Recordings in progress.
    pub recordings_active: IntGauge,
    /// From the first frame to the end, in seconds.
    pub recording_seconds: Histogram,
    /// Upload time, by backend.
    pub upload_seconds: HistogramVec,
    pub uploaded_bytes: IntCounterVec,
    pub upload_failures: IntCounterVec,
    /// Legacy protocol: reservations seen, claimed (SET NX won) and acknowledged.
    pub reservations_seen: IntCounter,
    pub reservations_claimed: IntCounter,
    pub reservations_acked: IntCounter,
    /// Egress protocol: StartEgress requests seen, claims offered and won.
    pub egress_requests_seen: IntCounter,
    pub egress_claims_offered: IntCounter,
    pub egress_claims_won: IntCounter,
    /// Times the Redis connection was lost.
    pub redis_reconnects: IntCounter,
    /// Video frames into the encoder, and frames missing between them (timestamp gaps of more
    /// than one and a half frame durations), counted by the pipeline.
    pub frames_captured: IntCounter,
    pub frames_dropped: IntCounter,
}

/// The failure reasons `recordings_failed` is labelled with: stopped before it started, forced
/// down, the recording itself failed, or only its upload did.
pub const FAILURE_REASONS: [&str; 4] = ["aborted", "forced", "recording", "upload"];

/// Our metrics' namespace; the process metrics keep their standard unprefixed names.
const NAMESPACE: &str = "livekit_recorder";

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(opts(name, help), labels).expect("a valid metric definition")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(opts(name, help)).expect("a valid metric definition")
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![
            1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
        ];
        let upload_buckets = vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
        let m = Self {
            recordings_started: counter_vec(
                "recordings_started_total",
                "Recordings started",
                &["mode"],
            ),
            recordings_completed: counter_vec(
                "recordings_completed_total",
                "Recordings that ended without an error",
                &["mode"],
            ),
            recordings_failed: counter_vec(
                "recordings_failed_total",
                "Recordings that ended with an error, by reason",
                &["mode", "reason"],
            ),
            recordings_active: IntGauge::with_opts(opts(
                "recordings_active",
                "Recordings in progress",
            ))
            .expect("a valid metric definition"),
            recording_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "recording_duration_seconds",
                    "Recorded time, first frame to end",
                )
                .namespace(NAMESPACE)
                .buckets(buckets),
            )
            .expect("a valid metric definition"),
            upload_seconds: HistogramVec::new(
                HistogramOpts::new("upload_duration_seconds", "Upload time, by backend")
                    .namespace(NAMESPACE)
                    .buckets(upload_buckets),
                &["backend"],
            )
            .expect("a valid metric definition"),
            uploaded_bytes: counter_vec(
                "uploaded_bytes_total",
                "Bytes uploaded, by backend",
                &["backend"],
            ),
            upload_failures: counter_vec(
                "upload_failures_total",
                "Uploads that failed after their retries, by backend",
                &["backend"],
            ),
            reservations_seen: counter("reservations_seen_total", "Reservations received"),
            reservations_claimed: counter("reservations_claimed_total", "Reservations won"),
            reservations_acked: counter("reservations_acked_total", "Reservations acknowledged"),
            egress_requests_seen: counter(
                "egress_requests_seen_total",
                "StartEgress requests received",
            ),
            egress_claims_offered: counter(
                "egress_claims_offered_total",
                "StartEgress requests this worker offered to take",
            ),
            egress_claims_won: counter(
                "egress_claims_won_total",
                "StartEgress requests this worker was chosen for",
            ),
            redis_reconnects: counter("redis_reconnects_total", "Redis connections lost"),
            frames_captured: counter("frames_captured_total", "Video frames encoded"),
            frames_dropped: counter(
                "frames_dropped_total",
                "Video frames the capture rate asked for but did not get",
            ),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.recordings_started.clone()),
            Box::new(m.recordings_completed.clone()),
            Box::new(m.recordings_failed.clone()),
            Box::new(m.recordings_active.clone()),
            Box::new(m.recording_seconds.clone()),
            Box::new(m.upload_seconds.clone()),
            Box::new(m.uploaded_bytes.clone()),
            Box::new(m.upload_failures.clone()),
            Box::new(m.reservations_seen.clone()),
            Box::new(m.reservations_claimed.clone()),
            Box::new(m.reservations_acked.clone()),
            Box::new(m.egress_requests_seen.clone()),
            Box::new(m.egress_claims_offered.clone()),
            Box::new(m.egress_claims_won.clone()),
            Box::new(m.redis_reconnects.clone()),
            Box::new(m.frames_captured.clone()),
            Box::new(m.frames_dropped.clone()),
            // process_cpu_seconds_total, process_resident_memory_bytes, ... (unprefixed names,
            // as every Prometheus client exports them).
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        // Zero series for every bounded label value, so rates start from a known 0.
        for backend in ["s3", "azure"] {
            m.uploaded_bytes.with_label_values(&[backend]);
            m.upload_failures.with_label_values(&[backend]);
        }
        for mode in ["standalone", "service", "egress"] {
            m.recordings_started.with_label_values(&[mode]);
            m.recordings_completed.with_label_values(&[mode]);
            for reason in FAILURE_REASONS {
                m.recordings_failed.with_label_values(&[mode, reason]);
            }
        }
        m
    }

    /// A recording started by front-end `mode`.
    pub fn session_started(&self, mode: &str) {
        self.recordings_started.with_label_values(&[mode]).inc();
        self.recordings_active.inc();
    }

    /// A recording of `mode` ended: completed (`failure` is `None`) or failed, one of
    /// [`FAILURE_REASONS`]; it recorded for `recorded`.
    pub fn session_ended(&self, mode: &str, failure: Option<&'static str>, recorded: Duration) {
        self.recordings_active.dec();
        match failure {
            None => self.recordings_completed.with_label_values(&[mode]).inc(),
            Some(reason) => self
                .recordings_failed
                .with_label_values(&[mode, reason])
                .inc(),
        }
        if !recorded.is_zero() {
            self.recording_seconds.observe(recorded.as_secs_f64());
        }
    }

    /// An upload to `backend` of `bytes` that took `took`; `ok` false when it failed for good.
    pub fn upload(&self, backend: &str, bytes: u64, took: Duration, ok: bool) {
        if ok {
            self.upload_seconds
                .with_label_values(&[backend])
                .observe(took.as_secs_f64());
            self.uploaded_bytes
                .with_label_values(&[backend])
                .inc_by(bytes);
        } else {
            self.upload_failures.with_label_values(&[backend]).inc();
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Everything in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        tracing::error!(error = %e, "could not encode the metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_bounded_labels() {
        let text = render();
        for name in [
            "livekit_recorder_recordings_started_total{mode=\"egress\"}",
            "livekit_recorder_recordings_failed_total{mode=\"egress\",reason=\"upload\"}",
            "livekit_recorder_upload_failures_total{backend=\"s3\"}",
            "livekit_recorder_recordings_active",
            "livekit_recorder_recording_duration_seconds_bucket",
            "livekit_recorder_redis_reconnects_total",
            "livekit_recorder_frames_dropped_total",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_cpu_seconds_total ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
