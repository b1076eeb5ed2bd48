//! livekit-server's side of the egress protocol (spec/egress.md §1-§3), for tests: psrpc over
//! plain Redis pub/sub, written from the psrpc and livekit/protocol sources independently of the
//! crate's own psrpc module.
//!
//! One [`EgressServer`] is one livekit-server node. As a psrpc *client* it calls the worker the
//! way livekit-server does (`EgressInternal.StartEgress` with affinity selection and retries,
//! `EgressInternal.ListActiveEgress` as a multi RPC, `EgressHandler.StopEgress` /
//! `UpdateStream` as queue RPCs on the egress id). As a psrpc *server* it serves the worker's
//! `IOInfo.CreateEgress` / `UpdateEgress` (or `UpdateEgressInfo` for v1.4.2 - v1.5.0): it races
//! the `SET NX` queue claim like every server node, claims with affinity 1, waits for the worker's
//! `ClaimResponse`, stores the `EgressInfo` and answers an empty response.
//!
//! Everything that arrives is recorded (claims and responses per request id, IOInfo updates in
//! the order they were handled), so tests can count claims and answers per request and check the
//! order of status updates.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine;
use futures::StreamExt;
use livekit_protocol::{EgressInfo, EgressStatus, StopEgressRequest, UpdateStreamRequest};
use prost::Message;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

use self::wire::{ClaimRequest, ClaimResponse, Request, Response};

/// How long a StartEgress waits for its response at least (livekit-server: `max(timeout, 10 s)`).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// StopEgress and UpdateStream: livekit-server's request timeout.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a ListActiveEgress collects responses.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a queue claim key lives (psrpc's lockExpiration).
pub const CLAIM_KEY_TTL_SECS: u64 = 5;

pub const EGRESS_INTERNAL: &str = "EgressInternal";
pub const EGRESS_HANDLER: &str = "EgressHandler";
pub const IO_INFO: &str = "IOInfo";

/// psrpc's envelope and the `rpc` package messages, trimmed, with the field numbers of
/// `psrpc/internal/internal.proto` and `protocol/protobufs/rpc/egress.proto`.
pub mod wire {
    use std::collections::HashMap;

    use prost::Message;

    pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

    /// `internal.Msg`: the layout of `google.protobuf.Any` plus a channel (empty on Redis).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Msg {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(string, tag = "3")]
        pub channel: String,
    }

    /// `google.protobuf.Any` (the legacy `request` / `response` fields; never set by us).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `internal.Request`. `skip_claim = 9` is not in the mirrored internal.proto but the spec
    /// names it (psrpc v0.7.4+); it is decoded for inspection and never set.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub client_id: String,
        #[prost(int64, tag = "3")]
        pub sent_at: i64,
        #[prost(int64, tag = "4")]
        pub expiry: i64,
        #[prost(bool, tag = "5")]
        pub multi: bool,
        #[prost(message, optional, tag = "6")]
        pub request: Option<Any>,
        #[prost(map = "string, string", tag = "7")]
        pub metadata: HashMap<String, String>,
        #[prost(bytes = "vec", tag = "8")]
        pub raw_request: Vec<u8>,
        #[prost(bool, tag = "9")]
        pub skip_claim: bool,
    }

    /// `internal.Response`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub server_id: String,
        #[prost(int64, tag = "3")]
        pub sent_at: i64,
        #[prost(message, optional, tag = "4")]
        pub response: Option<Any>,
        #[prost(string, tag = "5")]
        pub error: String,
        #[prost(string, tag = "6")]
        pub code: String,
        #[prost(bytes = "vec", tag = "7")]
        pub raw_response: Vec<u8>,
        #[prost(message, repeated, tag = "8")]
        pub error_details: Vec<Any>,
    }

    /// `internal.ClaimRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClaimRequest {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub server_id: String,
        #[prost(float, tag = "3")]
        pub affinity: f32,
    }

    /// `internal.ClaimResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClaimResponse {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub server_id: String,
    }

    /// The four envelope payload types and their protobuf full names.
    pub trait Named: Message + Default {
        const FULL_NAME: &'static str;
    }
    impl Named for Request {
        const FULL_NAME: &'static str = "internal.Request";
    }
    impl Named for Response {
        const FULL_NAME: &'static str = "internal.Response";
    }
    impl Named for ClaimRequest {
        const FULL_NAME: &'static str = "internal.ClaimRequest";
    }
    impl Named for ClaimResponse {
        const FULL_NAME: &'static str = "internal.ClaimResponse";
    }

    /// `type.googleapis.com/<full name>`.
    pub fn type_url(full_name: &str) -> String {
        format!("{TYPE_URL_PREFIX}{full_name}")
    }

    /// The bytes published on Redis for `m`: `Msg{type_url, value}`, channel empty.
    pub fn seal<M: Named>(m: &M) -> Vec<u8> {
        seal_as(M::FULL_NAME, m.encode_to_vec())
    }

    /// An envelope naming `full_name` around arbitrary `value` bytes (for malformed input).
    pub fn seal_as(full_name: &str, value: Vec<u8>) -> Vec<u8> {
        Msg {
            type_url: type_url(full_name),
            value,
            channel: String::new(),
        }
        .encode_to_vec()
    }

    /// The `M` inside an envelope, if the payload is one and names `M`.
    pub fn open<M: Named>(payload: &[u8]) -> Option<M> {
        let msg = Msg::decode(payload).ok()?;
        if msg.type_url != type_url(M::FULL_NAME) {
            return None;
        }
        M::decode(msg.value.as_slice()).ok()
    }

    /// Package `rpc` of livekit/protocol (`protobufs/rpc/egress.proto`).
    pub mod rpc {
        /// `rpc.StartEgressRequest`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct StartEgressRequest {
            #[prost(string, tag = "1")]
            pub egress_id: String,
            #[prost(
                oneof = "start_egress_request::Request",
                tags = "16, 17, 5, 11, 13, 6, 7"
            )]
            pub request: Option<start_egress_request::Request>,
            #[prost(string, tag = "3")]
            pub room_id: String,
            #[prost(string, tag = "18")]
            pub room_name: String,
            #[prost(string, tag = "8")]
            pub token: String,
            #[prost(string, tag = "9")]
            pub ws_url: String,
            #[prost(bool, tag = "10")]
            pub cloud_backup_enabled: bool,
            #[prost(double, tag = "14")]
            pub estimated_cpu: f64,
            #[prost(int32, tag = "15")]
            pub retry_count: i32,
        }

        pub mod start_egress_request {
            #[allow(clippy::large_enum_variant)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Request {
                /// The unified request (2026); not a browser worker's.
                #[prost(message, tag = "16")]
                Egress(livekit_protocol::StartEgressRequest),
                #[prost(message, tag = "17")]
                Replay(livekit_protocol::ExportReplayRequest),
                #[prost(message, tag = "5")]
                RoomComposite(livekit_protocol::RoomCompositeEgressRequest),
                #[prost(message, tag = "11")]
                Web(livekit_protocol::WebEgressRequest),
                #[prost(message, tag = "13")]
                Participant(livekit_protocol::ParticipantEgressRequest),
                #[prost(message, tag = "6")]
                TrackComposite(livekit_protocol::TrackCompositeEgressRequest),
                #[prost(message, tag = "7")]
                Track(livekit_protocol::TrackEgressRequest),
            }
        }

        /// `rpc.ListActiveEgressRequest` (empty).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ListActiveEgressRequest {}

        /// `rpc.ListActiveEgressResponse`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ListActiveEgressResponse {
            #[prost(string, repeated, tag = "1")]
            pub egress_ids: Vec<String>,
        }
    }
}

/// A psrpc error as a caller sees it: `Response.code` and `Response.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: String,
    pub msg: String,
}

impl RpcError {
    pub fn new(code: &str, msg: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            msg: msg.into(),
        }
    }

    fn no_response() -> Self {
        Self::new("unavailable", "no response from servers")
    }

    fn timed_out() -> Self {
        Self::new("deadline_exceeded", "request timed out")
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new("internal", e.to_string())
    }

    /// The codes livekit-server retries StartEgress on.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code.as_str(),
            "deadline_exceeded" | "resource_exhausted" | "unavailable"
        )
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for RpcError {}

/// `<prefix>` + 12 characters of `[a-zA-Z0-9]` (psrpc's ids, livekit's `EG_` ids).
pub fn new_id(prefix: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 12)
    )
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits in i64")
}

/// A channel name: parts sanitised and joined with `|`, empty parts dropped (psrpc's
/// `formatChannel('|', ...)`).
pub fn channel(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        let sanitised = sanitise(part);
        if sanitised.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('|');
        }
        out.push_str(&sanitised);
    }
    out
}

/// `[0-9A-Za-z_]` kept, other characters below U+10000 as `u+%04x`, above as `U+%08x`.
pub fn sanitise(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if (c as u32) < 0x10000 {
            out.push_str(&format!("u+{:04x}", c as u32));
        } else {
            out.push_str(&format!("U+{:08x}", c as u32));
        }
    }
    out
}

/// `<Service>|<Method>|<topic>|REQ`
pub fn req_channel(service: &str, method: &str, topic: &str) -> String {
    channel(&[service, method, topic, "REQ"])
}

/// `<Service>|<Method>|<topic>|RCLAIM`
pub fn rclaim_channel(service: &str, method: &str, topic: &str) -> String {
    channel(&[service, method, topic, "RCLAIM"])
}

/// `<Service>|<clientID>|CLAIM`
pub fn claim_channel(service: &str, client_id: &str) -> String {
    channel(&[service, client_id, "CLAIM"])
}

/// `<Service>|<clientID>|RES`
pub fn res_channel(service: &str, client_id: &str) -> String {
    channel(&[service, client_id, "RES"])
}

/// Which livekit-server generation the node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// v1.5.1 and later: `IOInfo.CreateEgress` / `IOInfo.UpdateEgress`.
    Current,
    /// v1.4.2 - v1.5.0: `IOInfo.UpdateEgressInfo` for every update.
    Legacy,
}

impl Flavor {
    pub fn io_methods(self) -> &'static [&'static str] {
        match self {
            Flavor::Current => &["CreateEgress", "UpdateEgress"],
            Flavor::Legacy => &["UpdateEgressInfo"],
        }
    }
}

/// How the node's IOInfo service behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Subscribed, claims and answers.
    Up,
    /// Unsubscribed from the IOInfo request channels: the worker sees no claim (`unavailable`).
    Down,
    /// Claims but never answers (the worker sees `deadline_exceeded`); nothing is stored.
    ClaimOnly,
}

/// How a client call picks a server among the claims (psrpc's SelectionOpts as livekit-server
/// sets them for egress).
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    /// A claim at least this high is taken at once.
    pub maximum_affinity: f32,
    /// With no claim by then, the call fails `unavailable`.
    pub affinity_timeout: Duration,
    /// After the first claim, the best one so far is taken after this long.
    pub short_circuit: Duration,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            maximum_affinity: 1.0,
            affinity_timeout: Duration::from_secs(1),
            short_circuit: Duration::from_millis(500),
        }
    }
}

/// Options of one client call (with its retries).
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Per attempt, also the request's expiry.
    pub timeout: Duration,
    /// Attempts in all; each retry is a new request id with the same payload.
    pub attempts: u32,
    pub selection: Selection,
}

impl CallOptions {
    /// livekit-server's StartEgress: 10 s, 3 attempts.
    pub fn start() -> Self {
        Self {
            timeout: START_TIMEOUT,
            attempts: 3,
            selection: Selection::default(),
        }
    }

    /// livekit-server's StopEgress / UpdateStream: 3 s, 3 attempts.
    pub fn handler() -> Self {
        Self {
            timeout: HANDLER_TIMEOUT,
            attempts: 3,
            selection: Selection::default(),
        }
    }

    pub fn once(mut self) -> Self {
        self.attempts = 1;
        self
    }
}

/// A claim that reached this node's client.
#[derive(Debug, Clone)]
pub struct Claim {
    pub server_id: String,
    pub affinity: f32,
    pub at: Instant,
}

/// A response that reached this node's client.
#[derive(Debug, Clone)]
pub struct Answer {
    pub server_id: String,
    pub code: String,
    pub error: String,
    pub raw_response: Vec<u8>,
    pub at: Instant,
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// Everything seen for one request this node's client sent (also after the call returned).
#[derive(Debug, Clone, Default)]
pub struct CallRecord {
    pub service: String,
    pub method: String,
    pub topic: String,
    pub claims: Vec<Claim>,
    /// The server this node named in its ClaimResponse.
    pub chosen: Option<String>,
    pub responses: Vec<Answer>,
    /// When this node published the request (for measurements).
    pub sent: Option<Instant>,
    /// When this node published its ClaimResponse (for measurements).
    pub chosen_at: Option<Instant>,
}

impl CallRecord {
    /// The distinct servers that claimed the request.
    pub fn claimants(&self) -> BTreeSet<String> {
        self.claims.iter().map(|c| c.server_id.clone()).collect()
    }
}

/// The result of a call and the request ids of its attempts, in order.
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<T, RpcError>,
    pub request_ids: Vec<String>,
}

/// An IOInfo update this node handled (won the queue claim, was chosen, stored).
#[derive(Debug, Clone)]
pub struct IoUpdate {
    /// `CreateEgress`, `UpdateEgress` or `UpdateEgressInfo`.
    pub method: String,
    pub info: EgressInfo,
    pub request_id: String,
    pub client_id: String,
    /// When the node stored it (wall clock, for comparing with page timestamps).
    pub at: SystemTime,
    /// When the request reached the node, before its queue claim (for measurements).
    pub arrived: Instant,
}

impl IoUpdate {
    pub fn status(&self) -> EgressStatus {
        EgressStatus::try_from(self.info.status).unwrap_or(EgressStatus::EgressFailed)
    }
}

/// True for the statuses an egress ends with.
pub fn is_final(status: EgressStatus) -> bool {
    matches!(
        status,
        EgressStatus::EgressComplete
            | EgressStatus::EgressFailed
            | EgressStatus::EgressAborted
            | EgressStatus::EgressLimitReached
    )
}

/// A payload the node received but could not place (bad envelope, unknown request id, ...).
#[derive(Debug, Clone)]
pub struct Stray {
    pub channel: String,
    pub what: String,
}

#[derive(Default)]
struct State {
    calls: HashMap<String, CallRecord>,
    claim_tx: HashMap<String, mpsc::UnboundedSender<ClaimRequest>>,
    res_tx: HashMap<String, mpsc::UnboundedSender<Response>>,
    io_claims: HashMap<String, oneshot::Sender<ClaimResponse>>,
    updates: Vec<IoUpdate>,
    /// IOInfo requests answered `malformed_request`, by request id.
    io_malformed: Vec<String>,
    /// IOInfo requests claimed but left unanswered (ClaimOnly), by request id.
    io_unanswered: Vec<String>,
    io_clients: BTreeSet<String>,
    strays: Vec<Stray>,
}

struct Inner {
    client_id: String,
    server_id: String,
    flavor: Flavor,
    conn: redis::aio::MultiplexedConnection,
    state: Mutex<State>,
    io_mode: Mutex<IoMode>,
}

/// One livekit-server node on a Redis: a psrpc client of the egress worker and the IOInfo
/// server it reports to.
pub struct EgressServer {
    pub client_id: String,
    pub server_id: String,
    pub flavor: Flavor,
    inner: Arc<Inner>,
    sink: tokio::sync::Mutex<redis::aio::PubSubSink>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for EgressServer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl EgressServer {
    /// A v1.5.1+ node on `redis_url` (`redis://127.0.0.1:<port>`), subscribed and serving.
    pub async fn start(redis_url: &str) -> Result<Self> {
        Self::start_with(redis_url, Flavor::Current).await
    }

    pub async fn start_with(redis_url: &str, flavor: Flavor) -> Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
        let client_id = new_id("CLI_");
        let server_id = new_id("SRV_");
        for service in [EGRESS_INTERNAL, EGRESS_HANDLER] {
            sink.subscribe(claim_channel(service, &client_id)).await?;
            sink.subscribe(res_channel(service, &client_id)).await?;
        }
        for method in flavor.io_methods() {
            sink.subscribe(req_channel(IO_INFO, method, "")).await?;
            sink.subscribe(rclaim_channel(IO_INFO, method, "")).await?;
        }
        let inner = Arc::new(Inner {
            client_id: client_id.clone(),
            server_id: server_id.clone(),
            flavor,
            conn,
            state: Mutex::new(State::default()),
            io_mode: Mutex::new(IoMode::Up),
        });
        let reader_inner = inner.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_owned();
                let payload = msg.get_payload_bytes().to_vec();
                reader_inner.dispatch(channel, payload);
            }
        });
        Ok(Self {
            client_id,
            server_id,
            flavor,
            inner,
            sink: tokio::sync::Mutex::new(sink),
            reader,
        })
    }

    // ---- client side: livekit-server calling the worker ----

    /// StartEgress as livekit-server sends it: topic "", 10 s, up to 3 attempts on
    /// deadline_exceeded / resource_exhausted / unavailable.
    pub async fn start_egress(
        &self,
        req: wire::rpc::StartEgressRequest,
    ) -> Result<EgressInfo, RpcError> {
        self.start_egress_with(req, CallOptions::start())
            .await
            .result
    }

    pub async fn start_egress_with(
        &self,
        req: wire::rpc::StartEgressRequest,
        opts: CallOptions,
    ) -> Outcome<EgressInfo> {
        // Its storage keys and stream keys must never come out of the worker.
        super::secrets::register_from_debug(&format!("{req:?}"));
        let opts = CallOptions {
            timeout: opts.timeout.max(START_TIMEOUT),
            ..opts
        };
        self.call_retrying(
            EGRESS_INTERNAL,
            "StartEgress",
            "",
            req.encode_to_vec(),
            opts,
        )
        .await
    }

    /// StopEgress on topic = egress id (3 s, 3 attempts).
    pub async fn stop_egress(&self, egress_id: &str) -> Result<EgressInfo, RpcError> {
        self.stop_egress_with(egress_id, CallOptions::handler())
            .await
            .result
    }

    pub async fn stop_egress_with(
        &self,
        egress_id: &str,
        opts: CallOptions,
    ) -> Outcome<EgressInfo> {
        let req = StopEgressRequest {
            egress_id: egress_id.to_owned(),
        };
        self.call_retrying(
            EGRESS_HANDLER,
            "StopEgress",
            egress_id,
            req.encode_to_vec(),
            opts,
        )
        .await
    }

    /// UpdateStream on topic = egress id (3 s, 3 attempts).
    pub async fn update_stream(
        &self,
        egress_id: &str,
        add: &[&str],
        remove: &[&str],
    ) -> Result<EgressInfo, RpcError> {
        add.iter().for_each(|u| super::secrets::register(u));
        let req = UpdateStreamRequest {
            egress_id: egress_id.to_owned(),
            add_output_urls: add.iter().map(|s| (*s).to_owned()).collect(),
            remove_output_urls: remove.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.call_retrying(
            EGRESS_HANDLER,
            "UpdateStream",
            egress_id,
            req.encode_to_vec(),
            CallOptions::handler(),
        )
        .await
        .result
    }

    /// ListActiveEgress (multi): every server's answer within [`LIST_TIMEOUT`], as
    /// `(server_id, egress ids or error)`.
    pub async fn list_active(&self) -> Result<Vec<(String, Result<Vec<String>, RpcError>)>> {
        let raw = wire::rpc::ListActiveEgressRequest {}.encode_to_vec();
        let answers = self
            .call_multi(EGRESS_INTERNAL, "ListActiveEgress", "", raw, LIST_TIMEOUT)
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| {
                let result = if a.is_ok() {
                    wire::rpc::ListActiveEgressResponse::decode(a.raw_response.as_slice())
                        .map(|r| r.egress_ids)
                        .map_err(|e| RpcError::new("malformed_result", e.to_string()))
                } else {
                    Err(RpcError::new(&a.code, a.error.clone()))
                };
                (a.server_id, result)
            })
            .collect())
    }

    /// The union of the egress ids every server listed.
    pub async fn active_egress_ids(&self) -> Result<BTreeSet<String>> {
        let mut ids = BTreeSet::new();
        for (server, answer) in self.list_active().await? {
            match answer {
                Ok(list) => ids.extend(list),
                Err(e) => bail!("ListActiveEgress: {server} answered {e}"),
            }
        }
        Ok(ids)
    }

    async fn call_retrying<T: Message + Default>(
        &self,
        service: &str,
        method: &str,
        topic: &str,
        raw: Vec<u8>,
        opts: CallOptions,
    ) -> Outcome<T> {
        let mut request_ids = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (request_id, result) = self
                .call_once(service, method, topic, raw.clone(), &opts)
                .await;
            request_ids.push(request_id);
            let result = result.and_then(|bytes| {
                T::decode(bytes.as_slice())
                    .map_err(|e| RpcError::new("malformed_result", e.to_string()))
            });
            match result {
                Err(e) if e.is_retryable() && attempt < opts.attempts.max(1) => continue,
                result => {
                    return Outcome {
                        result,
                        request_ids,
                    }
                }
            }
        }
    }

    /// One psrpc single-server RPC with claim selection; the request id and the raw response.
    pub async fn call_once(
        &self,
        service: &str,
        method: &str,
        topic: &str,
        raw: Vec<u8>,
        opts: &CallOptions,
    ) -> (String, Result<Vec<u8>, RpcError>) {
        let request_id = new_id("REQ_");
        let (mut claims, mut responses) =
            self.inner
                .register_call(&request_id, service, method, topic);
        let result = self
            .run_call(
                &request_id,
                service,
                method,
                topic,
                raw,
                opts,
                &mut claims,
                &mut responses,
            )
            .await;
        self.inner.unregister_call(&request_id);
        (request_id, result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_call(
        &self,
        request_id: &str,
        service: &str,
        method: &str,
        topic: &str,
        raw: Vec<u8>,
        opts: &CallOptions,
        claims: &mut mpsc::UnboundedReceiver<ClaimRequest>,
        responses: &mut mpsc::UnboundedReceiver<Response>,
    ) -> Result<Vec<u8>, RpcError> {
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let now = now_ns();
        let req = Request {
            request_id: request_id.to_owned(),
            client_id: self.client_id.clone(),
            sent_at: now,
            expiry: now + nanos(opts.timeout),
            raw_request: raw,
            ..Request::default()
        };
        self.inner.mark_sent(request_id);
        self.inner
            .publish(&req_channel(service, method, topic), wire::seal(&req))
            .await
            .map_err(RpcError::internal)?;

        // Select a server (psrpc client selectServer).
        let sel = opts.selection;
        let mut cutoff = deadline.min(started + sel.affinity_timeout);
        let mut best: Option<(String, f32)> = None;
        let mut count = 0usize;
        let mut early_error: Option<RpcError> = None;
        let mut shorted = false;
        let chosen = loop {
            tokio::select! {
                () = tokio::time::sleep_until(cutoff.into()) => {
                    break match (best.take(), early_error.take()) {
                        (Some((server, _)), _) => Ok(server),
                        (None, Some(e)) => Err(e),
                        (None, None) if count > 0 => Err(RpcError::new(
                            "unavailable",
                            format!("no servers available (received {count} responses)"),
                        )),
                        (None, None) => Err(RpcError::no_response()),
                    };
                }
                Some(claim) = claims.recv() => {
                    count += 1;
                    if claim.affinity >= sel.maximum_affinity {
                        break Ok(claim.server_id);
                    }
                    if claim.affinity > best.as_ref().map_or(0.0, |b| b.1) {
                        best = Some((claim.server_id, claim.affinity));
                    }
                    if !shorted {
                        shorted = true;
                        cutoff = cutoff.min(Instant::now() + sel.short_circuit);
                    }
                }
                Some(res) = responses.recv() => {
                    if !res.error.is_empty() {
                        early_error = Some(RpcError::new(&res.code, res.error));
                    }
                }
            }
        }?;
        self.inner.set_chosen(request_id, &chosen);
        let answer = ClaimResponse {
            request_id: request_id.to_owned(),
            server_id: chosen,
        };
        self.inner
            .publish(&rclaim_channel(service, method, topic), wire::seal(&answer))
            .await
            .map_err(RpcError::internal)?;

        match tokio::time::timeout_at(deadline.into(), responses.recv()).await {
            Ok(Some(res)) if res.error.is_empty() => Ok(res.raw_response),
            Ok(Some(res)) => Err(RpcError::new(&res.code, res.error)),
            Ok(None) | Err(_) => Err(RpcError::timed_out()),
        }
    }

    /// A multi RPC: every response within `timeout`.
    pub async fn call_multi(
        &self,
        service: &str,
        method: &str,
        topic: &str,
        raw: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<Answer>> {
        let request_id = new_id("REQ_");
        let (_claims, mut responses) =
            self.inner
                .register_call(&request_id, service, method, topic);
        let now = now_ns();
        let req = Request {
            request_id: request_id.clone(),
            client_id: self.client_id.clone(),
            sent_at: now,
            expiry: now + nanos(timeout),
            multi: true,
            raw_request: raw,
            ..Request::default()
        };
        let published = self
            .inner
            .publish(&req_channel(service, method, topic), wire::seal(&req))
            .await;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answers = Vec::new();
        if published.is_ok() {
            while let Ok(Some(res)) = tokio::time::timeout_at(deadline, responses.recv()).await {
                answers.push(Answer {
                    server_id: res.server_id,
                    code: res.code,
                    error: res.error,
                    raw_response: res.raw_response,
                    at: Instant::now(),
                });
            }
        }
        self.inner.unregister_call(&request_id);
        published?;
        Ok(answers)
    }

    /// Publishes a Request on `<service>|<method>|<topic>|REQ` without selecting a server: claims
    /// and responses for it are recorded under the returned request id. `expiry` in unix ns.
    pub async fn send_request(
        &self,
        service: &str,
        method: &str,
        topic: &str,
        raw: Vec<u8>,
        expiry: i64,
    ) -> Result<String> {
        let request_id = new_id("REQ_");
        drop(
            self.inner
                .register_call(&request_id, service, method, topic),
        );
        self.inner.unregister_call(&request_id);
        let req = Request {
            request_id: request_id.clone(),
            client_id: self.client_id.clone(),
            sent_at: now_ns(),
            expiry,
            raw_request: raw,
            ..Request::default()
        };
        self.inner.mark_sent(&request_id);
        self.inner
            .publish(&req_channel(service, method, topic), wire::seal(&req))
            .await?;
        Ok(request_id)
    }

    /// What this node's client saw for `request_id` so far.
    pub fn call_record(&self, request_id: &str) -> CallRecord {
        self.inner
            .lock()
            .calls
            .get(request_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The claims that arrived for `request_id` so far.
    pub fn claims(&self, request_id: &str) -> Vec<Claim> {
        self.call_record(request_id).claims
    }

    /// The responses that arrived for `request_id` so far.
    pub fn responses(&self, request_id: &str) -> Vec<Answer> {
        self.call_record(request_id).responses
    }

    // ---- server side: IOInfo ----

    /// Switches the IOInfo service (see [`IoMode`]).
    pub async fn set_io_mode(&self, mode: IoMode) -> Result<()> {
        let before = std::mem::replace(&mut *self.inner.io_mode.lock().expect("lock"), mode);
        let mut sink = self.sink.lock().await;
        let channels: Vec<String> = self
            .flavor
            .io_methods()
            .iter()
            .map(|m| req_channel(IO_INFO, m, ""))
            .collect();
        match (before == IoMode::Down, mode == IoMode::Down) {
            (false, true) => sink.unsubscribe(channels).await?,
            (true, false) => sink.subscribe(channels).await?,
            _ => {}
        }
        Ok(())
    }

    pub fn io_mode(&self) -> IoMode {
        *self.inner.io_mode.lock().expect("lock")
    }

    /// Every IOInfo update stored, in the order handled.
    pub fn all_updates(&self) -> Vec<IoUpdate> {
        self.inner.lock().updates.clone()
    }

    /// The updates stored for `egress_id`, in the order handled.
    pub fn updates(&self, egress_id: &str) -> Vec<IoUpdate> {
        self.inner
            .lock()
            .updates
            .iter()
            .filter(|u| u.info.egress_id == egress_id)
            .cloned()
            .collect()
    }

    /// The statuses stored for `egress_id`, in order.
    pub fn statuses(&self, egress_id: &str) -> Vec<EgressStatus> {
        self.updates(egress_id)
            .iter()
            .map(IoUpdate::status)
            .collect()
    }

    /// The newest stored info of `egress_id`.
    pub fn last_info(&self, egress_id: &str) -> Option<EgressInfo> {
        self.updates(egress_id).pop().map(|u| u.info)
    }

    /// How many `CreateEgress` calls were stored for `egress_id`.
    pub fn creates(&self, egress_id: &str) -> usize {
        self.updates(egress_id)
            .iter()
            .filter(|u| u.method == "CreateEgress")
            .count()
    }

    /// The first stored update of `egress_id` with `status`.
    pub async fn wait_status(
        &self,
        egress_id: &str,
        status: EgressStatus,
        timeout: Duration,
    ) -> Result<EgressInfo> {
        self.wait_update(egress_id, timeout, |s| s == status)
            .await
            .with_context(|| format!("waiting for {egress_id} to be {}", status.as_str_name()))
    }

    /// The first stored update of `egress_id` with a final status.
    pub async fn wait_final(&self, egress_id: &str, timeout: Duration) -> Result<EgressInfo> {
        self.wait_update(egress_id, timeout, is_final)
            .await
            .with_context(|| format!("waiting for {egress_id} to end"))
    }

    async fn wait_update(
        &self,
        egress_id: &str,
        timeout: Duration,
        want: impl Fn(EgressStatus) -> bool,
    ) -> Result<EgressInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self
                .updates(egress_id)
                .into_iter()
                .find(|u| want(u.status()))
            {
                return Ok(u.info);
            }
            if Instant::now() >= deadline {
                let seen: Vec<&str> = self
                    .statuses(egress_id)
                    .iter()
                    .map(|s| s.as_str_name())
                    .collect();
                bail!("not within {timeout:?}; statuses seen: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client ids that called IOInfo on this node (the workers' psrpc clients).
    pub fn io_clients(&self) -> BTreeSet<String> {
        self.inner.lock().io_clients.clone()
    }

    /// IOInfo requests this node answered `malformed_request`.
    pub fn io_malformed(&self) -> Vec<String> {
        self.inner.lock().io_malformed.clone()
    }

    /// IOInfo requests this node claimed but left unanswered ([`IoMode::ClaimOnly`]).
    pub fn io_unanswered(&self) -> Vec<String> {
        self.inner.lock().io_unanswered.clone()
    }

    /// Payloads this node could not place.
    pub fn strays(&self) -> Vec<Stray> {
        self.inner.lock().strays.clone()
    }

    // ---- raw access, for malformed input ----

    /// PUBLISH `payload` on `channel`; the number of subscribers that got it.
    pub async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<i64> {
        self.inner.publish(channel, payload.to_vec()).await
    }

    /// An envelope naming `full_name` (e.g. `internal.ClaimResponse`) around `value`.
    pub async fn publish_envelope(
        &self,
        channel: &str,
        full_name: &str,
        value: Vec<u8>,
    ) -> Result<i64> {
        self.inner
            .publish(channel, wire::seal_as(full_name, value))
            .await
    }

    /// A well-formed envelope of `m` on `channel`.
    pub async fn publish_sealed<M: wire::Named>(&self, channel: &str, m: &M) -> Result<i64> {
        self.inner.publish(channel, wire::seal(m)).await
    }

    /// `PUBSUB NUMSUB channel`: how many connections subscribe `channel`.
    pub async fn numsub(&self, channel: &str) -> Result<i64> {
        let mut conn = self.inner.conn.clone();
        let v: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        match v.get(1) {
            Some(redis::Value::Int(n)) => Ok(*n),
            other => bail!("PUBSUB NUMSUB answered {other:?}"),
        }
    }

    /// Waits until `numsub(channel)` satisfies `want`.
    pub async fn wait_numsub(
        &self,
        channel: &str,
        want: impl Fn(i64) -> bool,
        timeout: Duration,
    ) -> Result<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.numsub(channel).await?;
            if want(n) {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                bail!("{channel} has {n} subscribers after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).expect("a short duration")
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<i64> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await?)
    }

    fn register_call(
        &self,
        request_id: &str,
        service: &str,
        method: &str,
        topic: &str,
    ) -> (
        mpsc::UnboundedReceiver<ClaimRequest>,
        mpsc::UnboundedReceiver<Response>,
    ) {
        let (claim_tx, claim_rx) = mpsc::unbounded_channel();
        let (res_tx, res_rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        st.calls.insert(
            request_id.to_owned(),
            CallRecord {
                service: service.to_owned(),
                method: method.to_owned(),
                topic: topic.to_owned(),
                ..CallRecord::default()
            },
        );
        st.claim_tx.insert(request_id.to_owned(), claim_tx);
        st.res_tx.insert(request_id.to_owned(), res_tx);
        (claim_rx, res_rx)
    }

    /// The call is over; later claims and responses are still recorded.
    fn unregister_call(&self, request_id: &str) {
        let mut st = self.lock();
        st.claim_tx.remove(request_id);
        st.res_tx.remove(request_id);
    }

    fn set_chosen(&self, request_id: &str, server_id: &str) {
        if let Some(c) = self.lock().calls.get_mut(request_id) {
            c.chosen = Some(server_id.to_owned());
            c.chosen_at = Some(Instant::now());
        }
    }

    fn mark_sent(&self, request_id: &str) {
        if let Some(c) = self.lock().calls.get_mut(request_id) {
            c.sent = Some(Instant::now());
        }
    }

    fn stray(&self, channel: &str, what: impl Into<String>) {
        self.lock().strays.push(Stray {
            channel: channel.to_owned(),
            what: what.into(),
        });
    }

    fn dispatch(self: &Arc<Self>, channel: String, payload: Vec<u8>) {
        let parts: Vec<&str> = channel.split('|').collect();
        match parts.as_slice() {
            [service, cli, "CLAIM"] if *cli == self.client_id && *service != IO_INFO => {
                let Some(claim) = wire::open::<ClaimRequest>(&payload) else {
                    return self.stray(&channel, "not a ClaimRequest envelope");
                };
                let mut st = self.lock();
                let Some(call) = st.calls.get_mut(&claim.request_id) else {
                    drop(st);
                    return self.stray(&channel, format!("claim for {}", claim.request_id));
                };
                call.claims.push(Claim {
                    server_id: claim.server_id.clone(),
                    affinity: claim.affinity,
                    at: Instant::now(),
                });
                if let Some(tx) = st.claim_tx.get(&claim.request_id) {
                    let _ = tx.send(claim);
                }
            }
            [service, cli, "RES"] if *cli == self.client_id && *service != IO_INFO => {
                let Some(res) = wire::open::<Response>(&payload) else {
                    return self.stray(&channel, "not a Response envelope");
                };
                let mut st = self.lock();
                let Some(call) = st.calls.get_mut(&res.request_id) else {
                    drop(st);
                    return self.stray(&channel, format!("response for {}", res.request_id));
                };
                call.responses.push(Answer {
                    server_id: res.server_id.clone(),
                    code: res.code.clone(),
                    error: res.error.clone(),
                    raw_response: res.raw_response.clone(),
                    at: Instant::now(),
                });
                if let Some(tx) = st.res_tx.get(&res.request_id) {
                    let _ = tx.send(res);
                }
            }
            [IO_INFO, method, "REQ"] => {
                let arrived = Instant::now();
                let method = (*method).to_owned();
                let inner = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = inner.handle_io(&method, &payload, arrived).await {
                        inner.stray(&channel, format!("IOInfo.{method}: {e:#}"));
                    }
                });
            }
            [IO_INFO, _method, "RCLAIM"] => {
                let Some(claim) = wire::open::<ClaimResponse>(&payload) else {
                    return self.stray(&channel, "not a ClaimResponse envelope");
                };
                if let Some(tx) = self.lock().io_claims.remove(&claim.request_id) {
                    let _ = tx.send(claim);
                }
            }
            _ => self.stray(&channel, "unexpected channel"),
        }
    }

    /// One IOInfo request, as a psrpc queue-method server: SET NX, expiry, decode, claim with
    /// affinity 1, wait for the ClaimResponse, handle, respond.
    async fn handle_io(&self, method: &str, payload: &[u8], arrived: Instant) -> Result<()> {
        if *self.io_mode.lock().expect("lock") == IoMode::Down {
            return Ok(());
        }
        let key = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(payload));
        let mut conn = self.conn.clone();
        let won: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(rand::random::<u32>())
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_KEY_TTL_SECS)
            .query_async(&mut conn)
            .await?;
        if won.is_none() {
            return Ok(());
        }
        let Some(req) = wire::open::<Request>(payload) else {
            bail!("not a Request envelope");
        };
        if now_ns() >= req.expiry {
            return Ok(());
        }
        self.lock().io_clients.insert(req.client_id.clone());
        let respond = |res: Response| {
            let channel = res_channel(IO_INFO, &req.client_id);
            async move { self.publish(&channel, wire::seal(&res)).await }
        };
        let info = match EgressInfo::decode(req.raw_request.as_slice()) {
            Ok(info) => info,
            Err(e) => {
                self.lock().io_malformed.push(req.request_id.clone());
                respond(Response {
                    request_id: req.request_id.clone(),
                    server_id: self.server_id.clone(),
                    sent_at: now_ns(),
                    error: e.to_string(),
                    code: "malformed_request".into(),
                    ..Response::default()
                })
                .await?;
                return Ok(());
            }
        };

        let (tx, rx) = oneshot::channel();
        self.lock().io_claims.insert(req.request_id.clone(), tx);
        let claim = ClaimRequest {
            request_id: req.request_id.clone(),
            server_id: self.server_id.clone(),
            affinity: 1.0,
        };
        self.publish(&claim_channel(IO_INFO, &req.client_id), wire::seal(&claim))
            .await?;
        let left = Duration::from_nanos(u64::try_from(req.expiry - now_ns()).unwrap_or(0));
        let chosen = tokio::time::timeout(left, rx).await;
        self.lock().io_claims.remove(&req.request_id);
        match chosen {
            Ok(Ok(c)) if c.server_id == self.server_id => {}
            _ => return Ok(()),
        }
        if *self.io_mode.lock().expect("lock") == IoMode::ClaimOnly {
            self.lock().io_unanswered.push(req.request_id.clone());
            return Ok(());
        }
        self.lock().updates.push(IoUpdate {
            method: method.to_owned(),
            info,
            request_id: req.request_id.clone(),
            client_id: req.client_id.clone(),
            at: SystemTime::now(),
            arrived,
        });
        respond(Response {
            request_id: req.request_id.clone(),
            server_id: self.server_id.clone(),
            sent_at: now_ns(),
            ..Response::default()
        })
        .await?;
        Ok(())
    }
}

/// The statuses in order with repeats collapsed (`[A, A, B]` -> `[A, B]`).
pub fn collapse(statuses: &[EgressStatus]) -> Vec<EgressStatus> {
    let mut out: Vec<EgressStatus> = Vec::new();
    for s in statuses {
        if out.last() != Some(s) {
            out.push(*s);
        }
    }
    out
}

/// The rank of a status in an egress's life: STARTING 0, ACTIVE 1, ENDING 2, final 3.
pub fn rank(status: EgressStatus) -> u8 {
    match status {
        EgressStatus::EgressStarting => 0,
        EgressStatus::EgressActive => 1,
        EgressStatus::EgressEnding => 2,
        _ => 3,
    }
}

/// Per server id, the egress ids it listed.
pub fn by_server(
    answers: &[(String, Result<Vec<String>, RpcError>)],
) -> BTreeMap<String, Vec<String>> {
    answers
        .iter()
        .map(|(s, r)| (s.clone(), r.clone().unwrap_or_default()))
        .collect()
}
