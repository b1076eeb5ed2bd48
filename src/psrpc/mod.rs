//! psrpc on Redis: the RPC transport livekit-server (v1.4.2 and later) uses to drive egress
//! workers (spec/egress.md §1).
//!
//! Every payload is an envelope ([`envelope`]) holding a `Request`, `Response`, `ClaimRequest`
//! or `ClaimResponse`; channel names come from [`channels`]. A [`Psrpc`] is one connection
//! ([`crate::bus::Bus`]) with one router task that reads every subscribed channel:
//! - as a **server**, [`Psrpc::serve`] subscribes a method's request channel (and its claim
//!   channel); each live request arrives as an [`Incoming`], which the front-end claims
//!   ([`Incoming::claim`]: `SET NX` for queue methods, then `ClaimRequest` and the client's
//!   `ClaimResponse`) and answers ([`Incoming::respond`]);
//! - as a **client**, [`Psrpc::call`] publishes a request, picks a claiming server, confirms it,
//!   and waits for the response.
//!
//! Every wait ends at the request's expiry or the call's timeout. Reconnects are the bus's:
//! subscriptions come back by themselves; the router survives the loss.

pub mod channels;
pub mod envelope;
pub mod error;
mod ids;
pub mod method;
pub mod proto;
mod router;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use error::{ErrorCode, PsrpcError, RpcError};
pub use method::{
    Method, MethodKind, CREATE_EGRESS, LIST_ACTIVE_EGRESS, START_EGRESS, STOP_EGRESS,
    UPDATE_EGRESS, UPDATE_EGRESS_INFO, UPDATE_STREAM,
};

use crate::bus::Bus;
use crate::config::RedisConfig;
use envelope::wrap;
use proto::internal::{ClaimRequest, ClaimResponse, Request, Response};
use router::{Route, Router, Routes};

/// Requests that may wait for the front-end before more are dropped.
const INCOMING_CAPACITY: usize = 64;
/// The longest a served request waits for the client's choice, whatever its expiry says.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);
/// For affinity methods: how long after the first claim the best one is taken
/// (psrpc's `DefaultAffinityShortCircuit`).
const AFFINITY_SHORT_CIRCUIT: Duration = Duration::from_millis(200);

/// Unix time in nanoseconds, psrpc's clock.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A psrpc endpoint on Redis: server for the methods it serves, client for the services given
/// to [`Psrpc::connect`]. Cheap to clone; clones share the connection and the router.
#[derive(Clone)]
pub struct Psrpc {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Psrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Psrpc")
            .field("server_id", &self.inner.server_id)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    bus: Bus,
    server_id: String,
    client_id: String,
    routes: Arc<Routes>,
}

impl Psrpc {
    /// Connects, starts the router, and subscribes `<svc>|<client_id>|RES` and `...|CLAIM` for
    /// each service in `client_services` (the ones [`Psrpc::call`] will call). Requests for
    /// served methods arrive on the returned receiver.
    pub async fn connect(
        cfg: &RedisConfig,
        client_services: &[&'static str],
    ) -> Result<(Psrpc, mpsc::Receiver<Incoming>), PsrpcError> {
        let (bus, events) = Bus::connect(cfg).await?;
        let routes = Arc::new(Routes::default());
        let inner = Arc::new(Inner {
            bus,
            server_id: ids::server_id(),
            client_id: ids::client_id(),
            routes: routes.clone(),
        });
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_CAPACITY);
        let router = Router {
            routes,
            psrpc: Arc::downgrade(&inner),
            incoming: incoming_tx,
            reconnecting: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(router.run(events));

        let psrpc = Psrpc { inner };
        for service in client_services {
            let id = &psrpc.inner.client_id;
            psrpc
                .subscribe(&channels::response_channel(service, id), Route::Responses)
                .await?;
            psrpc
                .subscribe(
                    &channels::claim_request_channel(service, id),
                    Route::ClaimRequests,
                )
                .await?;
        }
        tracing::info!(server_id = %psrpc.inner.server_id, client_id = %psrpc.inner.client_id, "psrpc connected");
        Ok((psrpc, incoming_rx))
    }

    /// `SRV_...`: how this endpoint names itself in claims and responses.
    pub fn server_id(&self) -> &str {
        &self.inner.server_id
    }

    /// `CLI_...`: how this endpoint names itself in requests.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Starts serving `m` on `topic`: subscribes `<svc>|<method>|<topic>|REQ` and, unless `m` is
    /// a multi method, `...|RCLAIM` (first, so that no choice is missed). Serving what is already
    /// served does nothing.
    pub async fn serve(&self, m: &'static Method, topic: &str) -> Result<(), PsrpcError> {
        if m.requires_claim() {
            self.subscribe(&m.claim_response_channel(topic), Route::ClaimResponses)
                .await?;
        }
        let route = Route::Requests {
            method: m,
            topic: topic.to_owned(),
        };
        if let Err(e) = self.subscribe(&m.request_channel(topic), route).await {
            if m.requires_claim() {
                let _ = self.unsubscribe(&m.claim_response_channel(topic)).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Stops serving `m` on `topic`. Requests already delivered can still be answered; their
    /// claims may no longer hear the client's choice.
    pub async fn unserve(&self, m: &'static Method, topic: &str) -> Result<(), PsrpcError> {
        let result = self.unsubscribe(&m.request_channel(topic)).await;
        if m.requires_claim() {
            self.unsubscribe(&m.claim_response_channel(topic)).await?;
        }
        result
    }

    /// Routes `channel` and subscribes it; nothing if it is routed already.
    async fn subscribe(&self, channel: &str, route: Route) -> Result<(), PsrpcError> {
        if !self.inner.routes.add(channel, route) {
            return Ok(());
        }
        if let Err(e) = self.inner.bus.clone().subscribe(channel).await {
            self.inner.routes.remove(channel);
            return Err(e.into());
        }
        tracing::debug!(%channel, "psrpc: subscribed");
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), PsrpcError> {
        if self.inner.routes.remove(channel).is_none() {
            return Ok(());
        }
        self.inner.bus.clone().unsubscribe(channel).await?;
        tracing::debug!(%channel, "psrpc: unsubscribed");
        Ok(())
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), PsrpcError> {
        Ok(self.inner.bus.clone().publish(channel, payload).await?)
    }

    /// One attempt of a call: publishes `Request{raw_request: request}` on the method's `REQ`
    /// channel with `expiry = now + timeout`, takes a claim (queue methods: the first; affinity
    /// methods: affinity >= 1 at once, else the best within 200 ms of the first), confirms it on
    /// `RCLAIM`, and returns the response's `raw_response` or error. No claim within `timeout`:
    /// `unavailable` "no response from servers"; no response: `deadline_exceeded` "request
    /// timed out". A multi method returns the first response. The method's service must be one
    /// of `connect`'s `client_services`.
    pub async fn call(
        &self,
        m: &'static Method,
        topic: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let deadline = Instant::now() + timeout;
        let request_id = ids::request_id();
        let now = now_ns();
        let req = Request {
            request_id: request_id.clone(),
            client_id: self.inner.client_id.clone(),
            sent_at: now,
            expiry: now.saturating_add(duration_ns(timeout)),
            multi: m.kind == MethodKind::Multi,
            raw_request: request.to_vec(),
            ..Request::default()
        };
        let mut wait = self.inner.routes.start_call(&request_id);
        self.publish(&m.request_channel(topic), &wrap(&req)).await?;

        if m.requires_claim() {
            let server_id = match select_server(m.kind, &mut wait, deadline).await {
                Selection::Server(id) => id,
                Selection::Answered(res) => return response_result(res),
                Selection::Failed(e) => {
                    tracing::debug!(method = m.name, %request_id, error = %e, "psrpc: call not claimed");
                    return Err(e);
                }
            };
            let choice = ClaimResponse {
                request_id: request_id.clone(),
                server_id,
            };
            self.publish(&m.claim_response_channel(topic), &wrap(&choice))
                .await?;
        }

        match tokio::time::timeout_at(deadline, &mut wait.response).await {
            Ok(Ok(res)) => response_result(res),
            Ok(Err(_)) => Err(PsrpcError::Closed.into()),
            Err(_) => {
                tracing::debug!(method = m.name, %request_id, "psrpc: call timed out");
                Err(RpcError::timed_out())
            }
        }
    }

    /// Whether Redis answers a PING; a failed command is also what makes a lost connection be
    /// re-established.
    pub async fn ping(&self) -> Result<(), PsrpcError> {
        Ok(self.inner.bus.clone().ping().await?)
    }
}

/// A response's payload, or its error (psrpc decides by `error` alone).
fn response_result(res: Response) -> Result<Vec<u8>, RpcError> {
    if res.error.is_empty() {
        Ok(res.raw_response)
    } else {
        Err(RpcError::from_response(&res.code, &res.error))
    }
}

enum Selection {
    Server(String),
    /// A response came before any choice (a server refusing a malformed request).
    Answered(Response),
    Failed(RpcError),
}

/// psrpc's `selectServer` with the options its generated clients use: queue methods take the
/// first claim; affinity methods the best claim above 0 within the short-circuit window after
/// the first, or at once one with affinity 1.
async fn select_server(
    kind: MethodKind,
    wait: &mut router::CallWait,
    deadline: Instant,
) -> Selection {
    let mut best: Option<(String, f32)> = None;
    let mut received = 0usize;
    let mut window_end = deadline;
    loop {
        tokio::select! {
            claim = wait.claims.recv() => {
                let Some(claim) = claim else {
                    return Selection::Failed(PsrpcError::Closed.into());
                };
                received += 1;
                if kind != MethodKind::Affinity || claim.affinity >= 1.0 {
                    return Selection::Server(claim.server_id);
                }
                if claim.affinity > best.as_ref().map_or(0.0, |b| b.1) {
                    best = Some((claim.server_id, claim.affinity));
                }
                if received == 1 {
                    window_end = deadline.min(Instant::now() + AFFINITY_SHORT_CIRCUIT);
                }
            }
            res = &mut wait.response => {
                return match res {
                    Ok(res) => Selection::Answered(res),
                    Err(_) => Selection::Failed(PsrpcError::Closed.into()),
                };
            }
            () = tokio::time::sleep_until(window_end) => {
                return match best {
                    Some((server, _)) => Selection::Server(server),
                    None if received > 0 => Selection::Failed(RpcError::new(
                        ErrorCode::Unavailable,
                        format!("no servers available (received {received} responses)"),
                    )),
                    None => Selection::Failed(RpcError::no_response()),
                };
            }
        }
    }
}

/// A request that arrived for a served method: of the right envelope type, decodable, and not
/// expired when it arrived.
pub struct Incoming {
    pub method: &'static Method,
    pub topic: String,
    pub request_id: String,
    pub client_id: String,
    /// When the client sent it, unix nanoseconds.
    pub sent_at_ns: i64,
    /// When the client gives up on it, unix nanoseconds.
    pub expiry_ns: i64,
    /// `raw_request`: the RPC's request message, encoded.
    pub payload: Vec<u8>,
    /// The exact bytes received: the queue claim key is their hash.
    envelope: Vec<u8>,
    psrpc: Psrpc,
}

impl std::fmt::Debug for Incoming {
    /// Without the payload: requests carry tokens and storage keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field(
                "method",
                &format_args!("{}.{}", self.method.service, self.method.name),
            )
            .field("topic", &self.topic)
            .field("request_id", &self.request_id)
            .field("client_id", &self.client_id)
            .field("expiry_ns", &self.expiry_ns)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Incoming {
    /// Whether the client has given up on it.
    pub fn expired(&self) -> bool {
        now_ns() >= self.expiry_ns
    }

    /// Time left until the expiry.
    pub fn remaining(&self) -> Duration {
        u64::try_from(self.expiry_ns.saturating_sub(now_ns()))
            .map(Duration::from_nanos)
            .unwrap_or(Duration::ZERO)
    }

    /// Claims the request; Ok(true) if this server is to handle it.
    /// - Multi methods: Ok(true), no claim.
    /// - `affinity` below 0 (or NaN), or the request expired: Ok(false), nothing published.
    ///   Methods without an affinity function (queue methods) pass 1.
    /// - Queue methods first race `SET NX` on the hash of the envelope's exact bytes; a lost
    ///   race is Ok(false).
    /// - Then `ClaimRequest{request_id, server_id, affinity}` on `<svc>|<client_id>|CLAIM`, and
    ///   a wait (until the expiry, at most a minute) for the client's `ClaimResponse`: Ok(true)
    ///   iff it names this server; none in time is Ok(false).
    pub async fn claim(&self, affinity: f32) -> Result<bool, PsrpcError> {
        let m = self.method;
        if m.kind == MethodKind::Multi {
            return Ok(true);
        }
        if affinity.is_nan() || affinity < 0.0 || self.expired() {
            return Ok(false);
        }
        let inner = &self.psrpc.inner;
        if m.kind == MethodKind::Queue && !inner.bus.clone().claim(&self.envelope).await? {
            tracing::debug!(method = m.name, request_id = %self.request_id, "psrpc: queue request taken by another server");
            return Ok(false);
        }
        let wait = inner.routes.wait_claim(&self.request_id);
        let claim = ClaimRequest {
            request_id: self.request_id.clone(),
            server_id: inner.server_id.clone(),
            affinity,
        };
        self.psrpc
            .publish(
                &channels::claim_request_channel(m.service, &self.client_id),
                &wrap(&claim),
            )
            .await?;
        match tokio::time::timeout(self.remaining().min(MAX_CLAIM_WAIT), wait.response).await {
            Ok(Ok(choice)) => {
                let won = choice.server_id == inner.server_id;
                tracing::debug!(method = m.name, request_id = %self.request_id, chosen = %choice.server_id, won, "psrpc: claim answered");
                Ok(won)
            }
            Ok(Err(_)) => Ok(false),
            Err(_) => {
                tracing::debug!(method = m.name, request_id = %self.request_id, "psrpc: no choice before the request expired");
                Ok(false)
            }
        }
    }

    /// Answers: `Response{request_id, server_id, sent_at, raw_response}` or, for an error,
    /// `{.., error, code}` on `<svc>|<client_id>|RES`. An error with an empty message carries its
    /// code as the message (psrpc clients tell errors by a non-empty `error`).
    pub async fn respond(&self, result: Result<Vec<u8>, RpcError>) -> Result<(), PsrpcError> {
        let mut res = Response {
            request_id: self.request_id.clone(),
            server_id: self.psrpc.inner.server_id.clone(),
            sent_at: now_ns(),
            ..Response::default()
        };
        match result {
            Ok(raw) => res.raw_response = raw,
            Err(e) => {
                res.code = e.code.as_str().to_owned();
                res.error = if e.message.is_empty() {
                    res.code.clone()
                } else {
                    e.message
                };
            }
        }
        self.psrpc
            .publish(
                &channels::response_channel(self.method.service, &self.client_id),
                &wrap(&res),
            )
            .await
    }
}
