//! Chromium on the session's display, playing into the session's audio sink, driven over the
//! DevTools protocol (chromiumoxide).
//!
//! We start Chromium ourselves, in its own process group under [`crate::process`], and connect to
//! the DevTools address it prints, rather than letting the CDP library spawn it: that way the
//! browser and all its helper processes are supervised and torn down like every other part.
//!
//! The page gets what the request could name and nothing more ([`crate::policy`]): every request
//! it makes, redirects and subresources included, is paused over DevTools (`Fetch`) and goes on
//! only when its host's addresses are outside the denied networks; Chromium's own resolver maps
//! the denied networks' addresses and the cloud-metadata names to nothing (for WebSockets and
//! workers too); pop-ups are blocked, and any other page is closed at once. The built-in template
//! server stays reachable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::js_protocol::runtime::EventConsoleApiCalled;
use chromiumoxide::{Browser as CdpBrowser, Page};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::policy::{self, NetworkPolicy, PolicyError};
use crate::process::{Child, ProcessError};

/// How long Chromium has to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How far below the recorder Chromium runs: when the machine is short of CPU, capture and
/// encoding go first and the page renders fewer frames, rather than the page taking the CPU and
/// the recording losing frames (gaps in the file). `LIVEKIT_RECORDER_CHROMIUM_NICE` (0-19)
/// overrides it.
const CHROMIUM_NICE: i32 = 10;
const CHROMIUM_NICE_ENV: &str = "LIVEKIT_RECORDER_CHROMIUM_NICE";
/// How long a page has to load.
const NAVIGATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Console messages waiting for the session: only START/END markers are queued, each once.
const CONSOLE_QUEUE: usize = 4;
/// Console messages logged (at debug) per page; a page that logs without end is not echoed.
const CONSOLE_LOG_LINES: u32 = 200;
/// Paused requests decided at once; more wait for a slot.
const GUARD_CONCURRENCY: usize = 64;
/// How long a name's verdict is reused, and how many are kept.
const GUARD_CACHE_TTL: Duration = Duration::from_secs(10);
const GUARD_CACHE_SIZE: usize = 256;
/// Blocked requests logged at warn per page; the rest at debug.
const GUARD_LOG_LINES: u32 = 20;
/// Where Chromium is looked for when the config does not say.
const CHROMIUM_PATHS: [&str; 5] = [
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/google-chrome-stable",
    "/usr/bin/google-chrome",
    "/usr/bin/chromium-browser",
];

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("no Chromium found (looked in {0}); set chromium_path")]
    NotFound(String),
    #[error("could not create Chromium's profile directory: {0}")]
    Profile(std::io::Error),
    #[error("Chromium failed to start: {0}")]
    Failed(String),
    #[error("Chromium did not start within {0:?}")]
    Timeout(Duration),
    #[error("DevTools: {0}")]
    Cdp(String),
    #[error("could not load {url}: {message}")]
    Navigate { url: String, message: String },
}

impl From<chromiumoxide::error::CdpError> for BrowserError {
    fn from(e: chromiumoxide::error::CdpError) -> Self {
        Self::Cdp(e.to_string())
    }
}

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The X display, e.g. `:12`.
    pub display: String,
    /// The PulseAudio server (`unix:/path`) and the sink to play into.
    pub pulse_server: String,
    pub pulse_sink: String,
    pub width: u32,
    pub height: u32,
    /// Adds `--disable-web-security --allow-running-insecure-content`.
    pub insecure: bool,
    /// The Chromium binary; `None` looks in the usual places.
    pub binary: Option<PathBuf>,
    /// What the page may reach (the request was checked against the same policy).
    pub policy: NetworkPolicy,
    /// Run Chromium with its sandbox (`chromium_sandbox`); ignored, with a warning, as root.
    pub sandbox: bool,
    /// Deliver the page's START/END markers (only sessions that wait for them listen to the
    /// console at all).
    pub console: bool,
}

/// One `console.*` call of the page that carries a START or END marker: its level and its
/// arguments that are primitives, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleMessage {
    pub level: String,
    pub args: Vec<String>,
}

/// A running, connected Chromium with one page.
pub struct Browser {
    child: Child,
    cdp: CdpBrowser,
    page: Page,
    tasks: Vec<JoinHandle<()>>,
    monitor: PageMonitor,
    guard: Arc<Guard>,
    // Removed when the browser is dropped (after the child, which is declared first).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium, connects to it and attaches to its page, whose requests are guarded by
    /// the network policy from now on. With `opts.console`, the page's START and END markers
    /// arrive on the returned (bounded) channel.
    pub async fn launch(
        opts: &BrowserOptions,
    ) -> Result<(Self, mpsc::Receiver<ConsoleMessage>), BrowserError> {
        let binary = find_binary(opts.binary.as_deref())?;
        let opts = &BrowserOptions {
            sandbox: sandbox_allowed(opts.sandbox),
            ..opts.clone()
        };
        let profile = tempfile::Builder::new()
            .prefix("lkrec-chromium-")
            .tempdir()
            .map_err(BrowserError::Profile)?;
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.args(flags(opts, profile.path()))
            .env("DISPLAY", &opts.display)
            .env("PULSE_SERVER", &opts.pulse_server)
            .env("PULSE_SINK", &opts.pulse_sink)
            .env("HOME", profile.path())
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .env("XDG_CACHE_HOME", profile.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Child::spawn_niced("Chromium", cmd, chromium_nice())?;
        let child = spawned.child;
        let mut stderr = BufReader::new(spawned.stderr.expect("stderr was piped")).lines();

        // Chromium prints "DevTools listening on ws://..." once it accepts DevTools clients.
        let find_ws = async {
            while let Ok(Some(line)) = stderr.next_line().await {
                tracing::debug!(process = "Chromium", "{line}");
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    return Some(ws.trim().to_owned());
                }
            }
            None
        };
        let ws = tokio::select! {
            r = tokio::time::timeout(LAUNCH_TIMEOUT, find_ws) => match r {
                Err(_) => return Err(BrowserError::Timeout(LAUNCH_TIMEOUT)),
                Ok(None) => {
                    let status = child.exited().await;
                    return Err(BrowserError::Failed(child.death_note(&status)));
                }
                Ok(Some(ws)) => ws,
            },
            status = child.exited() => return Err(BrowserError::Failed(child.death_note(&status))),
        };
        child.log_output(stderr.into_inner());

        let (mut cdp, handler) = CdpBrowser::connect(ws).await?;
        let disconnected = tokio_util::sync::CancellationToken::new();
        let mut tasks = vec![tokio::spawn(drive_devtools(handler, disconnected.clone()))];
        let page = first_page(&mut cdp).await?;
        let crashed = watch_crashes(&page, &mut tasks).await?;
        let guard = Arc::new(Guard::new(opts.policy.clone()));
        guard_requests(&page, guard.clone(), &mut tasks).await?;
        close_other_pages(&cdp, &page, &mut tasks).await?;

        let (tx, rx) = mpsc::channel(CONSOLE_QUEUE);
        if opts.console {
            let console = page.event_listener::<EventConsoleApiCalled>().await?;
            tasks.push(tokio::spawn(forward_markers(console, tx)));
        }
        tracing::debug!(binary = %binary.display(), display = %opts.display, sandbox = opts.sandbox, "Chromium ready");
        Ok((
            Self {
                child,
                cdp,
                monitor: PageMonitor {
                    page: page.clone(),
                    crashed,
                    disconnected,
                },
                page,
                tasks,
                guard,
                _profile: profile,
            },
            rx,
        ))
    }

    /// Opens `url` and waits for it to load. The page's own address is held to the network
    /// policy first (its name resolved), so that a refusal says why.
    pub async fn navigate(&self, url: &str) -> Result<(), BrowserError> {
        let shown = policy::redact_page_url(url);
        let refused = |e: PolicyError| BrowserError::Navigate {
            url: shown.clone(),
            message: e.to_string(),
        };
        policy::check_page_syntax("url", url).map_err(refused)?;
        self.guard
            .policy
            .check_request(url)
            .await
            .map_err(refused)?;
        tracing::info!(url = %shown, "opening page");
        self.guard.take_block();
        match tokio::time::timeout(NAVIGATE_TIMEOUT, self.page.goto(url)).await {
            Err(_) => Err(BrowserError::Navigate {
                url: shown,
                message: format!("no load within {NAVIGATE_TIMEOUT:?}"),
            }),
            Ok(Err(e)) => {
                let mut message = policy::bound_error(&e.to_string());
                // A redirect the guard refused: say what was refused, not just Chromium's code.
                if message.contains("ERR_BLOCKED_BY_CLIENT") {
                    if let Some(block) = self.guard.take_block() {
                        message = format!("{block} ({message})");
                    }
                }
                Err(BrowserError::Navigate {
                    url: shown,
                    message,
                })
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Evaluates `expression` in the page and returns its value as text, if it is a string.
    pub async fn eval_string(&self, expression: &str) -> Result<Option<String>, BrowserError> {
        let result = self.page.evaluate(expression).await?;
        Ok(result.value().and_then(|v| v.as_str()).map(str::to_owned))
    }

    pub fn child(&self) -> &Child {
        &self.child
    }

    /// What the session's watchdog watches: renderer crashes, the DevTools connection, and
    /// whether the page still answers.
    pub fn monitor(&self) -> PageMonitor {
        self.monitor.clone()
    }

    /// Closes the browser and waits until every one of its processes is gone.
    pub async fn stop(&mut self) -> Result<(), ProcessError> {
        if self.child.exit_status().is_none() {
            // A polite close first; the process group is stopped either way. Chromium often
            // exits before it answers, so its exit ends the wait too.
            tokio::select! {
                _ = self.cdp.close() => {}
                _ = self.child.exited() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        self.child.stop(Duration::from_secs(3)).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs chromiumoxide's DevTools handler until the connection is gone, then cancels
/// `disconnected`. The handler reports a broken socket as an error on every poll (and a closed
/// one as nothing at all, until the next command fails to go out): either ends the loop here.
async fn drive_devtools(
    mut handler: chromiumoxide::Handler,
    disconnected: tokio_util::sync::CancellationToken,
) {
    use chromiumoxide::error::CdpError;
    while let Some(event) = handler.next().await {
        match event {
            Ok(()) => {}
            Err(e @ (CdpError::Ws(_) | CdpError::Io(_))) => {
                tracing::debug!(error = %e, "DevTools connection lost");
                break;
            }
            Err(e) => tracing::trace!(error = %e, "DevTools handler"),
        }
    }
    disconnected.cancel();
}

/// Enables the Inspector domain on `page` and returns a token cancelled when its renderer
/// crashes (`Inspector.targetCrashed`: the "Aw, Snap!" page, which records as a still image).
async fn watch_crashes(
    page: &Page,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<tokio_util::sync::CancellationToken, BrowserError> {
    use chromiumoxide::cdp::browser_protocol::inspector::{EnableParams, EventTargetCrashed};
    let mut crashes = page.event_listener::<EventTargetCrashed>().await?;
    page.execute(EnableParams::default()).await?;
    let crashed = tokio_util::sync::CancellationToken::new();
    let token = crashed.clone();
    tasks.push(tokio::spawn(async move {
        if crashes.next().await.is_some() {
            tracing::warn!("Chromium's renderer crashed");
            token.cancel();
        }
    }));
    Ok(crashed)
}

/// The page's health, shared with the session's watchdog.
#[derive(Clone)]
pub struct PageMonitor {
    page: Page,
    crashed: tokio_util::sync::CancellationToken,
    disconnected: tokio_util::sync::CancellationToken,
}

impl PageMonitor {
    /// Resolves when the page's renderer has crashed.
    pub async fn crashed(&self) {
        self.crashed.cancelled().await;
    }

    /// Resolves when the DevTools connection is gone.
    pub async fn disconnected(&self) {
        self.disconnected.cancelled().await;
    }

    /// Whether the page evaluates `1` within `timeout`: a page stuck in a script (or a frozen
    /// renderer) does not.
    pub async fn answers(&self, timeout: Duration) -> bool {
        use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
        let eval = self.page.execute(EvaluateParams::new("1"));
        match tokio::time::timeout(timeout, eval).await {
            // Any answer, even an exception, means the page's main thread runs.
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "page check failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// A page of our own: chromiumoxide tracks navigations only on targets it set up itself, so the
/// page is created over DevTools (a foreground tab of the kiosk window) rather than adopting the
/// about:blank tab Chromium opened at start, which is closed.
async fn first_page(cdp: &mut CdpBrowser) -> Result<Page, BrowserError> {
    let initial = cdp.fetch_targets().await?;
    let page = cdp.new_page("about:blank").await?;
    for t in initial.into_iter().filter(|t| t.r#type == "page") {
        let close =
            chromiumoxide::cdp::browser_protocol::target::CloseTargetParams::new(t.target_id);
        if let Err(e) = cdp.execute(close).await {
            tracing::debug!(%e, "could not close Chromium's initial tab");
        }
    }
    Ok(page)
}

/// The command-line flags: the original recorder's, the ones a closed network needs, and our
/// DevTools and profile settings.
fn flags(opts: &BrowserOptions, profile: &Path) -> Vec<String> {
    let mut f: Vec<String> = [
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-infobars",
        "--excludeSwitches=enable-automation",
        "--disable-background-networking",
        "--enable-features=NetworkService,NetworkServiceInProcess",
        "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
        "--disable-breakpad",
        "--disable-client-side-phishing-detection",
        "--disable-default-apps",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        // The original's three, then what costs a renderer process each (~80 MB PSS) and
        // serves nothing in a kiosk: the omnibox popup's preloaded WebUI, the spare renderer,
        // and the back-forward cache that kept about:blank's renderer after the navigation.
        "--disable-features=site-per-process,TranslateUI,BlinkGenPropertyTrees,\
         BackForwardCache,SpareRendererForSitePerProcess,PreloadTopChromeWebUI,\
         WebUIOmniboxPopup,WebUIOmniboxAimPopup",
        "--disable-hang-monitor",
        "--disable-ipc-flooding-protection",
        "--disable-prompt-on-repost",
        "--disable-renderer-backgrounding",
        "--disable-sync",
        "--force-color-profile=srgb",
        "--metrics-recording-only",
        "--safebrowsing-disable-auto-update",
        "--password-store=basic",
        "--use-mock-keychain",
        "--kiosk",
        "--autoplay-policy=no-user-gesture-required",
        "--window-position=0,0",
        // Closed networks: no component updates, no QUIC probes.
        "--disable-component-update",
        "--disable-quic",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if !opts.sandbox {
        f.push("--no-sandbox".into());
    }
    f.push(format!(
        "--host-resolver-rules={}",
        opts.policy.resolver_rules()
    ));
    f.push(format!("--window-size={},{}", opts.width, opts.height));
    f.push(format!("--display={}", opts.display));
    f.push(format!("--user-data-dir={}", profile.display()));
    if opts.insecure {
        f.push("--disable-web-security".into());
        f.push("--allow-running-insecure-content".into());
    }
    f.push("about:blank".into());
    f
}

fn find_binary(configured: Option<&Path>) -> Result<PathBuf, BrowserError> {
    if let Some(p) = configured {
        return Ok(p.to_owned());
    }
    CHROMIUM_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| BrowserError::NotFound(CHROMIUM_PATHS.join(", ")))
}

/// A console argument as `fmt.Sprint` would print it, for primitives only (as the original).
fn primitive_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether Chromium may run with its sandbox: asked for, and the recorder is not root (Chromium
/// refuses its sandbox as root). Asking as root logs a warning, once.
fn sandbox_allowed(wanted: bool) -> bool {
    if !wanted {
        return false;
    }
    if running_as_root() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("chromium_sandbox needs a recorder that is not root: Chromium runs without its sandbox");
        });
        return false;
    }
    true
}

/// Logs once that a recorder running as root cannot sandbox Chromium (service and egress modes
/// call this at start: their pages come from whoever can call livekit-server's API).
pub fn warn_if_root() {
    if running_as_root() {
        tracing::warn!("running as root: Chromium runs without its sandbox; run the recorder as a non-root user with chromium_sandbox: true (see deploy/kubernetes.md)");
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Forwards the page's START and END markers, each once, and logs the first console messages
/// (cut short); everything else a page logs is dropped here, so that a page that logs without
/// end costs no memory.
async fn forward_markers(
    mut console: chromiumoxide::listeners::EventStream<EventConsoleApiCalled>,
    tx: mpsc::Sender<ConsoleMessage>,
) {
    let markers = [crate::template::START_MARKER, crate::template::END_MARKER];
    let mut forwarded: Vec<&str> = Vec::new();
    let mut logged = 0u32;
    while let Some(event) = console.next().await {
        let args: Vec<String> = event
            .args
            .iter()
            .filter_map(|a| a.value.as_ref().and_then(primitive_text))
            .collect();
        let level = format!("{:?}", event.r#type).to_ascii_lowercase();
        if logged < CONSOLE_LOG_LINES {
            logged += 1;
            let text = crate::util::truncate(&policy::scrub_tokens(&args.join(" ")), 256);
            tracing::debug!(level = %level, msg = %text, "chrome console");
            if logged == CONSOLE_LOG_LINES {
                tracing::debug!("the page logs a lot: further console messages are not logged");
            }
        }
        let Some(marker) = markers
            .into_iter()
            .find(|m| args.iter().any(|a| a == m) && !forwarded.contains(m))
        else {
            continue;
        };
        forwarded.push(marker);
        if tx.try_send(ConsoleMessage { level, args }).is_err() {
            // The session is gone (or not listening): nothing to tell.
            return;
        }
    }
}

/// A name's verdict, and when it was reached.
type Verdict = (Instant, Result<(), PolicyError>);

/// The request guard's state: the policy, recent verdicts on names, and the last refusal (for
/// the navigation's error).
struct Guard {
    policy: NetworkPolicy,
    verdicts: Mutex<HashMap<String, Verdict>>,
    last_block: Mutex<Option<String>>,
    blocked: std::sync::atomic::AtomicU32,
}

impl Guard {
    fn new(policy: NetworkPolicy) -> Self {
        Self {
            policy,
            verdicts: Mutex::new(HashMap::new()),
            last_block: Mutex::new(None),
            blocked: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// May the page fetch `url`? Names are resolved (and the verdict kept a few seconds).
    async fn verdict(&self, url: &str) -> Result<(), PolicyError> {
        let key = url::Url::parse(url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)));
        let Some(key) = key else {
            return self.policy.check_request(url).await;
        };
        if let Ok(cache) = self.verdicts.lock() {
            if let Some((at, v)) = cache.get(&key) {
                if at.elapsed() < GUARD_CACHE_TTL {
                    return v.clone();
                }
            }
        }
        let v = self.policy.check_request(url).await;
        if let Ok(mut cache) = self.verdicts.lock() {
            if cache.len() >= GUARD_CACHE_SIZE {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), v.clone()));
        }
        v
    }

    /// Records a refused request: logged (its host only: the rest of a URL may hold a token),
    /// and kept for the navigation's error.
    fn note_block(&self, url: &str, e: &PolicyError) {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let n = self
            .blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n < GUARD_LOG_LINES {
            tracing::warn!(host = %host, reason = %e, "request blocked by the network policy");
        } else {
            tracing::debug!(host = %host, reason = %e, "request blocked by the network policy");
        }
        if let Ok(mut last) = self.last_block.lock() {
            *last = Some(format!("blocked by the network policy: {e}"));
        }
    }

    fn take_block(&self) -> Option<String> {
        self.last_block.lock().ok().and_then(|mut b| b.take())
    }
}

/// Closes every page but ours as soon as it appears: a pop-up (Chromium's popup blocker stops
/// those a page opens without a user's gesture, which a recorded page never has) would be a page
/// the request guard does not watch.
async fn close_other_pages(
    cdp: &CdpBrowser,
    ours: &Page,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(), BrowserError> {
    use chromiumoxide::cdp::browser_protocol::target::{CloseTargetParams, EventTargetCreated};
    let mut created = cdp.event_listener::<EventTargetCreated>().await?;
    let page = ours.clone();
    let id = ours.target_id().clone();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = created.next().await {
            let t = &event.target_info;
            if t.r#type == "page" && t.target_id != id {
                tracing::warn!("the page opened another page; closing it");
                if let Err(e) = page
                    .execute(CloseTargetParams::new(t.target_id.clone()))
                    .await
                {
                    tracing::debug!(error = %e, "could not close the other page");
                }
            }
        }
    }));
    Ok(())
}

/// Pauses every request of `page` (DevTools `Fetch`, request stage) and lets each go on only
/// when the guard allows its address; a refused one fails as `net::ERR_BLOCKED_BY_CLIENT`.
/// Redirects are new requests, paused like the first.
async fn guard_requests(
    page: &Page,
    guard: Arc<Guard>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(), BrowserError> {
    use chromiumoxide::cdp::browser_protocol::fetch::{
        ContinueRequestParams, EnableParams, EventRequestPaused, FailRequestParams,
    };
    use chromiumoxide::cdp::browser_protocol::network::ErrorReason;
    let mut paused = page.event_listener::<EventRequestPaused>().await?;
    page.execute(EnableParams::default()).await?;
    let page = page.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(GUARD_CONCURRENCY));
    tasks.push(tokio::spawn(async move {
        while let Some(event) = paused.next().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (page, guard) = (page.clone(), guard.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let id = event.request_id.clone();
                let sent = match guard.verdict(&event.request.url).await {
                    Ok(()) => page.execute(ContinueRequestParams::new(id)).await.map(drop),
                    Err(e) => {
                        guard.note_block(&event.request.url, &e);
                        page.execute(FailRequestParams::new(id, ErrorReason::BlockedByClient))
                            .await
                            .map(drop)
                    }
                };
                if let Err(e) = sent {
                    tracing::trace!(error = %e, "paused request not answered (page gone)");
                }
            });
        }
    }));
    Ok(())
}

/// Chromium's niceness: [`CHROMIUM_NICE`], or the environment's value when it is 0-19.
fn chromium_nice() -> i32 {
    match std::env::var(CHROMIUM_NICE_ENV) {
        Ok(v) => match v.trim().parse::<i32>() {
            Ok(n) if (0..=19).contains(&n) => n,
            _ => {
                tracing::warn!(value = %v, "{CHROMIUM_NICE_ENV} is not 0-19; using {CHROMIUM_NICE}");
                CHROMIUM_NICE
            }
        },
        Err(_) => CHROMIUM_NICE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BrowserOptions {
        BrowserOptions {
            display: ":7".into(),
            pulse_server: "unix:/x".into(),
            pulse_sink: "recorder".into(),
            width: 1280,
            height: 720,
            insecure: false,
            binary: None,
            policy: NetworkPolicy::default(),
            sandbox: false,
            console: true,
        }
    }

    #[test]
    fn flags_carry_the_size_display_and_network_settings() {
        let f = flags(&opts(), Path::new("/p"));
        for want in [
            "--window-size=1280,720",
            "--display=:7",
            "--user-data-dir=/p",
            "--no-sandbox",
            "--kiosk",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ] {
            assert!(f.iter().any(|x| x == want), "missing {want}");
        }
        assert!(!f.iter().any(|x| x == "--disable-web-security"));
        assert!(!f.iter().any(|x| x.starts_with("--headless")));
        let insecure = flags(
            &BrowserOptions {
                insecure: true,
                ..opts()
            },
            Path::new("/p"),
        );
        assert!(insecure.iter().any(|x| x == "--disable-web-security"));
        assert!(insecure
            .iter()
            .any(|x| x == "--allow-running-insecure-content"));
    }

    #[test]
    fn flags_carry_the_sandbox_choice_and_the_resolver_rules() {
        let f = flags(&opts(), Path::new("/p"));
        assert!(!f.iter().any(|x| x == "--disable-popup-blocking"));
        let rules = f
            .iter()
            .find_map(|x| x.strip_prefix("--host-resolver-rules="))
            .expect("resolver rules");
        assert!(rules.contains("MAP 169.254.*.* ~NOTFOUND"), "{rules}");
        assert!(
            rules.contains("MAP metadata.google.internal ~NOTFOUND"),
            "{rules}"
        );
        let sandboxed = flags(
            &BrowserOptions {
                sandbox: true,
                ..opts()
            },
            Path::new("/p"),
        );
        assert!(!sandboxed.iter().any(|x| x == "--no-sandbox"));
    }

    #[test]
    fn console_values_print_like_the_original() {
        assert_eq!(
            primitive_text(&serde_json::json!("START_RECORDING")).as_deref(),
            Some("START_RECORDING")
        );
        assert_eq!(primitive_text(&serde_json::json!(3)).as_deref(), Some("3"));
        assert_eq!(
            primitive_text(&serde_json::json!(true)).as_deref(),
            Some("true")
        );
        assert_eq!(primitive_text(&serde_json::json!({"a": 1})), None);
    }
}
