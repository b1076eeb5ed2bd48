//! The session's virtual X display: an Xvfb of the recording's size on a free display number.
//!
//! Xvfb picks the number itself (`-displayfd`): it takes the first display with no lock file and
//! writes its number once it accepts connections, which is also our readiness signal. Two
//! recorders on one machine therefore never race for a number, and nothing is fixed at `:99`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::process::{Child, ProcessError};

/// How long Xvfb has to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("Xvfb did not become ready within {0:?}")]
    Timeout(Duration),
    #[error("Xvfb failed to start: {0}")]
    Failed(String),
}

/// A running Xvfb.
#[derive(Debug)]
pub struct Display {
    child: Child,
    name: String,
}

impl Display {
    /// Starts Xvfb with one screen of `width`x`height`x`depth` and waits until it accepts clients.
    pub async fn start(width: u32, height: u32, depth: u32) -> Result<Self, DisplayError> {
        let mut cmd = tokio::process::Command::new("Xvfb");
        cmd.args(["-displayfd", "1", "-screen", "0"])
            .arg(format!("{width}x{height}x{depth}"))
            .args([
                "-ac",
                "-nolisten",
                "tcp",
                "-noreset",
                "+extension",
                "MIT-SHM",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Child::spawn("Xvfb", cmd)?;
        let child = spawned.child;
        child.log_output(spawned.stderr.expect("stderr was piped"));
        let mut stdout = BufReader::new(spawned.stdout.expect("stdout was piped"));

        let mut line = String::new();
        let read = tokio::select! {
            r = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)) => r,
            status = child.exited() => {
                // Let the stderr reader catch up so the note carries Xvfb's own words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(DisplayError::Failed(child.death_note(&status)));
            }
        };
        match read {
            Err(_) => Err(DisplayError::Timeout(READY_TIMEOUT)),
            Ok(Err(e)) => Err(DisplayError::Failed(format!(
                "reading its display number: {e}"
            ))),
            Ok(Ok(_)) => match line.trim().parse::<u32>() {
                Ok(n) => {
                    let name = format!(":{n}");
                    tracing::debug!(display = %name, width, height, depth, "Xvfb ready");
                    Ok(Self { child, name })
                }
                Err(_) => Err(DisplayError::Failed(format!(
                    "unexpected display number {line:?}"
                ))),
            },
        }
    }

    /// The X display name, e.g. `:12`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn child(&self) -> &Child {
        &self.child
    }

    /// Stops Xvfb and waits until it is gone.
    pub async fn stop(&mut self) -> Result<(), ProcessError> {
        self.child.stop(Duration::from_secs(3)).await
    }
}
