//! The session's phase logic against a scripted [`Engine`]: no process, no pipeline. The test
//! plays the parts' side (the page's console, deaths, alarms, pipeline events) and checks what
//! the session does, in which order, what it reports and what it returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::engine::{Console, Engine, Happening};
use super::watchdog::Alarm;
use super::*;
use crate::browser::ConsoleMessage;
use crate::pipeline::{PipelineError, PipelineEvent};
use crate::request::{FileOutput, Input, Outputs};

const URL_A: &str = "rtmp://127.0.0.1/live/a";
const URL_B: &str = "rtmp://127.0.0.1/live/b";

/// How the scripted engine behaves.
#[derive(Clone, Copy, Default)]
struct Script {
    /// `start` never returns.
    start_hangs: bool,
    /// `start` panics (a bug in a part).
    start_panics: bool,
    /// `finish` never returns.
    finish_hangs: bool,
    /// `finish` fails.
    finish_fails: bool,
}

/// The scripted parts; every call is logged.
struct Fake {
    script: Script,
    log: Arc<Mutex<Vec<String>>>,
    happenings: mpsc::UnboundedReceiver<Happening>,
    console: Option<Console>,
    dead: watch::Receiver<Option<String>>,
}

impl Fake {
    fn note(&self, call: impl Into<String>) {
        self.log.lock().unwrap().push(call.into());
    }
}

impl Engine for Fake {
    async fn start(&mut self, url: &str) -> Result<Console, SessionError> {
        self.note(format!("start {url}"));
        if self.script.start_panics {
            panic!("a bug in a part");
        }
        if self.script.start_hangs {
            std::future::pending::<()>().await;
        }
        Ok(self.console.take().expect("started once"))
    }

    async fn play(&mut self, _timeout: Duration) -> Result<(), PipelineError> {
        self.note("play");
        Ok(())
    }

    async fn next(&mut self) -> Happening {
        match self.happenings.recv().await {
            Some(h) => h,
            None => std::future::pending().await,
        }
    }

    async fn died(&self) -> String {
        let mut dead = self.dead.clone();
        let note = dead.wait_for(Option::is_some).await.map(|n| n.clone());
        match note {
            Ok(note) => note.expect("waited for Some"),
            Err(_) => std::future::pending().await,
        }
    }

    fn dead_part(&self) -> Option<String> {
        self.dead.borrow().clone()
    }

    fn add_output(&mut self, url: &str) -> Result<(), PipelineError> {
        self.note(format!("add {url}"));
        Ok(())
    }

    async fn remove_output(&mut self, url: &str) -> Result<(), PipelineError> {
        self.note(format!("remove {url}"));
        Ok(())
    }

    async fn finish(&mut self, _timeout: Duration) -> Result<(), PipelineError> {
        self.note("finish");
        if self.script.finish_hangs {
            std::future::pending::<()>().await;
        }
        if self.script.finish_fails {
            return Err(PipelineError::Runtime("EOS did not arrive".into()));
        }
        Ok(())
    }

    async fn teardown(&mut self) {
        self.note("teardown");
    }
}

/// A session on a scripted engine, and the test's side of it.
struct Rig {
    handle: SessionHandle,
    commands: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    happen: mpsc::UnboundedSender<Happening>,
    console: mpsc::Sender<ConsoleMessage>,
    dead: watch::Sender<Option<String>>,
    force: CancellationToken,
    log: Arc<Mutex<Vec<String>>>,
}

fn spec(input: Input, output: Outputs) -> RecordingSpec {
    RecordingSpec {
        id: "RR_test".into(),
        input,
        output,
        options: Default::default(),
        max_duration: None,
    }
}

fn page(markers: bool) -> Input {
    Input::Page {
        url: "http://127.0.0.1:9/page".into(),
        markers,
    }
}

fn rtmp(urls: &[&str]) -> Outputs {
    Outputs {
        file: None,
        rtmp: Some(urls.iter().map(|u| (*u).to_owned()).collect()),
    }
}

fn rig_with(spec: RecordingSpec, config: Config, script: Script, builtin: Option<&str>) -> Rig {
    let (happen, happenings) = mpsc::unbounded_channel();
    let (console, console_rx) = mpsc::channel(16);
    let (dead, dead_rx) = watch::channel(None);
    let (ev_tx, events) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let force = CancellationToken::new();
    let fake = Fake {
        script,
        log: log.clone(),
        happenings,
        console: Some(console_rx),
        dead: dead_rx,
    };
    let ctx = SessionContext {
        config: Arc::new(config),
        uploader: None,
        force: force.clone(),
        events: Some(ev_tx),
        builtin_templates: builtin.map(str::to_owned),
    };
    let handle = SessionHandle::spawn_with(spec, ctx, fake);
    Rig {
        commands: handle.commands(),
        handle,
        events,
        happen,
        console,
        dead,
        force,
        log,
    }
}

fn rig(spec: RecordingSpec) -> Rig {
    rig_with(spec, Config::default(), Script::default(), None)
}

/// A page without markers streaming to one URL, on an engine that behaves as `script` says.
fn scripted(script: Script) -> Rig {
    rig_with(
        spec(page(false), rtmp(&[URL_A])),
        Config::default(),
        script,
        None,
    )
}

impl Rig {
    async fn say(&self, marker: &str) {
        self.console
            .send(ConsoleMessage {
                level: "log".into(),
                args: vec![marker.to_owned()],
            })
            .await
            .unwrap();
    }

    async fn next_event(&mut self) -> SessionEvent {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("an event in time")
            .expect("events until the last one")
    }

    /// Waits for the event that `pred` accepts, skipping none: anything else first fails.
    async fn expect_event(&mut self, what: &str, pred: impl Fn(&SessionEvent) -> bool) {
        let ev = self.next_event().await;
        assert!(pred(&ev), "expected {what}, got {ev:?}");
    }

    async fn waiting(&mut self) {
        self.expect_event("WaitingForStart", |e| *e == SessionEvent::WaitingForStart)
            .await;
    }

    async fn active(&mut self) {
        self.expect_event("Active", |e| matches!(e, SessionEvent::Active { .. }))
            .await;
    }

    async fn stop(&self) {
        self.commands.send(Command::Stop).await.unwrap();
    }

    /// The result, and the session's last event, which must say the same.
    async fn end(mut self) -> (SessionResult, Vec<String>) {
        let result = tokio::time::timeout(Duration::from_secs(30), self.handle.wait())
            .await
            .expect("the session ends in time");
        // The rest of the events, until the channel closes with the session.
        let mut rest = Vec::new();
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await
        {
            rest.push(ev);
        }
        let terminal =
            |e: &SessionEvent| matches!(e, SessionEvent::Complete(_) | SessionEvent::Failed(_));
        assert_eq!(
            rest.last(),
            Some(&SessionEvent::ended(result.clone())),
            "the last event carries the result: {rest:?}"
        );
        assert_eq!(rest.iter().filter(|e| terminal(e)).count(), 1, "{rest:?}");
        let log = self.log.lock().unwrap().clone();
        (result, log)
    }
}

fn calls(log: &[String]) -> Vec<&str> {
    log.iter()
        .map(|c| c.split(' ').next().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_stopped_recording_goes_through_every_phase_and_reports_each() {
    let mut r = rig(spec(page(true), rtmp(&[URL_A])));
    r.waiting().await;
    r.say(crate::template::START_MARKER).await;
    r.active().await;
    r.stop().await;
    r.expect_event("Ending", |e| {
        *e == SessionEvent::Ending {
            reason: EndReason::Stopped,
        }
    })
    .await;
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Stopped);
    assert_eq!(result.error, None);
    assert!(result.started_at.is_some());
    assert_eq!(result.streams.len(), 1);
    assert_eq!(result.streams[0].url, URL_A);
    assert_eq!(result.streams[0].error, None);
    assert_eq!(calls(&log), ["start", "play", "finish", "teardown"]);
    assert_eq!(log[0], "start http://127.0.0.1:9/page");
}

#[tokio::test]
async fn a_page_without_markers_records_at_once() {
    let mut r = rig(spec(page(false), rtmp(&[URL_A])));
    r.active().await;
    r.stop().await;
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Stopped);
    assert_eq!(calls(&log), ["start", "play", "finish", "teardown"]);
}

#[tokio::test]
async fn stop_while_starting_aborts_and_still_tears_down() {
    let script = Script {
        start_hangs: true,
        ..Default::default()
    };
    let r = rig_with(
        spec(page(true), rtmp(&[URL_A])),
        Config::default(),
        script,
        None,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.stop().await;
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Aborted);
    assert_eq!(result.error.as_deref(), Some("Recording aborted"));
    assert!(result.started_at.is_none());
    assert_eq!(calls(&log), ["start", "teardown"]);
}

#[tokio::test]
async fn outputs_cannot_change_before_the_recording_starts_and_can_after() {
    let mut r = rig(spec(page(true), rtmp(&[URL_A])));
    r.waiting().await;
    let (tx, rx) = oneshot::channel();
    r.commands
        .send(Command::AddOutput {
            url: URL_B.into(),
            reply: tx,
        })
        .await
        .unwrap();
    assert!(matches!(rx.await.unwrap(), Err(OutputError::NotRecording)));
    r.say(crate::template::START_MARKER).await;
    r.active().await;
    let (tx, rx) = oneshot::channel();
    r.commands
        .send(Command::AddOutput {
            url: URL_B.into(),
            reply: tx,
        })
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
    let (tx, rx) = oneshot::channel();
    r.commands
        .send(Command::RemoveOutput {
            url: URL_A.into(),
            reply: tx,
        })
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
    r.stop().await;
    let (result, log) = r.end().await;
    assert_eq!(
        calls(&log),
        ["start", "play", "add", "remove", "finish", "teardown"]
    );
    let urls: Vec<&str> = result.streams.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        [URL_A, URL_B],
        "removed first, then the ones still on"
    );
    assert!(result.streams.iter().all(|s| s.error.is_none()));
}

#[tokio::test]
async fn end_recording_on_the_page_closes_the_source() {
    let mut r = rig(spec(page(true), rtmp(&[URL_A])));
    r.say(crate::template::START_MARKER).await;
    r.say(crate::template::END_MARKER).await;
    r.waiting().await;
    r.active().await;
    r.expect_event("Ending", |e| {
        *e == SessionEvent::Ending {
            reason: EndReason::SourceClosed,
        }
    })
    .await;
    let (result, _) = r.end().await;
    assert_eq!(result.end, EndReason::SourceClosed);
    assert_eq!(result.error, None);
}

#[tokio::test(start_paused = true)]
async fn no_start_within_start_timeout_fails() {
    let config = Config {
        start_timeout: 5,
        ..Config::default()
    };
    let r = rig_with(
        spec(page(true), rtmp(&[URL_A])),
        config,
        Script::default(),
        None,
    );
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("template did not log START_RECORDING within 5s")
    );
    assert_eq!(calls(&log), ["start", "teardown"]);
}

#[tokio::test(start_paused = true)]
async fn max_duration_ends_the_recording_cleanly() {
    let mut s = spec(page(false), rtmp(&[URL_A]));
    s.max_duration = Some(Duration::from_secs(10));
    let mut r = rig(s);
    r.active().await;
    r.expect_event("Ending", |e| {
        *e == SessionEvent::Ending {
            reason: EndReason::LimitReached,
        }
    })
    .await;
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::LimitReached);
    assert_eq!(result.error, None);
    assert_eq!(calls(&log), ["start", "play", "finish", "teardown"]);
}

#[tokio::test]
async fn a_dead_part_fails_the_recording_and_the_file_is_finished_all_the_same() {
    let mut r = rig(spec(page(false), rtmp(&[URL_A])));
    r.active().await;
    r.happen
        .send(Happening::Died("Xvfb exited: signal 9".into()))
        .unwrap();
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    assert_eq!(result.error.as_deref(), Some("Xvfb exited: signal 9"));
    assert_eq!(
        calls(&log),
        ["start", "play", "finish", "teardown"],
        "what was recorded is finished"
    );
}

#[tokio::test]
async fn a_failing_source_is_named_by_the_part_that_died() {
    let mut r = rig(spec(page(false), rtmp(&[URL_A])));
    r.active().await;
    r.dead.send_replace(Some("PulseAudio exited: 1".into()));
    r.happen
        .send(Happening::Pipeline(Some(PipelineEvent::Error {
            element: "pulsesrc".into(),
            message: "connection lost".into(),
        })))
        .unwrap();
    let (result, _) = r.end().await;
    assert_eq!(result.error.as_deref(), Some("PulseAudio exited: 1"));
}

#[tokio::test]
async fn a_write_error_ends_at_once_without_finishing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.mp4");
    let out = Outputs {
        file: Some(FileOutput {
            local_path: path.clone(),
            upload_key: None,
            keep: false,
        }),
        rtmp: None,
    };
    let mut r = rig(spec(page(false), out));
    r.active().await;
    r.happen
        .send(Happening::Pipeline(Some(PipelineEvent::Error {
            element: "file_sink".into(),
            message: "No space left on device".into(),
        })))
        .unwrap();
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    let error = result.error.unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(
        calls(&log),
        ["start", "play", "teardown"],
        "no EOS: it would write more"
    );
}

#[tokio::test]
async fn one_failed_stream_leaves_the_others_and_the_last_one_fails_the_recording() {
    let mut r = rig(spec(page(false), rtmp(&[URL_A, URL_B])));
    r.active().await;
    for url in [URL_A, URL_B] {
        r.happen
            .send(Happening::Pipeline(Some(PipelineEvent::OutputFailed {
                url: url.into(),
                message: format!("{url} refused"),
            })))
            .unwrap();
        r.expect_event("StreamFailed", |e| {
            *e == SessionEvent::StreamFailed {
                url: url.into(),
                error: format!("{url} refused"),
            }
        })
        .await;
    }
    let (result, log) = r.end().await;
    assert_eq!(
        result.error.as_deref(),
        Some(format!("every rtmp output failed, the last with: {URL_B} refused").as_str())
    );
    assert_eq!(
        calls(&log),
        ["start", "play", "remove", "remove", "finish", "teardown"]
    );
    assert_eq!(result.streams.len(), 2);
    assert!(result.streams.iter().all(|s| s.error.is_some()));
}

#[tokio::test]
async fn force_while_finishing_gives_up_the_file_end() {
    let script = Script {
        finish_hangs: true,
        ..Default::default()
    };
    let mut r = scripted(script);
    r.active().await;
    r.stop().await;
    r.expect_event("Ending", |e| matches!(e, SessionEvent::Ending { .. }))
        .await;
    r.force.cancel();
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Forced);
    assert!(result
        .error
        .unwrap()
        .starts_with("recording forced to stop"));
    assert_eq!(calls(&log), ["start", "play", "finish", "teardown"]);
}

#[tokio::test]
async fn a_file_that_could_not_be_finished_is_an_error() {
    let script = Script {
        finish_fails: true,
        ..Default::default()
    };
    let mut r = scripted(script);
    r.active().await;
    r.stop().await;
    let (result, _) = r.end().await;
    assert_eq!(result.end, EndReason::Stopped);
    assert!(
        result.error.unwrap().contains("EOS did not arrive"),
        "the finish error is reported"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_devtools_connection_is_blamed_on_a_part_that_dies_within_a_moment() {
    let mut r = rig(spec(page(false), rtmp(&[URL_A])));
    r.active().await;
    r.happen
        .send(Happening::Alarm(Alarm::DevToolsClosed))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.dead
        .send_replace(Some("Chromium exited: signal 11".into()));
    let (result, _) = r.end().await;
    assert_eq!(result.error.as_deref(), Some("Chromium exited: signal 11"));

    // Nobody dies: the alarm is the error.
    let mut r = rig(spec(page(false), rtmp(&[URL_A])));
    r.active().await;
    r.happen
        .send(Happening::Alarm(Alarm::DevToolsClosed))
        .unwrap();
    let (result, _) = r.end().await;
    assert_eq!(
        result.error.as_deref(),
        Some("the DevTools connection to Chromium closed")
    );
}

#[tokio::test]
async fn a_page_error_before_start_fails_with_the_pages_words() {
    let mut r = rig(spec(page(true), rtmp(&[URL_A])));
    r.waiting().await;
    r.happen
        .send(Happening::PageError("room not found".into()))
        .unwrap();
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    assert_eq!(result.error.as_deref(), Some("room not found"));
    assert_eq!(calls(&log), ["start", "teardown"]);
}

#[tokio::test]
async fn template_input_opens_the_layout_page_with_a_room_token() {
    let config = Config {
        api_key: "key".into(),
        api_secret: "secret-that-is-long-enough-for-hs256".into(),
        ws_url: "wss://lk.example".into(),
        ..Config::default()
    };
    let input = Input::Template {
        layout: "grid-dark".into(),
        room_name: "room1".into(),
        base_url: String::new(),
    };
    // No built-in templates and no base URL: refused before anything starts.
    let r = rig_with(
        spec(input.clone(), rtmp(&[URL_A])),
        config.clone(),
        Script::default(),
        None,
    );
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    assert!(log.iter().all(|c| !c.starts_with("start")), "{log:?}");
    assert_eq!(result.room_name, "room1");

    let mut r = rig_with(
        spec(input, rtmp(&[URL_A])),
        config,
        Script::default(),
        Some("http://127.0.0.1:7/templates"),
    );
    r.waiting().await;
    r.stop().await;
    let (result, log) = r.end().await;
    assert_eq!(result.end, EndReason::Aborted);
    let url = log[0].strip_prefix("start ").unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:7/templates/grid-dark?url=wss%3A%2F%2Flk.example&token="),
        "{url}"
    );
}

#[tokio::test]
async fn a_panicking_session_still_sends_its_last_event_and_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let work = FileOutput {
        local_path: dir.path().join("RR_panic-x-room.mp4"),
        upload_key: Some("room.mp4".into()),
        keep: false,
    };
    let script = Script {
        start_panics: true,
        ..Default::default()
    };
    let out = Outputs {
        file: Some(work.clone()),
        rtmp: None,
    };
    // Written to: kept and named, so nothing is lost and nothing is leaked silently.
    std::fs::write(&work.local_path, vec![1u8; 2048]).unwrap();
    let r = rig_with(
        spec(page(false), out.clone()),
        Config::default(),
        script,
        None,
    );
    let (result, _) = r.end().await;
    assert_eq!(result.end, EndReason::Failed);
    let error = result.error.unwrap();
    assert!(error.starts_with("recording task failed: "), "{error}");
    assert!(error.contains("a bug in a part"), "{error}");
    assert!(
        error.ends_with(&format!(
            "the recording is kept at {}",
            work.local_path.display()
        )),
        "{error}"
    );
    let f = result.file.unwrap();
    assert_eq!(f.local_path.as_ref(), Some(&work.local_path));
    assert_eq!(f.size, 2048);

    // Empty: removed.
    std::fs::write(&work.local_path, b"").unwrap();
    let r = rig_with(spec(page(false), out), Config::default(), script, None);
    let (result, _) = r.end().await;
    assert!(result.file.is_none());
    assert!(!work.local_path.exists(), "the empty work file is removed");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left in the work dir"
    );
}
