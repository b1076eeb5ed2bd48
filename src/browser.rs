//! Chromium on the session's display, playing into the session's audio sink, driven over the
//! DevTools protocol (chromiumoxide).
//!
//! We start Chromium ourselves, in its own process group under [`crate::process`], and connect to
//! the DevTools address it prints, rather than letting the CDP library spawn it: that way the
//! browser and all its helper processes are supervised and torn down like every other part.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chromiumoxide::cdp::js_protocol::runtime::EventConsoleApiCalled;
use chromiumoxide::{Browser as CdpBrowser, Page};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::process::{Child, ProcessError};

/// How long Chromium has to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a page has to load.
const NAVIGATE_TIMEOUT: Duration = Duration::from_secs(30);
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
}

/// One `console.*` call of the page: its level and its arguments that are primitives, as text.
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
    // Removed when the browser is dropped (after the child, which is declared first).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium, connects to it and attaches to its page. Console messages of the page
    /// arrive on the returned channel.
    pub async fn launch(
        opts: &BrowserOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ConsoleMessage>), BrowserError> {
        let binary = find_binary(opts.binary.as_deref())?;
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
        let spawned = Child::spawn("Chromium", cmd)?;
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

        let (mut cdp, mut handler) = CdpBrowser::connect(ws).await?;
        let mut tasks = vec![tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    tracing::trace!(%e, "DevTools handler");
                }
            }
        })];
        let page = first_page(&mut cdp).await?;

        let (tx, rx) = mpsc::unbounded_channel();
        let mut console = page.event_listener::<EventConsoleApiCalled>().await?;
        tasks.push(tokio::spawn(async move {
            while let Some(event) = console.next().await {
                let msg = ConsoleMessage {
                    level: format!("{:?}", event.r#type).to_ascii_lowercase(),
                    args: event
                        .args
                        .iter()
                        .filter_map(|a| a.value.as_ref().and_then(primitive_text))
                        .collect(),
                };
                tracing::debug!(level = %msg.level, msg = %msg.args.join(" "), "chrome console");
                if tx.send(msg).is_err() {
                    break;
                }
            }
        }));
        tracing::debug!(binary = %binary.display(), display = %opts.display, "Chromium ready");
        Ok((
            Self {
                child,
                cdp,
                page,
                tasks,
                _profile: profile,
            },
            rx,
        ))
    }

    /// Opens `url` and waits for it to load.
    pub async fn navigate(&self, url: &str) -> Result<(), BrowserError> {
        let shown = redact(url);
        tracing::info!(url = %shown, "opening page");
        match tokio::time::timeout(NAVIGATE_TIMEOUT, self.page.goto(url)).await {
            Err(_) => Err(BrowserError::Navigate {
                url: shown,
                message: format!("no load within {NAVIGATE_TIMEOUT:?}"),
            }),
            Ok(Err(e)) => Err(BrowserError::Navigate {
                url: shown,
                message: e.to_string(),
            }),
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
        "--no-sandbox",
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
        "--disable-features=site-per-process,TranslateUI,BlinkGenPropertyTrees",
        "--disable-hang-monitor",
        "--disable-ipc-flooding-protection",
        "--disable-popup-blocking",
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

/// An address fit for a log line: the query (which carries the room token) is cut off.
pub fn redact(url: &str) -> String {
    match url.find('?') {
        Some(i) => format!("{}?…", &url[..i]),
        None => url.to_owned(),
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

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(
            redact("http://t/#/speaker-dark?url=wss%3A%2F%2Fx&token=eyJsecret"),
            "http://t/#/speaker-dark?…"
        );
        assert_eq!(redact("http://a/b"), "http://a/b");
    }
}
