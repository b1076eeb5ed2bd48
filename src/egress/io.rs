//! What livekit-server learns of one egress: `IOInfo.CreateEgress` first, then
//! `IOInfo.UpdateEgress` for every change, in order. While the server is unreachable
//! (`unavailable`, `deadline_exceeded`) a call is retried with backoff (250 ms doubling to
//! 1 min) and only the newest pending update is kept, so the final state is never lost nor
//! overtaken. Older servers (v1.4.2 - v1.5.0) take every update on `UpdateEgressInfo`.

use std::time::Duration;

use livekit_protocol::EgressInfo;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::psrpc::{Method, Psrpc, CREATE_EGRESS, UPDATE_EGRESS, UPDATE_EGRESS_INFO};

/// How long one call may take (claim and response).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The updates of one egress, delivered in order by a task of their own.
pub struct Reporter {
    updates: mpsc::UnboundedSender<EgressInfo>,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Starts reporting with `first` (the CreateEgress); the receiver fires once that first
    /// call has been answered, or given up as not retryable.
    pub fn spawn(psrpc: Psrpc, legacy: bool, first: EgressInfo) -> (Self, oneshot::Receiver<()>) {
        let (updates, rx) = mpsc::unbounded_channel();
        let (created_tx, created) = oneshot::channel();
        let (create, update): (&'static Method, &'static Method) = if legacy {
            (&UPDATE_EGRESS_INFO, &UPDATE_EGRESS_INFO)
        } else {
            (&CREATE_EGRESS, &UPDATE_EGRESS)
        };
        let task = tokio::spawn(report(psrpc, create, update, first, rx, created_tx));
        (Self { updates, task }, created)
    }

    /// Queues an update (the newest pending one wins while the server is away).
    pub fn send(&self, info: EgressInfo) {
        if self.updates.send(info).is_err() {
            tracing::error!("egress reporter is gone; update dropped");
        }
    }

    /// Sends what is queued; waits up to `timeout` for it to be delivered (it goes on in the
    /// background after that, as long as the process lives).
    pub async fn close(self, timeout: Duration) -> bool {
        drop(self.updates);
        tokio::time::timeout(timeout, self.task).await.is_ok()
    }
}

async fn report(
    psrpc: Psrpc,
    create: &'static Method,
    update: &'static Method,
    first: EgressInfo,
    mut rx: mpsc::UnboundedReceiver<EgressInfo>,
    created: oneshot::Sender<()>,
) {
    deliver(&psrpc, create, first, &mut rx, false).await;
    let _ = created.send(());
    while let Some(mut info) = rx.recv().await {
        // Several queued: only the newest matters.
        while let Ok(newer) = rx.try_recv() {
            info = newer;
        }
        deliver(&psrpc, update, info, &mut rx, true).await;
    }
}

/// One update, retried while the server is unreachable. With `supersede`, an update queued
/// meanwhile replaces it.
async fn deliver(
    psrpc: &Psrpc,
    method: &'static Method,
    mut info: EgressInfo,
    rx: &mut mpsc::UnboundedReceiver<EgressInfo>,
    supersede: bool,
) {
    let mut delay = FIRST_RETRY;
    loop {
        let status = info.status;
        match psrpc
            .call(method, "", &info.encode_to_vec(), CALL_TIMEOUT)
            .await
        {
            Ok(_) => {
                tracing::debug!(egress_id = %info.egress_id, status, method = method.name, "egress info delivered");
                return;
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(egress_id = %info.egress_id, status, method = method.name, error = %e, retry_in = ?delay, "livekit-server did not take the egress info; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
                if supersede {
                    while let Ok(newer) = rx.try_recv() {
                        info = newer;
                    }
                }
            }
            Err(e) => {
                tracing::error!(egress_id = %info.egress_id, status, method = method.name, error = %e, "livekit-server refused the egress info");
                return;
            }
        }
    }
}
