//! Supervised child processes.
//!
//! Every child runs in a process group of its own, so that it and everything it forks (Chromium's
//! helpers, say) can be signalled together. A reaper task owns the `tokio::process::Child` and
//! publishes its exit; the [`Child`] handle stops the group gracefully (SIGTERM, a grace period,
//! then SIGKILL), waits until no process of the group is left, and kills the group when dropped.
//!
//! Children never see the recorder's environment, which holds the config
//! (`LIVEKIT_RECORDER_CONFIG`: api secret, Redis password, storage keys) and the request
//! (`RECORDING_REQUEST`: stream keys): [`Child::spawn`] clears it and passes on only `PATH`, the
//! locale and the time zone ([`clean_env`]), plus what each spawn site sets for its program
//! (`DISPLAY`, `PULSE_*`, `HOME`, `XDG_*`) and the names the operator lists in
//! `LIVEKIT_RECORDER_CHILD_ENV`.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// How long [`Child::stop`] waits for the group to be gone after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// A child's output lines are cut to this many bytes (the rest of a longer line is skipped).
const MAX_LINE: usize = 4096;

/// Variables of the recorder's environment that children get: the search path and the locale
/// (with every `LC_*`).
const INHERITED: [&str; 4] = ["PATH", "LANG", "LANGUAGE", "TZ"];
/// Names (comma-separated) of further variables of the recorder's environment that children
/// get: for the operator's needs (fonts, a proxy, ...) and the tests' process tag.
pub const CHILD_ENV: &str = "LIVEKIT_RECORDER_CHILD_ENV";
/// Never passed to a child, whatever [`CHILD_ENV`] says: they carry every secret.
const NEVER: [&str; 2] = ["LIVEKIT_RECORDER_CONFIG", "RECORDING_REQUEST"];
/// `PATH` when the recorder has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Gives `cmd` a cleared environment: the few inherited variables, then the ones the caller set
/// on `cmd` (which win).
pub fn clean_env(cmd: &mut tokio::process::Command) {
    let explicit: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)> = cmd
        .as_std()
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
        .collect();
    cmd.env_clear();
    let extra: Vec<String> = std::env::var(CHILD_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let mut path = false;
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        let wanted =
            INHERITED.contains(&name) || name.starts_with("LC_") || extra.iter().any(|e| e == name);
        if wanted && !NEVER.contains(&name) {
            path |= name == "PATH";
            cmd.env(&k, v);
        }
    }
    if !path {
        cmd.env("PATH", DEFAULT_PATH);
    }
    for (k, v) in explicit {
        if NEVER.iter().any(|n| k == *n) {
            continue;
        }
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {name}: {source}")]
    Spawn {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("{name} (process group {pgid}) did not go away after SIGKILL")]
    Unkillable { name: &'static str, pgid: i32 },
}

/// A running child process and its process group.
#[derive(Debug)]
pub struct Child {
    name: &'static str,
    pgid: Pid,
    exit: watch::Receiver<Option<String>>,
    log: LineLog,
    gone: bool,
}

/// The pipes a caller asked for in the `Command`, handed back after the spawn.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
}

/// `CAP_SYS_NICE` (linux/capability.h): raising a process's CPU priority.
const CAP_SYS_NICE: libc::c_ulong = 23;

impl Child {
    /// Starts `cmd` in a new process group, with a cleared environment ([`clean_env`]). Standard
    /// input is closed; standard output and error are as the caller set them (inherited when
    /// not set).
    pub fn spawn(
        name: &'static str,
        cmd: tokio::process::Command,
    ) -> Result<Spawned, ProcessError> {
        Self::spawn_niced(name, cmd, 0)
    }

    /// [`Child::spawn`], the process (and whatever it starts) `nice` steps below the recorder's
    /// CPU priority (0 = the same).
    pub fn spawn_niced(
        name: &'static str,
        mut cmd: tokio::process::Command,
        nice: i32,
    ) -> Result<Spawned, ProcessError> {
        clean_env(&mut cmd);
        cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
        // If the recorder itself is killed (SIGKILL, OOM), its children must not live on.
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        let parent = std::process::id();
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                // Lowering one's own priority needs no privilege; should it fail, the child
                // runs at the recorder's priority, which is only less fair. Run as root, the
                // child could raise it again (Chromium gives its own threads -8): without
                // CAP_SYS_NICE (dropped from the bounding set, so the exec'd program lacks it)
                // it cannot, as it cannot as any other user.
                if nice != 0 {
                    let _ = libc::nice(nice);
                    let _ = libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|source| ProcessError::Spawn { name, source })?;
        let pid = child.id().expect("a child that was just spawned has a pid");
        let pgid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            tracing::debug!(process = name, pid, %status, "process exited");
            // Nobody listening is fine: the handle is gone and has killed the group.
            let _ = tx.send(Some(status));
        });
        tracing::debug!(process = name, pid, "process started");
        Ok(Spawned {
            child: Child {
                name,
                pgid,
                exit,
                log: LineLog::default(),
                gone: false,
            },
            stdout,
            stderr,
        })
    }

    /// The exit status of the group leader, once it has exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Waits for the group leader to exit and says how it ended.
    pub async fn exited(&self) -> String {
        let mut rx = self.exit.clone();
        let status = match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "reaper gone".into(),
        };
        status
    }

    /// A description of an unexpected exit: the status and the last lines the process printed,
    /// at most [`crate::policy::MAX_ERROR_TEXT`] bytes.
    pub fn death_note(&self, status: &str) -> String {
        let tail = self.log.tail();
        let note = if tail.is_empty() {
            format!("{} exited unexpectedly ({status})", self.name)
        } else {
            format!("{} exited unexpectedly ({status}): {tail}", self.name)
        };
        crate::policy::bound_error(&note)
    }

    /// Logs each line `reader` gives at debug level and keeps the last few for
    /// [`Self::death_note`]. Lines are cut to a few KB: a child that prints without end costs no
    /// memory.
    pub fn log_output<R: AsyncRead + Unpin + Send + 'static>(&self, reader: R) {
        let log = self.log.clone();
        let name = self.name;
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            while let Some(line) = read_line_bounded(&mut reader, MAX_LINE).await {
                let line = crate::policy::scrub_tokens(&line);
                tracing::debug!(process = name, "{line}");
                log.push(line);
            }
        });
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: Signal) {
        if !self.gone {
            if let Err(e) = killpg(self.pgid, signal) {
                tracing::trace!(process = self.name, %e, ?signal, "signal not delivered");
            }
        }
    }

    /// Whether any process of the group is still running.
    #[cfg(test)]
    pub fn group_alive(&self) -> bool {
        !self.gone && group_running(self.pgid)
    }

    /// Stops the group: SIGTERM, up to `grace` for it to go, then SIGKILL; returns once no process
    /// of the group is left.
    pub async fn stop(&mut self, grace: Duration) -> Result<(), ProcessError> {
        if self.gone {
            return Ok(());
        }
        self.signal(Signal::SIGTERM);
        // A stopped process would hold SIGTERM pending until the grace period ran out.
        self.signal(Signal::SIGCONT);
        if !self.wait_group_gone(grace).await {
            tracing::debug!(process = self.name, "still running after SIGTERM, killing");
            self.signal(Signal::SIGKILL);
            if !self.wait_group_gone(KILL_WAIT).await {
                return Err(ProcessError::Unkillable {
                    name: self.name,
                    pgid: self.pgid.as_raw(),
                });
            }
        }
        Ok(())
    }

    /// Kills the group at once and waits until it is gone.
    pub async fn kill(&mut self) -> Result<(), ProcessError> {
        self.stop(Duration::ZERO).await
    }

    async fn wait_group_gone(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // The leader must be reaped, and no member left running. Orphaned members that have
            // exited wait as zombies for init to reap them: they are gone for our purposes.
            if self.exit_status().is_some() && !group_running(self.pgid) {
                self.gone = true;
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The next line of `reader` (without its end), cut to `max` bytes: the rest of a longer line
/// is read and dropped. `None` at the end or on an error.
pub async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await
        .ok()?;
    if n == 0 {
        return None;
    }
    if !buf.ends_with(b"\n") && buf.len() >= max {
        // Skip to the end of the long line, a bounded chunk at a time.
        let mut skip = Vec::new();
        loop {
            skip.clear();
            match (&mut *reader)
                .take(limit)
                .read_until(b'\n', &mut skip)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) if skip.ends_with(b"\n") => break,
                Ok(_) => {}
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Some(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Whether any process of group `pgid` is running (not a zombie), from /proc; where /proc cannot
/// be read, whether the group exists at all.
fn group_running(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killpg(pgid, None).is_ok();
    };
    let want = pgid.as_raw();
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            return false;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(want) && state != "Z" && state != "X"
    })
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.gone {
            tracing::debug!(process = self.name, "killing process group on drop");
            self.signal(Signal::SIGKILL);
        }
    }
}

/// The last lines a process printed, for error messages.
#[derive(Debug, Clone, Default)]
struct LineLog(Arc<Mutex<VecDeque<String>>>);

impl LineLog {
    const KEEP: usize = 3;

    fn push(&self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        let mut lines = self.0.lock().expect("line log lock is never poisoned");
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self) -> String {
        let lines = self.0.lock().expect("line log lock is never poisoned");
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn stop_takes_the_whole_group() {
        // The shell ignores SIGTERM and has a grandchild: both must be gone after stop.
        let s = Child::spawn("test", sh("trap '' TERM; sleep 600 & sleep 600; wait")).unwrap();
        let mut child = s.child;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(child.group_alive());
        child.stop(Duration::from_millis(300)).await.unwrap();
        assert!(!child.group_alive());
        assert!(child.exit_status().unwrap().contains("signal"));
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let s = Child::spawn("test", sh("sleep 600 & sleep 600; wait")).unwrap();
        let pgid = s.child.pgid;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s.child);
        let mut gone = false;
        for _ in 0..100 {
            if killpg(pgid, None).is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "group survived the drop of its handle");
    }

    #[tokio::test]
    async fn a_niced_child_runs_below_the_recorder_and_cannot_climb_back() {
        // SAFETY: getpriority has no preconditions; -1 can be a valid value, which this
        // test process (nice 0-9 under any runner) never has.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // `nice` prints the niceness; renice to the recorder's own level must fail, as root too.
        let mut cmd = sh(&format!(
            "nice; renice -n {own} -p $$ >/dev/null 2>&1 && echo raised || echo kept; nice"
        ));
        cmd.stdout(Stdio::piped());
        let mut s = Child::spawn_niced("niced", cmd, 7).unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s.stdout.take().unwrap(), &mut out)
            .await
            .unwrap();
        let want = (own + 7).min(19);
        assert_eq!(out, format!("{want}\nkept\n{want}\n"), "own niceness {own}");
    }

    #[tokio::test]
    async fn death_note_carries_the_last_output() {
        let mut cmd = sh("echo one >&2; echo two >&2; exit 3");
        cmd.stderr(Stdio::piped());
        let s = Child::spawn("thing", cmd).unwrap();
        s.child.log_output(s.stderr.unwrap());
        let status = s.child.exited().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let note = s.child.death_note(&status);
        assert!(
            note.starts_with("thing exited unexpectedly (exit status: 3)"),
            "{note}"
        );
        assert!(note.contains("one | two"), "{note}");
    }

    #[tokio::test]
    async fn children_get_a_cleared_environment() {
        // Set on the recorder (this test process), and on the command, as secrets would be
        // (the config's own variable only on the command: other tests read the process's).
        std::env::set_var("LKREC_UNIT_SECRET", "unit-secret-value");
        std::env::set_var("LKREC_UNIT_PASSED", "passed-value");
        std::env::set_var(CHILD_ENV, "LKREC_UNIT_PASSED, RECORDING_REQUEST");
        let mut cmd = sh("env");
        cmd.env("DISPLAY", ":5")
            .env("RECORDING_REQUEST", "stream-key")
            .env("LIVEKIT_RECORDER_CONFIG", "api_secret: command-secret")
            .stdout(Stdio::piped());
        let s = Child::spawn("env", cmd).unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s.stdout.unwrap(), &mut out)
            .await
            .unwrap();
        std::env::remove_var(CHILD_ENV);
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(
            !out.contains("secret") && !out.contains("stream-key"),
            "{out}"
        );
        assert!(out.contains("DISPLAY=:5"), "{out}");
        assert!(out.contains("LKREC_UNIT_PASSED=passed-value"), "{out}");
        assert!(out.contains("PATH="), "{out}");
        for n in names {
            assert!(
                [
                    "PATH",
                    "LANG",
                    "LANGUAGE",
                    "TZ",
                    "DISPLAY",
                    "LKREC_UNIT_PASSED",
                    "PWD",
                    "SHLVL",
                    "_"
                ]
                .contains(&n)
                    || n.starts_with("LC_"),
                "unexpected variable {n} in {out}"
            );
        }
    }

    #[tokio::test]
    async fn output_lines_are_bounded() {
        let mut cmd = sh("head -c 100000 /dev/zero | tr '\\0' x; echo; echo after");
        cmd.stdout(Stdio::piped());
        let s = Child::spawn("long", cmd).unwrap();
        let mut r = BufReader::new(s.stdout.unwrap());
        let first = read_line_bounded(&mut r, 100).await.unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(
            read_line_bounded(&mut r, 100).await.as_deref(),
            Some("after")
        );
        assert_eq!(read_line_bounded(&mut r, 100).await, None);
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let e =
            Child::spawn("nothing", tokio::process::Command::new("/nonexistent/x")).unwrap_err();
        assert!(e.to_string().starts_with("could not start nothing"));
    }
}
