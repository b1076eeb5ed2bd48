//! Service mode: recordings taken from livekit-server over Redis (protocol.md §1).
//!
//! One task owns the state (`available` -> `reserved` -> `recording` -> `stopping` ->
//! `available`) and reacts to what arrives: reservations (claimed only while available),
//! requests on the reserved recording's channel (start, add/remove output, end), the session's
//! end, the reservation's timeout and the signals. Results go through an outbox that retries
//! until Redis takes them, so a Redis restart loses nothing.

pub mod bus;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proto::livekit::{
    recording_request, FileResult, RecordingInfo, RecordingRequest, RecordingReservation,
    RecordingResponse, RtmpResult,
};
use crate::session::{Command, OutputError, SessionContext, SessionHandle, SessionResult};
use crate::signals::{StopSignal, StopSignals};
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

/// The service's state, as the health endpoint shows it.
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

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("could not serve health on port {port}: {source}")]
    Health { port: u16, source: std::io::Error },
}

/// How the service is asked to end.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// SIGTERM/SIGQUIT: take nothing new, let the current recording finish, then exit.
    pub drain: CancellationToken,
    /// SIGINT: end the current recording now (EOS), publish its result, then exit.
    pub stop_now: CancellationToken,
    /// A second signal: force the current recording down and exit.
    pub force: CancellationToken,
}

/// Runs a front-end (`serve`: the legacy service or the egress worker) with the health port
/// and the stop signals until it returns; the exit code for the process.
pub async fn run_with_signals<F, Fut, E>(
    health_port: u16,
    signals: StopSignals,
    root: CancellationToken,
    serve: F,
) -> ExitCode
where
    F: FnOnce(Shutdown, watch::Sender<Status>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let shutdown = Shutdown {
        drain: CancellationToken::new(),
        stop_now: CancellationToken::new(),
        force: root,
    };
    let signals = tokio::spawn(watch_signals(signals, shutdown.clone()));
    let (status_tx, status_rx) = watch::channel(Status::Starting);
    let health_stop = CancellationToken::new();
    let health = if health_port != 0 {
        match crate::health::bind(health_port).await {
            Ok(listener) => Some(tokio::spawn(crate::health::serve(
                listener,
                status_rx,
                health_stop.clone(),
            ))),
            Err(source) => {
                eprintln!(
                    "livekit-recorder: {}",
                    ServiceError::Health {
                        port: health_port,
                        source
                    }
                );
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let result = serve(shutdown, status_tx).await;
    signals.abort();
    health_stop.cancel();
    if let Some(h) = health {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livekit-recorder: {e}");
            ExitCode::from(1)
        }
    }
}

/// The result as livekit-server v0.15-v1.1 expects it: whole seconds, `download_url` only for
/// an uploaded file, one entry per RTMP URL.
pub fn recording_info(r: &SessionResult) -> RecordingInfo {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    RecordingInfo {
        id: r.id.clone(),
        room_name: r.room_name.clone(),
        error: r.error.clone().unwrap_or_default(),
        file: r.file.as_ref().map(|f| FileResult {
            download_url: if f.local_path.is_none() {
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
                stream_url: s.url.clone(),
                duration: secs(s.ended_at.duration_since(s.started_at).unwrap_or_default()),
            })
            .collect(),
        ..Default::default()
    }
}

async fn watch_signals(mut signals: StopSignals, shutdown: Shutdown) {
    let mut seen = 0;
    loop {
        let kind = signals.recv().await;
        seen += 1;
        if seen > 1 {
            tracing::warn!("second signal: forcing the recorder down");
            shutdown.force.cancel();
            return;
        }
        if kind == StopSignal::Interrupt {
            tracing::info!("SIGINT: ending the current recording now, then exiting");
            shutdown.stop_now.cancel();
        } else {
            tracing::info!(
                "SIGTERM: taking no new recordings; exiting once the current one is done"
            );
        }
        shutdown.drain.cancel();
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
    status: watch::Sender<Status>,
    job: Option<Job>,
    outbox: mpsc::UnboundedSender<RecordingInfo>,
    shutdown: Shutdown,
    /// Whether we are (believed to be) subscribed to reservations.
    taking_reservations: bool,
}

/// Runs the service: connects, takes recordings until `shutdown` says otherwise, and returns
/// once every result is published (or could not be within a minute).
pub async fn run(
    config: Arc<Config>,
    uploader: Option<Arc<Uploader>>,
    shutdown: Shutdown,
    status: watch::Sender<Status>,
) -> Result<(), ServiceError> {
    status.send_replace(Status::Starting);
    let (bus, mut events) = Bus::connect(&config.redis).await?;
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish_results(bus.clone(), outbox_rx));
    let mut svc = Service {
        config,
        uploader,
        bus,
        status,
        job: None,
        outbox,
        shutdown: shutdown.clone(),
        taking_reservations: false,
    };
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
    svc.status.send_replace(Status::Stopping);
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

/// Publishes results in order, each retried until Redis takes it.
async fn publish_results(mut bus: Bus, mut outbox: mpsc::UnboundedReceiver<RecordingInfo>) {
    while let Some(info) = outbox.recv().await {
        let payload = info.encode_to_vec();
        let mut delay = Duration::from_millis(200);
        loop {
            match bus.publish(RESULT_CHANNEL, &payload).await {
                Ok(()) => {
                    tracing::info!(id = %info.id, error = %info.error, "result published");
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
        *self.status.borrow()
    }

    fn set_status(&self, s: Status) {
        if self.status.send_replace(s) != s {
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
            Ok(true) => {}
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
                    match crate::request::validate(&job_id, &start, &self.config) {
                        Ok(spec) => {
                            tracing::info!(id = %job_id, "starting recording");
                            let session = SessionHandle::spawn(
                                spec,
                                SessionContext {
                                    config: self.config.clone(),
                                    uploader: self.uploader.clone(),
                                    force: self.shutdown.force.child_token(),
                                    events: None,
                                },
                            );
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
                self.output_rpc(status, "AddOutput", |reply| Command::AddOutput {
                    url: a.rtmp_url,
                    reply,
                })
                .await
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
        if self.outbox.send(info).is_err() {
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
