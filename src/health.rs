//! The status server of service mode: the bare state (`starting`, `available`, `reserved`,
//! `recording`, `stopping`) with 200 on any path and method, as the original served it for
//! Kubernetes probes and autoscalers.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// Serves `status` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new().fallback(move || {
        let status = *status.borrow();
        async move { status.as_str() }
    });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "health server failed");
    }
}

/// Binds the health port on all interfaces (probes come from the kubelet).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}
