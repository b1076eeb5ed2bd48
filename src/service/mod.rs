//! Service mode: recordings taken from livekit-server v0.15.2 - v1.1.0 over Redis, in the
//! original recorder's protocol.
//!
//! One task owns the state (`available` -> `reserved` -> `recording` -> `stopping` ->
//! `available`) and reacts to what arrives: reservations (claimed only while available),
//! requests on the reserved recording's channel (start, add/remove output, end), the session's
//! end, the reservation's timeout and the signals. Results go through an outbox that retries
//! until Redis takes them, each kept on disk until then ([`results`]), so neither a Redis
//! restart nor a daemon that dies meanwhile loses one.

pub mod bus;
pub mod results;

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::Config;
use crate::health::{Probe, Status};
use crate::metrics::metrics;
use crate::proto::livekit::{
    recording_request, FileResult, RecordingInfo, RecordingRequest, RecordingReservation,
    RecordingResponse, RtmpResult,
};
use crate::session::{
    Command, EndReason, OutputError, SessionContext, SessionHandle, SessionResult,
    MAX_DURATION_REACHED,
};
use crate::signals::Shutdown;
use crate::upload::Uploader;
use bus::{Bus, BusError, Event, RESERVATION_CHANNEL, RESULT_CHANNEL};

/// Reservations older than this are stale (livekit's `ReservationTimeout`).
const RESERVATION_MAX_AGE_MS: i64 = 2000;
/// How often the connection is checked (and re-established while Redis is away).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long an AddOutput/RemoveOutput may take inside the session.
const OUTPUT_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long results may wait for Redis when the service exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The result as livekit-server v0.15-v1.1 expects it: whole seconds, `download_url` only for
/// an uploaded file, one entry per RTMP URL (`rtmp://host/app/{stream_key}`: the stream key is
/// not repeated). A recording that reached `max_duration` says so in
/// `error` (the only place this protocol has for it; its file is complete and delivered).
pub fn recording_info(r: &SessionResult) -> RecordingInfo {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let error = match (r.end, &r.error) {
        (EndReason::LimitReached, None) => MAX_DURATION_REACHED.to_owned(),
        (EndReason::LimitReached, Some(e)) => format!("{MAX_DURATION_REACHED}; {e}"),
        (_, e) => e.clone().unwrap_or_default(),
    };
    RecordingInfo {
        id: r.id.clone(),
        room_name: r.room_name.clone(),
        error,
        file: r.file.as_ref().map(|f| FileResult {
            download_url: if f.uploaded {
                f.location.clone()
            } else {
                String::new()
            },
            duration: secs(f.duration),
        }),
        rtmp: r
            .streams
            .iter()
            .map(|s| RtmpResult {
                // Results reach webhooks and logs: never with the stream key.
                stream_url: crate::policy::redact_stream_url(&s.url),
                duration: secs(s.ended_at.duration_since(s.started_at).unwrap_or_default()),
            })
            .collect(),
        ..Default::default()
    }
}

/// What the recorder is busy with.
enum Job {
    /// Reserved by livekit-server, waiting for Start.
    Reserved { id: String, deadline: Instant },
    /// Recording (or stopping).
    Recording {
        id: String,
        commands: mpsc::Sender<Command>,
        session: SessionHandle,
    },
}

impl Job {
    fn id(&self) -> &str {
        match self {
            Self::Reserved { id, .. } | Self::Recording { id, .. } => id,
        }
    }
}

struct Service {
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    bus: Bus,
    probe: Probe,
    job: Option<Job>,
    outbox: mpsc::UnboundedSender<results::Pending>,
    /// Where results wait on disk until Redis took them.
    results: results::ResultStore,
    shutdown: Shutdown,
    /// Whether we are (believed to be) subscribed to reservations.
    taking_reservations: bool,
    /// The built-in templates' base, when requests may use them.
    builtin_templates: Option<String>,
}

/// Runs the service: connects, takes recordings until `shutdown` says otherwise, and returns
/// once every result is published (or could not be within a minute).
pub async fn run(
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    shutdown: Shutdown,
    probe: Probe,
) -> Result<(), ServiceError> {
    probe.set_status(Status::Starting);
    crate::browser::warn_if_root();
    let (bus, mut events) = Bus::connect(&config.redis).await?;
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish_results(bus.clone(), outbox_rx));
    // Results an earlier daemon could not publish (it died while Redis was away) go first.
    let results = results::ResultStore::new(&config.work_dir());
    for pending in results.orphans() {
        tracing::info!(id = %pending.info.id, "publishing a result left by an earlier run");
        let _ = outbox.send(pending);
    }
    let mut svc = Service {
        config,
        uploader,
        bus,
        probe,
        job: None,
        outbox,
        results,
        shutdown: shutdown.clone(),
        taking_reservations: false,
        builtin_templates: None,
    };
    svc.builtin_templates = crate::templates::start_if_needed(&svc.config.template_address).await;
    svc.become_available().await;
    tracing::info!("service ready");

    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redis_down = false;
    let mut drain_seen = false;
    loop {
        if shutdown.drain.is_cancelled() && svc.job.is_none() {
            break;
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Message(m)) => svc.on_message(m).await,
                Some(Event::Disconnected) => {
                    tracing::warn!("lost the connection to redis; reconnecting");
                    if !redis_down {
                        metrics().redis_reconnects.inc();
                    }
                    redis_down = true;
                }
                None => {
                    tracing::error!("redis subscription stream ended");
                    break;
                }
            },
            ev = job_event(&mut svc.job) => match ev {
                JobEvent::Ended(result) => svc.on_session_end(*result).await,
                JobEvent::ReservationExpired => svc.on_reservation_timeout().await,
            },
            _ = keepalive.tick() => {
                svc.probe.beat();
                crate::health::test_wedge_hook();
                match svc.bus.ping().await {
                    Ok(()) => {
                        if redis_down {
                            tracing::info!("redis is back");
                            redis_down = false;
                        }
                        svc.reconcile_subscription().await;
                    }
                    Err(e) => {
                        if !redis_down {
                            tracing::warn!(error = %e, "redis unreachable; retrying");
                            metrics().redis_reconnects.inc();
                        }
                        redis_down = true;
                    }
                }
            }
            () = shutdown.drain.cancelled(), if !drain_seen => {
                drain_seen = true;
                svc.stop_taking_reservations().await;
            }
            () = shutdown.stop_now.cancelled(), if svc.status() == Status::Recording => svc.end_recording().await,
        }
    }
    svc.probe.set_status(Status::Stopping);
    drop(svc);
    // Every result reaches Redis before we go, unless it stays away for a minute.
    if tokio::time::timeout(FLUSH_TIMEOUT, publisher)
        .await
        .is_err()
    {
        tracing::error!("results could not be published before exiting");
    }
    Ok(())
}

enum JobEvent {
    /// The recording's session ended with this result.
    Ended(Box<SessionResult>),
    /// A reservation waited too long for its Start.
    ReservationExpired,
}

/// Resolves when the current job needs attention.
async fn job_event(job: &mut Option<Job>) -> JobEvent {
    match job {
        Some(Job::Recording { session, .. }) => JobEvent::Ended(Box::new(session.wait().await)),
        Some(Job::Reserved { deadline, .. }) => {
            tokio::time::sleep_until(*deadline).await;
            JobEvent::ReservationExpired
        }
        None => std::future::pending().await,
    }
}

/// Publishes results in order, each retried until Redis takes it, then removed from disk.
async fn publish_results(mut bus: Bus, mut outbox: mpsc::UnboundedReceiver<results::Pending>) {
    while let Some(results::Pending { info, path }) = outbox.recv().await {
        let payload = info.encode_to_vec();
        let mut delay = Duration::from_millis(200);
        loop {
            match bus.publish(RESULT_CHANNEL, &payload).await {
                Ok(()) => {
                    tracing::info!(id = %info.id, error = %info.error, "result published");
                    if let Some(path) = &path {
                        results::ResultStore::remove(path);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(id = %info.id, error = %e, "could not publish the result; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

impl Service {
    fn status(&self) -> Status {
        self.probe.status()
    }

    fn set_status(&self, s: Status) {
        if self.probe.set_status(s) {
            tracing::info!(status = %s, "status");
        }
    }

    async fn become_available(&mut self) {
        self.job = None;
        if self.shutdown.drain.is_cancelled() {
            self.set_status(Status::Stopping);
            return;
        }
        self.set_status(Status::Available);
        self.reconcile_subscription().await;
    }

    /// Subscribed to reservations exactly while available (retried on every keepalive).
    async fn reconcile_subscription(&mut self) {
        let want = self.status() == Status::Available && !self.shutdown.drain.is_cancelled();
        if want && !self.taking_reservations {
            match self.bus.subscribe(RESERVATION_CHANNEL).await {
                Ok(()) => self.taking_reservations = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not subscribe to reservations; retrying")
                }
            }
        } else if !want && self.taking_reservations {
            self.stop_taking_reservations().await;
        }
    }

    async fn stop_taking_reservations(&mut self) {
        match self.bus.unsubscribe(RESERVATION_CHANNEL).await {
            Ok(()) => self.taking_reservations = false,
            // Reservations that still arrive are ignored while busy; retried on keepalive.
            Err(e) => tracing::debug!(error = %e, "could not unsubscribe from reservations"),
        }
        if self.shutdown.drain.is_cancelled() && self.job.is_none() {
            self.set_status(Status::Stopping);
        }
    }

    async fn on_message(&mut self, m: bus::Message) {
        if m.channel == RESERVATION_CHANNEL {
            self.on_reservation(&m.payload).await;
        } else if self
            .job
            .as_ref()
            .is_some_and(|j| m.channel == bus::request_channel(j.id()))
        {
            self.on_request(&m.payload).await;
        } else {
            tracing::debug!(channel = %m.channel, "message for no current recording ignored");
        }
    }

    async fn on_reservation(&mut self, payload: &[u8]) {
        // Claim only while available: a busy recorder that won a reservation would make
        // livekit-server report "no recorders available".
        metrics().reservations_seen.inc();
        if self.status() != Status::Available || self.shutdown.drain.is_cancelled() {
            return;
        }
        let reservation = match RecordingReservation::decode(payload) {
            Ok(r) if !r.id.is_empty() => r,
            Ok(_) => {
                tracing::warn!("malformed request: reservation without an id");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed request");
                return;
            }
        };
        if reservation.submitted_at < crate::util::now_millis() - RESERVATION_MAX_AGE_MS {
            tracing::debug!(id = %reservation.id, "discarding old request");
            return;
        }
        match self.bus.claim(payload).await {
            Ok(true) => metrics().reservations_claimed.inc(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a reservation");
                return;
            }
        }
        let id = reservation.id;
        // The request channel first, then the ack: a Start sent right after the ack is heard.
        if let Err(e) = self.bus.subscribe(&bus::request_channel(&id)).await {
            tracing::warn!(%id, error = %e, "could not subscribe to the recording's requests");
            return;
        }
        if let Err(e) = self
            .bus
            .publish(
                &bus::response_channel(&id),
                &RecordingResponse::default().encode_to_vec(),
            )
            .await
        {
            tracing::warn!(%id, error = %e, "could not acknowledge the reservation");
            let _ = self.bus.unsubscribe(&bus::request_channel(&id)).await;
            return;
        }
        metrics().reservations_acked.inc();
        tracing::info!(%id, "reserved");
        self.job = Some(Job::Reserved {
            id,
            deadline: Instant::now() + self.config.reservation_timeout(),
        });
        self.set_status(Status::Reserved);
        self.reconcile_subscription().await;
    }

    async fn on_request(&mut self, payload: &[u8]) {
        let req = match RecordingRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "malformed request");
                return;
            }
        };
        let Some(job_id) = self.job.as_ref().map(|j| j.id().to_owned()) else {
            return;
        };
        let status = self.status();
        let error = match req.request {
            Some(recording_request::Request::Start(start)) => {
                if status != Status::Reserved {
                    format!("tried calling start with state {status}")
                } else {
                    match crate::request::validate_as(
                        &job_id,
                        &start,
                        &self.config,
                        crate::request::Origin::Requester,
                    ) {
                        Ok(spec) => {
                            tracing::info!(id = %job_id, "starting recording");
                            let session = SessionHandle::spawn(
                                spec,
                                SessionContext {
                                    config: self.config.clone(),
                                    uploader: self.uploader.clone(),
                                    force: self.shutdown.force.child_token(),
                                    events: None,
                                    builtin_templates: self.builtin_templates.clone(),
                                },
                            );
                            metrics().session_started("service");
                            self.job = Some(Job::Recording {
                                id: job_id.clone(),
                                commands: session.commands(),
                                session,
                            });
                            self.set_status(Status::Recording);
                            String::new()
                        }
                        Err(e) => {
                            let error = e.to_string();
                            tracing::warn!(id = %job_id, %error, "invalid start request");
                            self.reply(&job_id, &req.request_id, &error).await;
                            self.finish_job(RecordingInfo {
                                id: job_id.clone(),
                                error,
                                ..Default::default()
                            })
                            .await;
                            return;
                        }
                    }
                }
            }
            Some(recording_request::Request::AddOutput(a)) => {
                // Checked as Start checks its URLs (once the state allows an AddOutput at all).
                let checked = if status == Status::Recording {
                    crate::request::check_rtmp_url(&a.rtmp_url, &self.config)
                } else {
                    Ok(())
                };
                match checked {
                    Err(e) => e.to_string(),
                    Ok(()) => {
                        self.output_rpc(status, "AddOutput", |reply| Command::AddOutput {
                            url: a.rtmp_url,
                            reply,
                        })
                        .await
                    }
                }
            }
            Some(recording_request::Request::RemoveOutput(r)) => {
                self.output_rpc(status, "RemoveOutput", |reply| Command::RemoveOutput {
                    url: r.rtmp_url,
                    reply,
                })
                .await
            }
            Some(recording_request::Request::End(_)) => {
                if status != Status::Recording {
                    format!("tried calling End with status {status}")
                } else {
                    self.end_recording().await;
                    String::new()
                }
            }
            None => "empty request".to_owned(),
        };
        self.reply(&job_id, &req.request_id, &error).await;
    }

    /// Passes an AddOutput/RemoveOutput to the session and returns its error ("" = done).
    async fn output_rpc(
        &mut self,
        status: Status,
        name: &str,
        make: impl FnOnce(oneshot::Sender<Result<(), OutputError>>) -> Command,
    ) -> String {
        let Some(Job::Recording { commands, .. }) = &self.job else {
            return format!("tried calling {name} with status {status}");
        };
        if status != Status::Recording {
            return format!("tried calling {name} with status {status}");
        }
        let (tx, rx) = oneshot::channel();
        if commands.send(make(tx)).await.is_err() {
            return "recorder not initialized".into();
        }
        match tokio::time::timeout(OUTPUT_RPC_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => String::new(),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => "recorder not initialized".into(),
            Err(_) => format!("{name} timed out"),
        }
    }

    /// Asks the current recording to finish (EOS); its result comes when the session ends.
    async fn end_recording(&mut self) {
        if let Some(Job::Recording { commands, id, .. }) = &self.job {
            tracing::info!(%id, "ending recording");
            let _ = commands.send(Command::Stop).await;
            self.set_status(Status::Stopping);
        }
    }

    async fn reply(&mut self, id: &str, request_id: &str, error: &str) {
        let response = RecordingResponse {
            request_id: request_id.to_owned(),
            error: error.to_owned(),
        };
        if let Err(e) = self
            .bus
            .publish(&bus::response_channel(id), &response.encode_to_vec())
            .await
        {
            tracing::warn!(%id, error = %e, "could not send a response");
        }
    }

    async fn on_session_end(&mut self, result: SessionResult) {
        result.count("service");
        // The session has uploaded the file already (when one is configured).
        self.finish_job(recording_info(&result)).await;
    }

    /// Queues the result, leaves the recording's channel and becomes available again.
    async fn finish_job(&mut self, info: RecordingInfo) {
        if let Some(job) = self.job.take() {
            if let Err(e) = self.bus.unsubscribe(&bus::request_channel(job.id())).await {
                tracing::debug!(error = %e, "could not unsubscribe from the recording's requests");
            }
        }
        // On disk first: a daemon that dies before Redis takes it leaves it to the next one.
        let pending = self.results.store(info);
        if self.outbox.send(pending).is_err() {
            tracing::error!("result publisher is gone");
        }
        self.become_available().await;
    }

    async fn on_reservation_timeout(&mut self) {
        if let Some(job) = &self.job {
            tracing::warn!(id = %job.id(), "no Start within the reservation timeout; available again");
        }
        if let Some(job) = self.job.take() {
            let _ = self.bus.unsubscribe(&bus::request_channel(job.id())).await;
        }
        self.become_available().await;
    }
}
