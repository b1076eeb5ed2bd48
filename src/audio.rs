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
        Ok(Self {
            child,
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
    /// A fresh null sink renders its first block at its maximum latency (up to 2 s), and a
    /// recording stream that connects meanwhile gets nothing until then: the file's audio would
    /// start late. A short-lived low-latency reader, run while the browser starts, takes that wait
    /// out of the recording.
    pub async fn warm_up(&self, timeout: Duration) -> Result<(), AudioError> {
        use tokio::io::AsyncReadExt;
        let mut cmd = tokio::process::Command::new("parec");
        cmd.arg(format!("--server={}", self.server()))
            .arg(format!("--device={}", self.monitor()))
            .args([
                "--latency-msec=10",
                "--raw",
                "--format=s16le",
                "--channels=2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let spawned = Child::spawn("parec", cmd)?;
        let mut child = spawned.child;
        let mut out = spawned.stdout.expect("stdout was piped");
        let mut buf = [0u8; 256];
        let got = tokio::time::timeout(timeout, out.read(&mut buf)).await;
        child.kill().await?;
        match got {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(Ok(_)) => Err(AudioError::Failed("the sink's monitor closed".into())),
            Ok(Err(e)) => Err(AudioError::Failed(format!(
                "reading the sink's monitor: {e}"
            ))),
            Err(_) => Err(AudioError::Timeout(timeout)),
        }
    }

    /// Stops PulseAudio and waits until it is gone.
    pub async fn stop(&mut self) -> Result<(), ProcessError> {
        self.child.stop(Duration::from_secs(3)).await
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
