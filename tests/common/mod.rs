//! Test harness: pages served on loopback, the recorder binary run as a user would, and checks of
//! the files it writes (ffprobe/ffmpeg) and of the processes it leaves (none).
#![allow(dead_code)]

pub mod egress;
pub mod livekit;
pub mod rtmp;
pub mod secrets;
pub mod storage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The recorder binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_livekit-recorder"))
}

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A static web server on a free loopback port, serving `demo/` plus extra pages by path. It runs
/// on a thread of its own, so sync and async tests can both use it.
pub struct WebServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    reports: Arc<std::sync::Mutex<Vec<String>>>,
}

impl WebServer {
    pub fn start(extra: &[(&str, &str)]) -> Result<Self> {
        let pages: Arc<HashMap<String, String>> = Arc::new(
            extra
                .iter()
                .map(|(p, body)| ((*p).to_owned(), (*body).to_owned()))
                .collect(),
        );
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = reports.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a test runtime");
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                let _ = addr_tx.send(listener.local_addr());
                let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                    let pages = pages.clone();
                    if uri.path() == "/report" {
                        let query = uri.query().unwrap_or_default().to_owned();
                        sink.lock().expect("reports lock").push(query);
                    }
                    async move { serve(&pages, uri.path()) }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().context("web server thread")??;
        Ok(Self {
            addr,
            stop: Some(stop),
            reports,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The query strings pages sent to `/report`.
    pub fn reports(&self) -> Vec<String> {
        self.reports.lock().expect("reports lock").clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn serve(pages: &HashMap<String, String>, path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let html = [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")];
    if let Some(body) = pages.get(path) {
        return (html, body.clone()).into_response();
    }
    let file = if path == "/" {
        "index.html"
    } else {
        path.trim_start_matches('/')
    };
    match std::fs::read_to_string(root().join("demo").join(file)) {
        Ok(body) if !file.contains("..") => (html, body).into_response(),
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// A recorder process started as a user would start it, in a process group of its own.
pub struct Recorder {
    pub child: std::process::Child,
    /// Every process the recorder starts inherits this tag in its environment.
    pub tag: String,
    pub started: Instant,
    /// The secrets its environment carries: none may appear in its output (checked when it is
    /// waited for, or dropped) nor in its children's environments.
    pub secrets: Vec<String>,
    logs: tempfile::TempDir,
    scanned: bool,
}

/// How a recorder run ended.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    /// The JSON result line standalone mode prints.
    pub fn result(&self) -> Result<serde_json::Value> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| {
                let tail: Vec<&str> = self.stderr.lines().rev().take(15).collect();
                format!(
                    "no JSON result line in stdout {:?}; exit {:?}; stderr ends:\n{}",
                    self.stdout,
                    self.code,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })?;
        Ok(serde_json::from_str(line)?)
    }
}

impl Recorder {
    /// Starts the recorder with `env` (`LIVEKIT_RECORDER_CONFIG`, `RECORDING_REQUEST`, ...).
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Result<Self> {
        Self::start_with(env, args, |_| {})
    }

    /// As [`Self::start`], with `configure` applied to the command last (a user to run as, say).
    pub fn start_with(
        env: &[(&str, &str)],
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        Self::start_program(&bin(), env, args, configure)
    }

    /// As [`Self::start_with`], running `program` (a container engine, say) instead of the
    /// binary under test.
    pub fn start_program(
        program: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let tag = format!("lkrec-test-{}-{}", std::process::id(), rand_suffix());
        let logs = tempfile::tempdir()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("LIVEKIT_RECORDER_CONFIG")
            .env_remove("RECORDING_REQUEST")
            .env_remove("SERVICE_MODE")
            .env_remove("EGRESS_MODE")
            .env("LKREC_TEST_TAG", &tag)
            // Children get a cleared environment: the tag is passed on by name.
            .env("LIVEKIT_RECORDER_CHILD_ENV", "LKREC_TEST_TAG")
            .env("RUST_LOG", "livekit_recorder=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("stdout"))?)
            .stderr(std::fs::File::create(logs.path().join("stderr"))?)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        configure(&mut cmd);
        let child = cmd.spawn().context("starting the recorder")?;
        Ok(Self {
            child,
            tag,
            started: Instant::now(),
            secrets: secrets::from_env(env),
            logs,
            scanned: false,
        })
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    /// Sends `sig` to the recorder process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signal the recorder");
    }

    /// Sends `sig` to the recorder's whole process group.
    pub fn signal_group(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signal the group");
    }

    /// What the recorder printed to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "recorder exited ({status}) before logging {needle:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "no {needle:?} in the log within {timeout:?}:\n{}",
            self.stderr()
        )
    }

    /// Waits for the recorder to exit; kills its group if it does not within `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                self.signal_group(nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.wait();
                bail!(
                    "recorder did not exit within {timeout:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let done = Finished {
            code: status.code(),
            stdout: std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default(),
            stderr: self.stderr(),
            took,
        };
        self.scan_output();
        Ok(done)
    }

    /// Checks stdout (the result line) and stderr (every log line) for secrets.
    fn scan_output(&mut self) {
        self.scanned = true;
        let stdout = std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default();
        secrets::scan("recorder stdout", &stdout, &self.secrets);
        secrets::scan("recorder stderr", &self.stderr(), &self.secrets);
    }
}

impl Drop for Recorder {
    /// A test that fails half-way must not leave its recorder running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.child.wait();
        }
        if !self.scanned && !std::thread::panicking() {
            self.scan_output();
        }
    }
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:x}", RandomState::new().hash_one(Instant::now()))
}

/// Processes whose environment carries `tag`, and the members of their process groups: what a
/// recorder run left behind. (Chromium's helpers rewrite their environment's memory with their
/// command line, so they are found through their browser's process group.)
pub fn processes_with_tag(tag: &str) -> Vec<String> {
    let needle = format!("LKREC_TEST_TAG={tag}");
    // (pid, process group, comm, tagged)
    let mut all: Vec<(i32, i32, String, bool)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A zombie waiting for its parent's reaper is not a live process.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split(' ');
        if fields.next().is_none_or(|state| state == "Z") {
            continue;
        }
        let pgid: i32 = fields.nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let tagged = std::fs::read(entry.path().join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()));
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        all.push((pid, pgid, comm.trim().to_owned(), tagged));
    }
    let leaders: Vec<i32> = all.iter().filter(|p| p.3).map(|p| p.0).collect();
    all.iter()
        .filter(|(_, pgid, _, tagged)| *tagged || leaders.contains(pgid))
        .map(|(pid, _, comm, _)| format!("{pid} {comm}"))
        .collect()
}

/// Asserts that nothing tagged `tag` is running, allowing a moment for exits in flight.
pub fn assert_nothing_left(tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with_tag(tag);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            // Clean up so later tests are not disturbed, then fail.
            for p in &left {
                if let Some(pid) = p.split(' ').next().and_then(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            panic!("processes outlived the recorder: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `comm` of the X servers a recording may run: Xorg with the dummy driver where it is
/// installed (as `deploy/install-deps.sh` installs it), else Xvfb.
pub const X_SERVERS: [&str; 2] = ["Xorg", "Xvfb"];

/// The tagged recorder's X server: its pid and `comm` (`Xorg` or `Xvfb`, also the name the
/// recorder gives it in errors).
pub fn tagged_x_server(tag: &str) -> Option<(i32, &'static str)> {
    X_SERVERS
        .iter()
        .find_map(|name| tagged_process(tag, name).map(|pid| (pid, *name)))
}

/// The pid of the tagged process whose `comm` is `name` and whose parent is not also `name`
/// (the Chromium browser process rather than one of its helpers).
pub fn tagged_process(tag: &str, name: &str) -> Option<i32> {
    let procs = processes_with_tag(tag);
    let named: Vec<i32> = procs
        .iter()
        .filter(|p| p.split(' ').nth(1) == Some(name))
        .filter_map(|p| p.split(' ').next()?.parse().ok())
        .collect();
    named.iter().copied().find(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid: i32 = stat
            .split(") ")
            .nth(1)
            .and_then(|r| r.split(' ').nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        !named.contains(&ppid)
    })
}

/// What ffprobe says about a file.
#[derive(Debug, Default)]
pub struct Probe {
    pub video_codec: String,
    pub audio_codec: String,
    pub width: u64,
    pub height: u64,
    pub profile: String,
    pub video_duration: f64,
    pub audio_duration: f64,
    pub video_frames: u64,
    pub format_duration: f64,
}

pub fn probe(path: &Path) -> Result<Probe> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let num = |v: &serde_json::Value| -> f64 {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_f64())
            .unwrap_or(0.0)
    };
    let mut p = Probe {
        format_duration: num(&v["format"]["duration"]),
        ..Probe::default()
    };
    for s in v["streams"].as_array().into_iter().flatten() {
        match s["codec_type"].as_str() {
            Some("video") => {
                p.video_codec = s["codec_name"].as_str().unwrap_or_default().into();
                p.width = s["width"].as_u64().unwrap_or(0);
                p.height = s["height"].as_u64().unwrap_or(0);
                p.profile = s["profile"].as_str().unwrap_or_default().into();
                p.video_duration = num(&s["duration"]);
                p.video_frames = num(&s["nb_read_packets"]) as u64;
            }
            Some("audio") => {
                p.audio_codec = s["codec_name"].as_str().unwrap_or_default().into();
                p.audio_duration = num(&s["duration"]);
            }
            _ => {}
        }
    }
    if p.video_duration == 0.0 {
        p.video_duration = p.format_duration;
    }
    Ok(p)
}

/// The mean volume of the audio track in dB (about -91 for digital silence).
pub fn mean_volume(path: &Path) -> Result<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("mean_volume:"))
        .with_context(|| format!("no volumedetect output: {text}"))?;
    let db = line
        .split("mean_volume:")
        .nth(1)
        .and_then(|r| r.trim().split(' ').next())
        .and_then(|v| v.parse().ok())
        .context("unparsable mean_volume")?;
    Ok(db)
}

/// Errors ffmpeg reports while decoding the whole file (empty when it decodes cleanly).
pub fn decode_errors(path: &Path) -> Result<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// Number of video frames ffmpeg can decode.
pub fn decodable_frames(path: &Path) -> Result<u64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The top-level MP4 boxes of a file, in order.
pub fn mp4_boxes(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(path)?;
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let mut size = u32::from_be_bytes(data[at..at + 4].try_into()?) as usize;
        let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
        if size == 1 && at + 16 <= data.len() {
            size = u64::from_be_bytes(data[at + 8..at + 16].try_into()?) as usize;
        } else if size == 0 {
            size = data.len() - at;
        }
        boxes.push(kind);
        if size < 8 {
            break;
        }
        at += size;
    }
    Ok(boxes)
}

/// A config that writes local files.
pub const LOCAL_CONFIG: &str = "file_output: {local: true}\nlog_level: debug";
