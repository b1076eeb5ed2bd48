//! The routing table and the one task that reads the bus: every message on a subscribed channel
//! goes, by its channel, to the served method's queue of [`Incoming`] requests, or to the claim
//! or call waiting for its request id. Pending waits are registered here by request id and
//! removed by a guard when the waiter finishes, whichever way it finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::envelope::{self, Envelope};
use super::proto::internal::{ClaimRequest, ClaimResponse, Request, Response};
use super::{now_ns, Incoming, Inner, Method, Psrpc};
use crate::bus::{Event, Message};

/// Claims one call can have queued before more are dropped.
const CLAIMS_PER_CALL: usize = 16;
/// First and longest pause between pings that bring a lost connection back.
const RECONNECT_DELAYS: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(2));

/// What a subscribed channel carries.
#[derive(Debug, Clone)]
pub(super) enum Route {
    /// `...|REQ` of a served method: `Request`s.
    Requests {
        method: &'static Method,
        topic: String,
    },
    /// `...|RCLAIM` of a served method: `ClaimResponse`s.
    ClaimResponses,
    /// Our client's `...|CLAIM`: `ClaimRequest`s.
    ClaimRequests,
    /// Our client's `...|RES`: `Response`s.
    Responses,
}

/// A call in flight, as the router sees it.
struct CallSlot {
    claims: mpsc::Sender<ClaimRequest>,
    response: Option<oneshot::Sender<Response>>,
}

#[derive(Default)]
struct Table {
    channels: HashMap<String, Route>,
    /// Served requests waiting for the client's choice, by request id.
    claims: HashMap<String, oneshot::Sender<ClaimResponse>>,
    /// Our calls waiting for claims and a response, by request id.
    calls: HashMap<String, CallSlot>,
}

/// The routing table, shared by the handle and the router task.
#[derive(Default)]
pub(super) struct Routes {
    table: Mutex<Table>,
}

impl Routes {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; should something, the table is still consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a route; false if the channel already has one.
    pub(super) fn add(&self, channel: &str, route: Route) -> bool {
        let mut table = self.lock();
        if table.channels.contains_key(channel) {
            return false;
        }
        table.channels.insert(channel.to_owned(), route);
        true
    }

    pub(super) fn remove(&self, channel: &str) -> Option<Route> {
        self.lock().channels.remove(channel)
    }

    fn route(&self, channel: &str) -> Option<Route> {
        self.lock().channels.get(channel).cloned()
    }

    /// Registers a served request's wait for the client's `ClaimResponse`.
    pub(super) fn wait_claim(self: &Arc<Self>, request_id: &str) -> ClaimWait {
        let (tx, rx) = oneshot::channel();
        self.lock().claims.insert(request_id.to_owned(), tx);
        ClaimWait {
            response: rx,
            _pending: Pending {
                routes: self.clone(),
                request_id: request_id.to_owned(),
                kind: PendingKind::Claim,
            },
        }
    }

    /// Registers a call's wait for claims and its response.
    pub(super) fn start_call(self: &Arc<Self>, request_id: &str) -> CallWait {
        let (claims_tx, claims_rx) = mpsc::channel(CLAIMS_PER_CALL);
        let (response_tx, response_rx) = oneshot::channel();
        self.lock().calls.insert(
            request_id.to_owned(),
            CallSlot {
                claims: claims_tx,
                response: Some(response_tx),
            },
        );
        CallWait {
            claims: claims_rx,
            response: response_rx,
            _pending: Pending {
                routes: self.clone(),
                request_id: request_id.to_owned(),
                kind: PendingKind::Call,
            },
        }
    }

    fn on_claim_response(&self, claim: ClaimResponse) {
        // Every server of a method hears every choice; only the ones waiting care.
        if let Some(tx) = self.lock().claims.remove(&claim.request_id) {
            let _ = tx.send(claim);
        }
    }

    fn on_claim_request(&self, claim: ClaimRequest) {
        let table = self.lock();
        let Some(call) = table.calls.get(&claim.request_id) else {
            tracing::debug!(request_id = %claim.request_id, server_id = %claim.server_id, "late claim ignored");
            return;
        };
        if call.claims.try_send(claim).is_err() {
            tracing::debug!("claim dropped: the call has enough of them");
        }
    }

    fn on_response(&self, response: Response) {
        let mut table = self.lock();
        let slot = table
            .calls
            .get_mut(&response.request_id)
            .and_then(|c| c.response.take());
        match slot {
            Some(tx) => {
                let _ = tx.send(response);
            }
            None => {
                tracing::debug!(request_id = %response.request_id, server_id = %response.server_id, "late or extra response ignored")
            }
        }
    }

    #[cfg(test)]
    fn pending(&self) -> (usize, usize) {
        let table = self.lock();
        (table.claims.len(), table.calls.len())
    }
}

enum PendingKind {
    Claim,
    Call,
}

/// Removes a pending wait from the table when its waiter is done (or dropped mid-wait).
struct Pending {
    routes: Arc<Routes>,
    request_id: String,
    kind: PendingKind,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut table = self.routes.lock();
        match self.kind {
            PendingKind::Claim => {
                table.claims.remove(&self.request_id);
            }
            PendingKind::Call => {
                table.calls.remove(&self.request_id);
            }
        }
    }
}

/// A served request's wait for the client's choice.
pub(super) struct ClaimWait {
    pub(super) response: oneshot::Receiver<ClaimResponse>,
    _pending: Pending,
}

/// A call's wait for claims and its response.
pub(super) struct CallWait {
    pub(super) claims: mpsc::Receiver<ClaimRequest>,
    pub(super) response: oneshot::Receiver<Response>,
    _pending: Pending,
}

/// The task that reads the bus. It holds the handle weakly: it ends when the last [`Psrpc`]
/// (and [`Incoming`]) is dropped and the bus closes.
pub(super) struct Router {
    pub(super) routes: Arc<Routes>,
    pub(super) psrpc: Weak<Inner>,
    pub(super) incoming: mpsc::Sender<Incoming>,
    pub(super) reconnecting: Arc<AtomicBool>,
}

impl Router {
    pub(super) async fn run(self, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(m) => self.on_message(m),
                Event::Disconnected => {
                    tracing::warn!("psrpc: redis connection lost; reconnecting");
                    self.reconnect();
                }
            }
        }
        tracing::debug!("psrpc router stopped");
    }

    fn on_message(&self, m: Message) {
        match self.routes.route(&m.channel) {
            Some(Route::Requests { method, topic }) => self.on_request(m, method, topic),
            Some(Route::ClaimResponses) => {
                if let Some(c) = decode::<ClaimResponse>(&m) {
                    self.routes.on_claim_response(c);
                }
            }
            Some(Route::ClaimRequests) => {
                if let Some(c) = decode::<ClaimRequest>(&m) {
                    self.routes.on_claim_request(c);
                }
            }
            Some(Route::Responses) => {
                if let Some(r) = decode::<Response>(&m) {
                    self.routes.on_response(r);
                }
            }
            None => {
                tracing::debug!(channel = %m.channel, "psrpc: message on an unrouted channel ignored")
            }
        }
    }

    fn on_request(&self, m: Message, method: &'static Method, topic: String) {
        let Some(request) = decode::<Request>(&m) else {
            return;
        };
        if request.request_id.is_empty() || request.client_id.is_empty() {
            tracing::warn!(channel = %m.channel, "psrpc: request without request or client id dropped");
            return;
        }
        if now_ns() >= request.expiry {
            tracing::debug!(channel = %m.channel, request_id = %request.request_id, "psrpc: expired request dropped");
            return;
        }
        let Some(inner) = self.psrpc.upgrade() else {
            return;
        };
        let incoming = Incoming {
            method,
            topic,
            request_id: request.request_id,
            client_id: request.client_id,
            sent_at_ns: request.sent_at,
            expiry_ns: request.expiry,
            payload: request.raw_request,
            envelope: m.payload,
            psrpc: Psrpc { inner },
        };
        match self.incoming.try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(r)) => tracing::warn!(
                channel = %m.channel, request_id = %r.request_id,
                "psrpc: request dropped: the handler is not keeping up"
            ),
            Err(mpsc::error::TrySendError::Closed(r)) => tracing::debug!(
                channel = %m.channel, request_id = %r.request_id,
                "psrpc: request dropped: nobody takes requests"
            ),
        }
    }

    /// Pings until the connection is back (the connection manager then resubscribes every
    /// channel), unless a reconnect is already under way or the handle is gone.
    fn reconnect(&self) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let psrpc = self.psrpc.clone();
        let reconnecting = self.reconnecting.clone();
        tokio::spawn(async move {
            let mut delay = RECONNECT_DELAYS.0;
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = psrpc.upgrade() else { break };
                match inner.bus.clone().ping().await {
                    Ok(()) => {
                        tracing::info!("psrpc: redis connection re-established");
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "psrpc: redis still unreachable"),
                }
                delay = (delay * 2).min(RECONNECT_DELAYS.1);
            }
            reconnecting.store(false, Ordering::Release);
        });
    }
}

/// The message's envelope contents, or None (logged) if it is not an `M`.
fn decode<M: Envelope>(m: &Message) -> Option<M> {
    match envelope::unwrap::<M>(&m.payload) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(channel = %m.channel, len = m.payload.len(), error = %e, "psrpc: message dropped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_are_removed_however_they_end() {
        let routes = Arc::new(Routes::default());
        let claim = routes.wait_claim("REQ_1");
        let call = routes.start_call("REQ_2");
        assert_eq!(routes.pending(), (1, 1));
        routes.on_claim_response(ClaimResponse {
            request_id: "REQ_1".into(),
            server_id: "SRV_1".into(),
        });
        assert_eq!(routes.pending(), (0, 1), "delivered claims leave the table");
        assert_eq!(claim.response.await.expect("delivered").server_id, "SRV_1");
        drop(call);
        assert_eq!(routes.pending(), (0, 0), "a dropped call leaves the table");
        let timed_out = routes.wait_claim("REQ_3");
        drop(timed_out);
        assert_eq!(routes.pending(), (0, 0));
    }

    #[tokio::test]
    async fn calls_get_their_claims_and_one_response() {
        let routes = Arc::new(Routes::default());
        let mut call = routes.start_call("REQ_1");
        for i in 0..(CLAIMS_PER_CALL + 5) {
            routes.on_claim_request(ClaimRequest {
                request_id: "REQ_1".into(),
                server_id: format!("SRV_{i}"),
                affinity: 1.0,
            });
        }
        routes.on_claim_request(ClaimRequest {
            request_id: "REQ_other".into(),
            ..ClaimRequest::default()
        });
        let mut n = 0;
        while call.claims.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, CLAIMS_PER_CALL, "extra claims are dropped, never block");
        for server in ["SRV_a", "SRV_b"] {
            routes.on_response(Response {
                request_id: "REQ_1".into(),
                server_id: server.into(),
                ..Response::default()
            });
        }
        assert_eq!(call.response.await.expect("delivered").server_id, "SRV_a");
    }

    #[test]
    fn routes_are_added_once() {
        let routes = Routes::default();
        assert!(routes.add("A|REQ", Route::ClaimResponses));
        assert!(!routes.add("A|REQ", Route::Responses));
        assert!(matches!(routes.route("A|REQ"), Some(Route::ClaimResponses)));
        assert!(routes.remove("A|REQ").is_some());
        assert!(routes.route("A|REQ").is_none());
    }
}
