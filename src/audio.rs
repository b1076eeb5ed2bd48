//! The session's private PulseAudio server: a null sink that the browser plays into, whose
//! monitor the pipeline records.
//!
//! Runs in the foreground under our supervision (`--daemonize=no`, never `-D`, which would leave
//! our process group), with its own runtime, state and config directories, so that recordings on
//! one machine never hear each other and no system-wide daemon or entrypoint script is needed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::process::{Child, ProcessError};

/// How long PulseAudio has to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The null sink's name; its monitor source is `recorder.monitor`.
const SINK: &str = "recorder";

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("could not create PulseAudio's runtime directory: {0}")]
    Dir(std::io::Error),
    #[error("PulseAudio did not become ready within {0:?}")]
    Timeout(Duration),
    #[error("PulseAudio failed to start: {0}")]
    Failed(String),
}

/// A running private PulseAudio server.
#[derive(Debug)]
pub struct AudioServer {
    child: Child,
    /// A low-latency reader of the sink's monitor, kept for the whole session (see
    /// [`Self::warm_up`]).
    anchor: Option<Child>,
    /// Set once the monitor has delivered its first audio.
    flowing: tokio::sync::watch::Receiver<bool>,
    socket: PathBuf,
    // Removed when the server is dropped (after the child, which is declared first).
    _dir: tempfile::TempDir,
}

impl AudioServer {
    /// Starts PulseAudio with a null sink at `rate` Hz, stereo, and waits until it accepts clients.
    pub async fn start(rate: u32) -> Result<Self, AudioError> {
        let dir = tempfile::Builder::new()
            .prefix("lkrec-pulse-")
            .tempdir()
            .map_err(AudioError::Dir)?;
        let socket = dir.path().join("native");
        let mut cmd = tokio::process::Command::new("pulseaudio");
        cmd.args([
            "--daemonize=no",
            "--system=no",
            "--exit-idle-time=-1",
            "--disallow-exit=yes",
            "--use-pid-file=no",
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            "--log-level=notice",
            "-n",
        ])
        .arg(format!(
            "--load=module-native-protocol-unix socket={} auth-anonymous=1",
            socket.display()
        ))
        .arg(format!(
            "--load=module-null-sink sink_name={SINK} rate={rate} channels=2 sink_properties=device.description=recorder"
        ))
        .arg("--load=module-always-sink")
        .envs(private_env(dir.path()))
        .env_remove("PULSE_SERVER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let spawned = Child::spawn("PulseAudio", cmd)?;
        let child = spawned.child;
        child.log_output(spawned.stderr.expect("stderr was piped"));

        let ready = async {
            loop {
                if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(READY_TIMEOUT, ready) => {
                r.map_err(|_| AudioError::Timeout(READY_TIMEOUT))?;
            }
            status = child.exited() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(AudioError::Failed(child.death_note(&status)));
            }
        }
        tracing::debug!(socket = %socket.display(), rate, "PulseAudio ready");
        let server = format!("unix:{}", socket.display());
        let (anchor, flowing) = start_anchor(&server);
        if anchor.is_some() {
            tokio::spawn(kick_sink(server.clone(), flowing.clone()));
        }
        Ok(Self {
            child,
            anchor,
            flowing,
            socket,
            _dir: dir,
        })
    }

    /// The server address for clients (`PULSE_SERVER`, pulsesrc's `server`).
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The sink the browser plays into.
    pub fn sink(&self) -> &'static str {
        SINK
    }

    /// The source to record: the sink's monitor.
    pub fn monitor(&self) -> String {
        format!("{SINK}.monitor")
    }

    pub fn child(&self) -> &Child {
        &self.child
    }

    /// Waits until the null sink delivers audio to its monitor.
    ///
    /// A fresh null sink renders its first block at its maximum latency (up to 2 s after it was
    /// created), and without a client that asks for low latency it keeps rendering in such
    /// blocks: a recording stream that connects meanwhile gets nothing until then, and at the end
    /// loses what is still in the block. The anchor (a `parec` at 10 ms latency, started with
    /// the server and kept until it stops) and a suspend/resume of the sink once it is connected
    /// fix both; this waits for the anchor's first audio, so that the pipeline plays only once
    /// audio flows (about 0.1 s after start). Returns a task to await before playing.
    pub fn warm_up(&self, timeout: Duration) -> tokio::task::JoinHandle<Result<(), AudioError>> {
        let mut flowing = self.flowing.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, flowing.wait_for(|f| *f)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(AudioError::Failed(
                    "the sink's monitor reader is gone".into(),
                )),
                Err(_) => Err(AudioError::Timeout(timeout)),
            }
        })
    }

    /// Stops PulseAudio and waits until it is gone.
    pub async fn stop(&mut self) -> Result<(), ProcessError> {
        if let Some(anchor) = self.anchor.as_mut() {
            anchor.kill().await?;
        }
        self.child.stop(Duration::from_secs(3)).await
    }
}

/// Starts the low-latency monitor reader; its output is read and dropped, and the watch turns
/// true with its first bytes. Without it recordings still work, with late audio: a failure is
/// logged, not fatal.
fn start_anchor(server: &str) -> (Option<Child>, tokio::sync::watch::Receiver<bool>) {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut cmd = tokio::process::Command::new("parec");
    cmd.arg(format!("--server={server}"))
        .arg(format!("--device={SINK}.monitor"))
        .args([
            "--latency-msec=10",
            "--raw",
            "--format=s16le",
            "--channels=2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match Child::spawn("parec", cmd) {
        Ok(spawned) => {
            let mut out = spawned.stdout.expect("stdout was piped");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = out.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !*tx.borrow() {
                        tx.send_replace(true);
                    }
                }
            });
            (Some(spawned.child), rx)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no low-latency monitor reader; audio may start late");
            (None, rx)
        }
    }
}

/// A fresh null sink renders its first block at its maximum latency, 2 s; suspending and
/// resuming it once the low-latency anchor is connected makes it start over at the anchor's
/// 10 ms. Retried a few times, since the anchor may not be connected at the first try.
async fn kick_sink(server: String, mut flowing: tokio::sync::watch::Receiver<bool>) {
    for attempt in 1..=5u64 {
        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        if *flowing.borrow() {
            return;
        }
        for suspend in ["1", "0"] {
            let mut pactl = tokio::process::Command::new("pactl");
            pactl
                .arg("-s")
                .arg(&server)
                .args(["suspend-sink", SINK, suspend])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            crate::process::clean_env(&mut pactl);
            let run = pactl.status();
            if let Err(e) = tokio::time::timeout(Duration::from_secs(2), run).await {
                tracing::debug!(error = %e, "pactl suspend-sink timed out");
            }
        }
        if tokio::time::timeout(Duration::from_millis(300), flowing.wait_for(|f| *f))
            .await
            .is_ok()
        {
            tracing::debug!(attempt, "audio sink kicked into low latency");
            return;
        }
    }
}

/// Environment that keeps PulseAudio (and its clients' cookie lookups) inside `dir`.
fn private_env(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("HOME", dir.to_owned()),
        ("XDG_RUNTIME_DIR", dir.to_owned()),
        ("PULSE_RUNTIME_PATH", dir.to_owned()),
        ("PULSE_STATE_PATH", dir.join("state")),
        ("XDG_CONFIG_HOME", dir.join("config")),
    ]
}
