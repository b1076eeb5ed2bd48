//! The health port of the Redis front-ends: `/healthz` (liveness: the front-end's loop went
//! round within the last [`LIVENESS_WINDOW`]; 503 when it is wedged), `/readyz` (200 while it can
//! take a recording, 503 otherwise), `/metrics` (Prometheus text), and on every other path the
//! bare state (`starting`, `available`, `reserved`, `recording`, `stopping`) with 200, as the
//! original served it for probes and autoscalers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How recent the loop's last heartbeat must be for `/healthz` to say it is alive.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(5);

/// The recorder's state, as the health endpoint shows it (both Redis front-ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Starting,
    Available,
    Reserved,
    Recording,
    Stopping,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Recording => "recording",
            Self::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the health port reports, shared by a front-end (which updates it) and the server.
#[derive(Clone)]
pub struct Probe {
    status: Arc<watch::Sender<Status>>,
    ready: Arc<AtomicBool>,
    /// Milliseconds since `epoch` of the loop's last heartbeat.
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    pub fn new() -> Self {
        Self {
            status: Arc::new(watch::channel(Status::Starting).0),
            ready: Arc::new(AtomicBool::new(false)),
            heartbeat: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Sets the state (ready exactly while available); true if it changed.
    pub fn set_status(&self, s: Status) -> bool {
        self.ready.store(s == Status::Available, Ordering::Relaxed);
        self.status.send_replace(s) != s
    }

    /// Overrides readiness (a worker that takes several recordings is ready while busy).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The front-end's loop went round.
    pub fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat.store(ms, Ordering::Relaxed);
    }

    /// Whether the loop went round within [`LIVENESS_WINDOW`].
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last) < LIVENESS_WINDOW
    }
}

/// Serves `probe` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, probe: Probe, shutdown: CancellationToken) {
    let (live, ready, bare) = (probe.clone(), probe.clone(), probe);
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || async move {
                if live.alive() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "wedged")
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                let code = if ready.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (code, ready.status().as_str())
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::metrics::render(),
                )
            }),
        )
        .fallback(move || {
            let status = bare.status();
            async move { status.as_str() }
        });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "health server failed");
    }
}

/// Test hook: with `LIVEKIT_RECORDER_TEST_WEDGE_AFTER_SECS=N` set, the front-end's loop blocks
/// for a minute once the process is N seconds old, as a wedged loop would (tests of `/healthz`).
pub fn test_wedge_hook() {
    static AFTER: std::sync::LazyLock<Option<Duration>> = std::sync::LazyLock::new(|| {
        std::env::var("LIVEKIT_RECORDER_TEST_WEDGE_AFTER_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
    });
    static STARTED: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    let started = *STARTED;
    if let Some(after) = *AFTER {
        if started.elapsed() >= after {
            tracing::warn!("test hook: wedging the loop for 60 s");
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// Binds the health port on all interfaces (probes come from the kubelet).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_state_and_liveness_the_heartbeat() {
        let p = Probe::new();
        assert_eq!(p.status(), Status::Starting);
        assert!(!p.ready());
        assert!(p.set_status(Status::Available));
        assert!(!p.set_status(Status::Available), "unchanged");
        assert!(p.ready());
        p.set_status(Status::Recording);
        assert!(!p.ready());
        p.set_ready(true);
        assert!(p.ready(), "a worker with room is ready while busy");
        p.beat();
        assert!(p.alive());
        let stale = Probe {
            epoch: Instant::now() - LIVENESS_WINDOW * 2,
            ..Probe::new()
        };
        assert!(!stale.alive(), "no heartbeat for twice the window");
        stale.beat();
        assert!(stale.alive());
    }
}
