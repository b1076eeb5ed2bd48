//! Egress worker mode: recordings for livekit-server v1.5.1 and later, which drives recording
//! workers over psrpc on Redis (spec/egress.md).
//!
//! One task owns the worker's state and reacts to what arrives: StartEgress requests (claimed
//! with an affinity that says whether and how gladly this worker takes them), StopEgress and
//! UpdateStream for the egresses it runs, ListActiveEgress, the sessions' lifecycle events and
//! ends, and the stop signals. Claims are negotiated on tasks of their own so that a slow claim
//! never holds up a running recording's RPCs. Each egress reports its `EgressInfo` to the
//! servers' `IOInfo` service in order, through an [`io::Reporter`] that outlives the recording
//! until its final state is delivered.

pub mod info;
pub mod io;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use livekit_protocol::{EgressInfo, StopEgressRequest, UpdateStreamRequest};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::{Probe, Status};
use crate::metrics::metrics;
use crate::psrpc::proto::rpc::{ListActiveEgressResponse, StartEgressRequest};
use crate::psrpc::{
    method::IO_INFO, ErrorCode, Incoming, Psrpc, PsrpcError, RpcError, LIST_ACTIVE_EGRESS,
    START_EGRESS, STOP_EGRESS, UPDATE_STREAM,
};
use crate::session::{
    Command, OutputError, SessionContext, SessionEvent, SessionHandle, SessionResult,
};
use crate::signals::Shutdown;
use info::Tracker;
use request::{Kind, Refusal};

/// Logged once the worker listens for StartEgress.
pub const READY: &str = "egress worker ready";
/// How often Redis is pinged (and a lost connection re-established).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long StartEgress waits for CreateEgress to be answered before answering itself.
const CREATE_WAIT: Duration = Duration::from_secs(3);
/// How long an AddOutput/RemoveOutput may take inside the session.
const OUTPUT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long final updates may wait for livekit-server when the worker exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many RTMP URLs per egress.
const MAX_STREAMS: usize = crate::policy::MAX_RTMP_OUTPUTS;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Psrpc(#[from] PsrpcError),
}

/// One egress this worker runs.
struct Egress {
    tracker: Tracker,
    reporter: io::Reporter,
    commands: mpsc::Sender<Command>,
    cost: f64,
    /// The request's RTMP URLs (None: no stream output).
    rtmp: Option<Vec<String>>,
}

/// The calls a won claim leads to.
enum Call {
    Start(Box<StartEgressRequest>),
    Stop(StopEgressRequest),
    UpdateStream(UpdateStreamRequest),
}

/// What the worker's loop reacts to besides psrpc requests.
enum Event {
    /// A claim was negotiated: handle the call if won.
    Claimed {
        incoming: Incoming,
        call: Call,
        won: bool,
    },
    /// What a session reported; its last event (Complete or Failed) ends the egress.
    Session { id: String, event: SessionEvent },
}

struct Worker {
    config: Arc<Config>,
    psrpc: Psrpc,
    egresses: HashMap<String, Egress>,
    draining: bool,
    /// The built-in room composite page, when the binary has templates.
    builtin_template_base: String,
    events: mpsc::UnboundedSender<Event>,
    probe: Probe,
    force: CancellationToken,
    /// Final updates still on their way.
    flushing: JoinSet<()>,
}

/// Runs the worker until a signal ends it and every recording has finished and reported.
pub async fn run(config: Arc<Config>, shutdown: Shutdown, probe: Probe) -> Result<(), EgressError> {
    probe.set_status(Status::Starting);
    crate::browser::warn_if_root();
    let (psrpc, mut requests) = Psrpc::connect(&config.redis, &[IO_INFO]).await?;
    let builtin_template_base = if crate::templates::built() {
        match crate::templates::egress_base_url().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "built-in templates unavailable");
                String::new()
            }
        }
    } else {
        String::new()
    };
    let topic = config.cluster_id.clone();
    psrpc.serve(&START_EGRESS, &topic).await?;
    psrpc.serve(&LIST_ACTIVE_EGRESS, &topic).await?;
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut w = Worker {
        config,
        psrpc,
        egresses: HashMap::new(),
        draining: false,
        builtin_template_base,
        events,
        probe,
        force: shutdown.force.clone(),
        flushing: JoinSet::new(),
    };
    w.update_status();
    tracing::info!(server_id = %w.psrpc.server_id(), cluster_id = %topic, "{READY}");

    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redis_down = false;
    let mut stop_now_seen = false;
    loop {
        if w.draining && w.egresses.is_empty() {
            break;
        }
        tokio::select! {
            r = requests.recv() => match r {
                Some(incoming) => w.on_request(incoming).await,
                None => {
                    tracing::error!("psrpc request stream ended");
                    break;
                }
            },
            Some(ev) = events_rx.recv() => w.on_event(ev).await,
            _ = keepalive.tick() => {
                w.probe.beat();
                crate::health::test_wedge_hook();
                redis_down = w.keepalive(redis_down).await;
                w.update_status();
            }
            () = shutdown.drain.cancelled(), if !w.draining => {
                w.draining = true;
                w.update_status();
            }
            () = shutdown.stop_now.cancelled(), if !stop_now_seen => {
                stop_now_seen = true;
                w.stop_all().await;
            }
        }
    }
    w.probe.set_status(Status::Stopping);
    let _ = w.psrpc.unserve(&START_EGRESS, &topic).await;
    let _ = w.psrpc.unserve(&LIST_ACTIVE_EGRESS, &topic).await;
    let flush = async { while w.flushing.join_next().await.is_some() {} };
    if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
        tracing::error!("final egress updates could not be delivered before exiting");
    }
    Ok(())
}

impl Worker {
    fn update_status(&self) {
        let s = if self.draining {
            Status::Stopping
        } else if self.egresses.is_empty() {
            Status::Available
        } else {
            Status::Recording
        };
        if self.probe.set_status(s) {
            tracing::info!(status = %s, "status");
        }
        // Ready while it could take the cheapest request.
        let cheapest = self
            .config
            .cpu_cost
            .web_cpu_cost
            .min(self.config.cpu_cost.room_composite_cpu_cost);
        self.probe
            .set_ready(!self.draining && self.available_cpu() >= cheapest);
    }

    async fn keepalive(&self, was_down: bool) -> bool {
        match self.psrpc.ping().await {
            Ok(()) => {
                if was_down {
                    tracing::info!("redis is back");
                }
                false
            }
            Err(e) => {
                if !was_down {
                    tracing::warn!(error = %e, "redis unreachable; retrying");
                    metrics().redis_reconnects.inc();
                }
                true
            }
        }
    }

    /// CPU this worker may still commit: cores x max_cpu_utilization minus running costs.
    fn available_cpu(&self) -> f64 {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let used: f64 = self.egresses.values().map(|e| e.cost).sum();
        cores * self.config.cpu_cost.max_cpu_utilization - used
    }

    fn cost(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Web => self.config.cpu_cost.web_cpu_cost,
            Kind::RoomComposite => self.config.cpu_cost.room_composite_cpu_cost,
        }
    }

    /// Why this worker will not take `req` now, if it will not.
    fn admission(&self, req: &StartEgressRequest) -> Result<Kind, RpcError> {
        if self.draining {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                "server is shutting down",
            ));
        }
        let kind = request::support(req)
            .map_err(|e| RpcError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        if self.available_cpu() < self.cost(kind) {
            return Err(RpcError::new(ErrorCode::Unavailable, "not enough CPU"));
        }
        Ok(kind)
    }

    /// StartEgress affinity: -1 (no claim) when it cannot take it, 1 when busy (work packs onto
    /// busy workers) or already running this egress, 0.5 when idle.
    fn affinity(&self, req: &StartEgressRequest) -> f32 {
        if self.egresses.contains_key(&req.egress_id) {
            return 1.0;
        }
        match self.admission(req) {
            Err(e) => {
                tracing::debug!(egress_id = %req.egress_id, reason = %e, "not claiming");
                -1.0
            }
            Ok(_) if self.egresses.is_empty() => 0.5,
            Ok(_) => 1.0,
        }
    }

    async fn on_request(&mut self, incoming: Incoming) {
        let method = incoming.method.name;
        match method {
            m if m == START_EGRESS.name => {
                match StartEgressRequest::decode(&incoming.payload[..]) {
                    Ok(req) => {
                        metrics().egress_requests_seen.inc();
                        let affinity = self.affinity(&req);
                        if affinity >= 0.0 {
                            metrics().egress_claims_offered.inc();
                        }
                        self.claim(incoming, Call::Start(Box::new(req)), affinity);
                    }
                    Err(e) => malformed(incoming, e).await,
                }
            }
            m if m == STOP_EGRESS.name => match StopEgressRequest::decode(&incoming.payload[..]) {
                Ok(req) => {
                    let mine = self.egresses.contains_key(&req.egress_id);
                    self.claim(incoming, Call::Stop(req), if mine { 1.0 } else { -1.0 });
                }
                Err(e) => malformed(incoming, e).await,
            },
            m if m == UPDATE_STREAM.name => {
                match UpdateStreamRequest::decode(&incoming.payload[..]) {
                    Ok(req) => {
                        let mine = self.egresses.contains_key(&req.egress_id);
                        self.claim(
                            incoming,
                            Call::UpdateStream(req),
                            if mine { 1.0 } else { -1.0 },
                        );
                    }
                    Err(e) => malformed(incoming, e).await,
                }
            }
            m if m == LIST_ACTIVE_EGRESS.name => {
                let mut egress_ids: Vec<String> = self
                    .egresses
                    .iter()
                    .filter(|(_, e)| !e.tracker.ended())
                    .map(|(id, _)| id.clone())
                    .collect();
                egress_ids.sort();
                let reply = ListActiveEgressResponse { egress_ids }.encode_to_vec();
                respond(&incoming, Ok(reply)).await;
            }
            other => tracing::debug!(method = other, "request for a method not served"),
        }
    }

    /// Negotiates the claim on a task of its own; the outcome comes back as an event.
    fn claim(&self, incoming: Incoming, call: Call, affinity: f32) {
        if affinity < 0.0 {
            return;
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            let won = match incoming.claim(affinity).await {
                Ok(won) => won,
                Err(e) => {
                    tracing::warn!(method = incoming.method.name, error = %e, "claim failed");
                    false
                }
            };
            let _ = events.send(Event::Claimed {
                incoming,
                call,
                won,
            });
        });
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Claimed {
                won: false,
                incoming,
                ..
            } => {
                tracing::debug!(method = incoming.method.name, request_id = %incoming.request_id, "claim lost");
            }
            Event::Claimed {
                incoming,
                call: Call::Start(req),
                ..
            } => {
                metrics().egress_claims_won.inc();
                let result = self.start(&req).await;
                respond(&incoming, result.map(|info| info.encode_to_vec())).await;
            }
            Event::Claimed {
                incoming,
                call: Call::Stop(req),
                ..
            } => {
                let result = self.stop(&req.egress_id).await;
                respond(&incoming, result.map(|info| info.encode_to_vec())).await;
            }
            Event::Claimed {
                incoming,
                call: Call::UpdateStream(req),
                ..
            } => {
                let result = self.update_stream(&req).await;
                respond(&incoming, result.map(|info| info.encode_to_vec())).await;
            }
            Event::Session {
                id,
                event: SessionEvent::Complete(result) | SessionEvent::Failed(result),
            } => self.on_session_end(&id, *result).await,
            Event::Session { id, event } => self.on_session_event(&id, event),
        }
    }

    /// A won StartEgress: validate, subscribe the egress's RPCs, report it, start it.
    async fn start(&mut self, req: &StartEgressRequest) -> Result<EgressInfo, RpcError> {
        let id = req.egress_id.clone();
        if self.egresses.contains_key(&id) {
            return Err(RpcError::new(
                ErrorCode::AlreadyExists,
                format!("egress {id} already exists"),
            ));
        }
        self.admission(req)?;
        let job = request::validate(
            req,
            &request::Context {
                config: &self.config,
                builtin_template_base: &self.builtin_template_base,
                now_ns: info::now_ns(),
            },
        )
        .map_err(|e| match e {
            Refusal::Invalid(m) | Refusal::Unsupported(m) => {
                tracing::warn!(egress_id = %id, error = %m, "invalid egress request");
                RpcError::new(ErrorCode::InvalidArgument, m)
            }
        })?;
        // The egress's RPCs are heard before anyone learns it exists.
        for m in [&STOP_EGRESS, &UPDATE_STREAM] {
            if let Err(e) = self.psrpc.serve(m, &id).await {
                self.unserve(&id).await;
                return Err(RpcError::new(ErrorCode::Unavailable, e.to_string()));
            }
        }
        let info = job.info.clone();
        let (reporter, created) = io::Reporter::spawn(
            self.psrpc.clone(),
            self.config.io_update_egress_info,
            info.clone(),
        );
        if tokio::time::timeout(CREATE_WAIT, created).await.is_err() {
            tracing::warn!(egress_id = %id, "CreateEgress not answered yet; starting anyway");
        }

        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        // The session runs on its own (dropping its handle does not stop it); its events, the
        // last of them with its result, come to this loop.
        let session = SessionHandle::spawn(
            job.spec.clone(),
            SessionContext {
                config: self.config.clone(),
                uploader: job.uploader.clone(),
                force: self.force.child_token(),
                events: Some(ev_tx),
                builtin_templates: None,
            },
        );
        let commands = session.commands();
        let events = self.events.clone();
        let eid = id.clone();
        tokio::spawn(async move {
            while let Some(event) = ev_rx.recv().await {
                let _ = events.send(Event::Session {
                    id: eid.clone(),
                    event,
                });
            }
        });
        metrics().session_started("egress");
        tracing::info!(egress_id = %id, kind = ?job.kind, room = %info.room_name, "egress starting");
        self.egresses.insert(
            id,
            Egress {
                tracker: Tracker::new(info.clone()),
                reporter,
                commands,
                cost: self.cost(job.kind),
                rtmp: job.spec.output.rtmp.clone(),
            },
        );
        self.update_status();
        Ok(info)
    }

    async fn stop(&mut self, id: &str) -> Result<EgressInfo, RpcError> {
        let e = self
            .egresses
            .get_mut(id)
            .ok_or_else(|| RpcError::new(ErrorCode::NotFound, "egress not found"))?;
        if e.tracker.ending(info::STOP_DETAILS) {
            tracing::info!(egress_id = %id, "StopEgress");
            let _ = e.commands.send(Command::Stop).await;
            e.reporter.send(e.tracker.snapshot());
        }
        Ok(e.tracker.snapshot())
    }

    /// Ends every egress (SIGINT): each finishes its file and reports.
    async fn stop_all(&mut self) {
        let ids: Vec<String> = self.egresses.keys().cloned().collect();
        for id in ids {
            let _ = self.stop(&id).await;
        }
    }

    async fn update_stream(&mut self, req: &UpdateStreamRequest) -> Result<EgressInfo, RpcError> {
        let id = &req.egress_id;
        let e = self
            .egresses
            .get_mut(id)
            .ok_or_else(|| RpcError::new(ErrorCode::NotFound, "egress not found"))?;
        let Some(urls) = e.rtmp.as_mut() else {
            return Err(RpcError::new(
                ErrorCode::InvalidArgument,
                "egress has no stream output",
            ));
        };
        for url in &req.add_output_urls {
            request::check_rtmp_url(url, &self.config)
                .map_err(|r| RpcError::new(ErrorCode::InvalidArgument, r.to_string()))?;
        }
        if urls.len() + req.add_output_urls.len() > MAX_STREAMS {
            return Err(RpcError::new(
                ErrorCode::InvalidArgument,
                format!("at most {MAX_STREAMS} stream urls per egress"),
            ));
        }
        for url in &req.add_output_urls {
            output_rpc(&e.commands, |reply| Command::AddOutput {
                url: url.clone(),
                reply,
            })
            .await?;
            e.tracker.stream_started(url, SystemTime::now());
            urls.push(url.clone());
        }
        for url in &req.remove_output_urls {
            output_rpc(&e.commands, |reply| Command::RemoveOutput {
                url: url.clone(),
                reply,
            })
            .await?;
            e.tracker.stream_ended(url, None);
            urls.retain(|u| u != url);
        }
        tracing::info!(egress_id = %id, added = req.add_output_urls.len(), removed = req.remove_output_urls.len(), "UpdateStream");
        let info = e.tracker.snapshot();
        e.reporter.send(info.clone());
        Ok(info)
    }

    fn on_session_event(&mut self, id: &str, event: SessionEvent) {
        let Some(e) = self.egresses.get_mut(id) else {
            return;
        };
        let changed = match event {
            SessionEvent::WaitingForStart => {
                e.tracker.waiting_for_start();
                true
            }
            SessionEvent::Active { started_at } => {
                tracing::info!(egress_id = %id, "egress active");
                let urls = e.rtmp.clone().unwrap_or_default();
                e.tracker.active(started_at, &urls);
                true
            }
            SessionEvent::Ending { reason } => e.tracker.ending_for(reason),
            SessionEvent::StreamFailed { url, error } => {
                e.tracker.stream_ended(&url, Some(&error));
                if let Some(urls) = e.rtmp.as_mut() {
                    urls.retain(|u| *u != url);
                }
                true
            }
            // The last event ends the egress (see `on_session_end`).
            SessionEvent::Complete(_) | SessionEvent::Failed(_) => false,
        };
        if changed {
            e.reporter.send(e.tracker.snapshot());
        }
    }

    async fn on_session_end(&mut self, id: &str, result: SessionResult) {
        let Some(mut e) = self.egresses.remove(id) else {
            return;
        };
        result.count("egress");
        e.tracker.finish(&result);
        let info = e.tracker.snapshot();
        tracing::info!(egress_id = %id, status = info.status, error = %info.error, "egress ended");
        e.reporter.send(info);
        self.flushing.spawn(async move {
            e.reporter.close(FLUSH_TIMEOUT).await;
        });
        self.unserve(id).await;
        self.update_status();
    }

    async fn unserve(&self, id: &str) {
        for m in [&STOP_EGRESS, &UPDATE_STREAM] {
            if let Err(e) = self.psrpc.unserve(m, id).await {
                tracing::debug!(egress_id = %id, error = %e, "could not unsubscribe");
            }
        }
    }
}

/// Passes an AddOutput/RemoveOutput to the session and maps its answer to psrpc's codes.
async fn output_rpc(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<(), OutputError>>) -> Command,
) -> Result<(), RpcError> {
    let (tx, rx) = oneshot::channel();
    let not_recording = || RpcError::new(ErrorCode::FailedPrecondition, "egress is not recording");
    if commands.send(make(tx)).await.is_err() {
        return Err(not_recording());
    }
    match tokio::time::timeout(OUTPUT_RPC_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(OutputError::NotRecording))) | Ok(Err(_)) => Err(not_recording()),
        // "output already exists", "output not found", a URL the pipeline refuses.
        Ok(Ok(Err(e @ OutputError::Pipeline(crate::pipeline::PipelineError::Output(_))))) => {
            Err(RpcError::new(ErrorCode::InvalidArgument, e.to_string()))
        }
        Ok(Ok(Err(e))) => Err(RpcError::new(ErrorCode::Internal, e.to_string())),
        Err(_) => Err(RpcError::new(
            ErrorCode::DeadlineExceeded,
            "the recording did not answer in time",
        )),
    }
}

async fn malformed(incoming: Incoming, e: prost::DecodeError) {
    tracing::warn!(method = incoming.method.name, error = %e, "malformed request");
    respond(
        &incoming,
        Err(RpcError::new(ErrorCode::MalformedRequest, e.to_string())),
    )
    .await;
}

async fn respond(incoming: &Incoming, result: Result<Vec<u8>, RpcError>) {
    if let Err(e) = incoming.respond(result).await {
        tracing::warn!(method = incoming.method.name, error = %e, "could not send a response");
    }
}
