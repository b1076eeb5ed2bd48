//! Nothing records forever, nothing hangs silently, no result is lost: the real daemon
//! (SERVICE_MODE=1) against a real redis-server and the livekit-server double of
//! `tests/common/livekit.rs`. Each case ends a recording by a limit or a watchdog, or by a
//! failure of the machine (a crashed renderer, a hung page, a frozen X server, a lost DevTools
//! connection, a full disk), and checks that the result arrives once, with the cause, that the
//! file plays, and that the daemon takes the next reservation. Run one at a time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::livekit::{start_daemon, url_request, wait_health, RedisServer, Server};
use common::*;
use livekit_recorder::proto::livekit::{
    start_recording_request, RecordingInfo, RecordingOptions, RecordingTemplate,
    StartRecordingRequest,
};
use nix::sys::signal::Signal;

/// An animated page that runs `script`.
fn page(script: &str) -> String {
    format!(
        r#"<!doctype html><html><body style="margin:0;background:#000">
<canvas id="c" style="width:100vw;height:100vh;display:block"></canvas>
<script>
const c = document.getElementById('c'), g = c.getContext('2d');
c.width = innerWidth; c.height = innerHeight;
(function draw(t) {{ g.fillStyle = `hsl(${{t / 10 % 360}},60%,40%)`; g.fillRect(0, 0, c.width, c.height);
  requestAnimationFrame(draw); }})(0);
{script}
</script></body></html>"#
    )
}

/// Blocky noise over the whole page, every frame: about as much video as the bitrate allows.
const NOISE: &str = "const n = document.createElement('canvas'); n.width = 160; n.height = 90;
const ng = n.getContext('2d'), img = ng.createImageData(160, 90);
g.imageSmoothingEnabled = false;
(function noise() { for (let i = 0; i < img.data.length; i++) img.data[i] = Math.random() * 256;
  ng.putImageData(img, 0, 0); g.drawImage(n, 0, 0, c.width, c.height); requestAnimationFrame(noise); })();";

/// Every `RecordingInfo` published on `RECORDING_RESULT`, claimed or not: a result published
/// twice would show here even when livekit-server's claim hides it.
struct AllResults(Arc<Mutex<Vec<RecordingInfo>>>);

impl AllResults {
    async fn start(redis: &RedisServer) -> Result<Self> {
        use futures::StreamExt;
        use prost::Message;
        let client = redis::Client::open(redis.url())?;
        let mut sub = client.get_async_pubsub().await?;
        sub.subscribe("RECORDING_RESULT").await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut stream = sub.on_message();
            while let Some(msg) = stream.next().await {
                let Ok(payload) = msg.get_payload::<Vec<u8>>() else {
                    continue;
                };
                if let Ok(info) = RecordingInfo::decode(payload.as_slice()) {
                    sink.lock().unwrap().push(info);
                }
            }
        });
        Ok(Self(seen))
    }

    fn count(&self, id: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|i| i.id == id).count()
    }
}

/// The recorder has started playing its pipeline (its log says so).
const PLAYING: &str = "session::record: recording";

/// Records `page_script` with `extra` config, calls `trigger` once the recording has run for a
/// few seconds, and checks what a livekit-server gets: one result, its error containing `want`,
/// a file that plays, and a daemon that takes the next reservation.
async fn ends_with(
    page_script: &str,
    extra: &str,
    dir: &Path,
    trigger: impl FnOnce(&Recorder) -> Result<()>,
    want: &str,
) -> Result<(RecordingInfo, PathBuf)> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[("/p", &page(page_script))])?;
    let extra = format!(
        "file_output: {{local: true, local_dir: {}}}\n{extra}",
        dir.display()
    );
    let mut d = start_daemon(&redis, &extra)?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let all = AllResults::start(&redis).await?;
    let file = dir.join("rec.mp4");
    let id = lk.reserve().await?.expect("a recorder acks");
    lk.start(&id, url_request(&web.url("/p"), &file))
        .await?
        .expect("start succeeds");
    tokio::task::block_in_place(|| d.rec.wait_for_log(PLAYING, Duration::from_secs(30)))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    trigger(&d.rec)?;
    let info = results.next(Duration::from_secs(90)).await?;
    eprintln!("result: {info:?}");
    assert_eq!(info.id, id);
    assert!(
        info.error.contains(want),
        "error {:?} should say {want:?}\n{}",
        info.error,
        d.rec.stderr()
    );
    let f = info.file.clone().context("a file result")?;
    assert!(f.duration >= 2, "{} s recorded", f.duration);
    let p = probe(&file)?;
    assert!(
        p.video_duration >= 2.0,
        "the file has {} s",
        p.video_duration
    );
    assert_eq!(decode_errors(&file)?, "", "the file plays cleanly");

    // Available again, and it takes the next reservation.
    wait_health(d.health_port, "available", Duration::from_secs(20))?;
    let next = lk.reserve().await?.expect("the next reservation is taken");
    assert_ne!(next, id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(all.count(&id), 1, "the result is published once");

    d.rec.signal(Signal::SIGTERM);
    let tag = d.rec.tag.clone();
    let done = tokio::task::block_in_place(|| d.rec.wait(Duration::from_secs(30)))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    Ok((info, file))
}

/// Every process descended from `root` (Chromium's zygote and renderers do not carry the test
/// tag: Chromium starts them with an environment of its own).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut at = pid;
            for _ in 0..64 {
                match parent.get(&at) {
                    Some(&p) if p == root => return true,
                    Some(&p) if p > 1 => at = p,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// The processes under the recorder's Chromium whose command line holds `needle`.
fn chromium_processes_with_arg(tag: &str, needle: &str) -> Vec<i32> {
    let Some(browser) = tagged_process(tag, "chromium") else {
        return Vec::new();
    };
    descendants(browser)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                // Chromium rewrites its helpers' titles: arguments may be joined by spaces.
                .map(|c| {
                    c.split(|b| *b == 0 || *b == b' ')
                        .any(|arg| arg == needle.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

fn kill(pid: i32, sig: Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_duration_ends_a_recording_by_itself() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (info, file) = ends_with(
        "",
        "max_duration: 5",
        dir.path(),
        |_| Ok(()),
        "max duration reached",
    )
    .await?;
    assert_eq!(
        info.error, "max duration reached",
        "nothing else went wrong"
    );
    let secs = info.file.unwrap().duration;
    assert!((4..=6).contains(&secs), "{secs} s for a 5 s limit");
    assert!((probe(&file)?.video_duration - 5.0).abs() <= 1.0);
    assert_eq!(
        mp4_boxes(&file)?.get(1).map(String::as_str),
        Some("moov"),
        "finished cleanly: faststart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_renderer_ends_the_recording() -> Result<()> {
    let dir = tempfile::tempdir()?;
    ends_with(
        "",
        "",
        dir.path(),
        |rec| {
            let renderers = chromium_processes_with_arg(&rec.tag, "--type=renderer");
            if renderers.is_empty() {
                bail!(
                    "no renderer process found among {:?}",
                    processes_with_tag(&rec.tag)
                );
            }
            for pid in renderers {
                kill(pid, Signal::SIGKILL)?;
            }
            Ok(())
        },
        "Chromium's page crashed",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_in_an_endless_loop_ends_the_recording() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (info, _) = ends_with(
        "setTimeout(() => { while (true) {} }, 4000);",
        "watchdog: {page_check_interval: 2, page_check_misses: 3}",
        dir.path(),
        |_| Ok(()),
        "the page stopped responding: 3 checks in a row, one every 2s, went unanswered",
    )
    .await?;
    assert!(
        info.file.unwrap().duration >= 6,
        "recorded until the page hung"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_x_server_ends_the_recording() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let stopped = Arc::new(Mutex::new(None::<i32>));
    let seen = stopped.clone();
    let result = ends_with(
        "",
        "watchdog: {video_stall: 5}",
        dir.path(),
        move |rec| {
            let (xvfb, _) = tagged_x_server(&rec.tag).context("no X server")?;
            *seen.lock().unwrap() = Some(xvfb);
            kill(xvfb, Signal::SIGSTOP)
        },
        "no video from the display for 5s",
    )
    .await;
    // Whatever happened, no stopped X server stays behind.
    if let Some(pid) = *stopped.lock().unwrap() {
        let _ = kill(pid, Signal::SIGCONT);
    }
    result?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_devtools_connection_ends_the_recording() -> Result<()> {
    let dir = tempfile::tempdir()?;
    ends_with(
        "",
        "",
        dir.path(),
        |rec| {
            let chromium = tagged_process(&rec.tag, "chromium").context("no Chromium")?;
            // Chromium's DevTools port, then its connections cut (as a proxy or a network
            // namespace would), while the browser itself goes on.
            let out = std::process::Command::new("ss").args(["-ltnpH"]).output()?;
            let listing = String::from_utf8_lossy(&out.stdout);
            let port = listing
                .lines()
                .find(|l| l.contains(&format!("pid={chromium},")))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|addr| addr.rsplit(':').next())
                .context("Chromium's DevTools port")?
                .to_owned();
            let killed = std::process::Command::new("ss")
                .args(["-K", "-tn", "dst", "127.0.0.1", "dport", "=", &port])
                .output()?;
            if !killed.status.success() {
                bail!("ss -K: {}", String::from_utf8_lossy(&killed.stderr));
            }
            Ok(())
        },
        "the DevTools connection to Chromium closed",
    )
    .await?;
    Ok(())
}

/// A small tmpfs, unmounted when dropped (CI runs as root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "mount tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_ends_the_recording_and_keeps_what_was_written() -> Result<()> {
    // A few seconds of noise at 4500 kbps (x264 needs noise to use its bitrate).
    let disk = Tmpfs::mount("2m")?;
    let (info, file) = ends_with(
        NOISE,
        "",
        disk.path(),
        |_| Ok(()),
        "could not write the recording to",
    )
    .await?;
    assert!(
        info.error.contains(&file.display().to_string()),
        "{}",
        info.error
    );
    // Cut back to its last complete fragment: the boxes end exactly at the end of the file.
    let data = std::fs::read(&file)?;
    let (mut at, mut last) = (0usize, String::new());
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into()?) as usize;
        last = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
        assert!(size >= 8, "a box of {size} bytes at {at}");
        at += size;
    }
    assert_eq!(at, data.len(), "the last box ({last}) is incomplete");
    assert_eq!(last, "mdat", "the file ends with a fragment's data");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_that_starts_after_70_s_is_recorded() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[(
        "/tpl/",
        &page(
            "setTimeout(() => console.log('START_RECORDING'), 70000);
             setTimeout(() => console.log('END_RECORDING'), 75000);",
        ),
    )])?;
    let dir = tempfile::tempdir()?;
    let d = start_daemon(
        &redis,
        &format!(
            "file_output: {{local: true, local_dir: {}}}\napi_key: k\napi_secret: test-secret-test-secret-test-secret\nws_url: ws://127.0.0.1:7880",
            dir.path().display()
        ),
    )?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let file = dir.path().join("late.mp4");
    let id = lk.reserve().await?.expect("acked");
    let req = StartRecordingRequest {
        input: Some(start_recording_request::Input::Template(
            RecordingTemplate {
                layout: "speaker-dark".into(),
                room_name: "late-room".into(),
                base_url: web.url("/tpl/#"),
            },
        )),
        output: Some(start_recording_request::Output::Filepath(
            file.to_str().unwrap().to_owned(),
        )),
        options: Some(RecordingOptions {
            width: 640,
            height: 360,
            ..Default::default()
        }),
    };
    lk.start(&id, req).await?.expect("started");
    let info = results.next(Duration::from_secs(120)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "", "no START timeout by default");
    assert_eq!(info.room_name, "late-room");
    let secs = info.file.unwrap().duration;
    assert!((4..=6).contains(&secs), "{secs} s between START and END");
    assert!((probe(&file)?.video_duration - 5.0).abs() <= 1.5);
    d.rec.signal(Signal::SIGTERM);
    let tag = d.rec.tag.clone();
    let done = tokio::task::block_in_place(|| d.rec.wait(Duration::from_secs(30)))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_killed_while_redis_is_down_publishes_the_result_after_both_restart() -> Result<()>
{
    let mut redis = RedisServer::start()?;
    let web = WebServer::start(&[("/p", &page(""))])?;
    let work = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("kept.mp4");
    let extra = format!(
        "file_output: {{local: true, work_dir: {}, local_dir: {}}}\nmax_duration: 6",
        work.path().display(),
        dir.path().display()
    );
    let mut d = start_daemon(&redis, &extra)?;
    let id = {
        let mut lk = Server::connect(&redis.url()).await?;
        let id = lk.reserve().await?.expect("acked");
        lk.start(&id, url_request(&web.url("/p"), &file))
            .await?
            .expect("started");
        id
    };
    tokio::task::block_in_place(|| d.rec.wait_for_log(PLAYING, Duration::from_secs(30)))?;
    // Redis goes away; the recording ends by its limit meanwhile and its result has nowhere to go.
    redis.stop();
    let results_dir = work.path().join("livekit-recorder-results");
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::fs::read_dir(&results_dir).map_or(0, |d| d.count()) == 0 {
        if std::time::Instant::now() > deadline {
            bail!(
                "no result kept in {}:\n{}",
                results_dir.display(),
                d.rec.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_health(d.health_port, "available", Duration::from_secs(20))?;
    // The result waits for Redis.
    tokio::task::block_in_place(|| {
        d.rec.wait_for_log(
            "could not publish the result; retrying",
            Duration::from_secs(30),
        )
    })?;
    // The daemon dies before Redis is back.
    d.rec.signal_group(Signal::SIGKILL);
    let tag = d.rec.tag.clone();
    tokio::task::block_in_place(|| d.rec.wait(Duration::from_secs(10)))?;
    assert_nothing_left(&tag);

    // Both come back: the new daemon publishes what the old one left, once.
    redis.restart(Duration::ZERO)?;
    let lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let all = AllResults::start(&redis).await?;
    let d2 = start_daemon(&redis, &extra)?;
    let info = results.next(Duration::from_secs(20)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "max duration reached");
    let secs = info.file.unwrap().duration;
    assert!((5..=7).contains(&secs), "{secs} s");
    assert!(probe(&file)?.video_duration >= 5.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(all.count(&id), 1, "published once");
    assert_eq!(
        std::fs::read_dir(&results_dir)?.count(),
        0,
        "removed once Redis took it"
    );
    d2.rec.signal(Signal::SIGTERM);
    let tag = d2.rec.tag.clone();
    let done = tokio::task::block_in_place(|| d2.rec.wait(Duration::from_secs(30)))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    Ok(())
}

/// The service-mode side of regression 1: `local: true` with S3 uploads, keeps the file, and the
/// result livekit-server gets has the `download_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_and_s3_in_service_mode_uploads_keeps_and_reports_the_url() -> Result<()> {
    use livekit_recorder::upload::s3;
    let moto = common::storage::moto()?;
    let client = s3::client(&livekit_recorder::config::S3Config {
        access_key: "testing".into(),
        secret: "testing-secret".into(),
        endpoint: moto.url(),
        region: "us-east-1".into(),
        bucket: "recordings".into(),
        ..Default::default()
    })?;
    client.create_bucket().bucket("recordings").send().await?;
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[("/p", &page(""))])?;
    let dir = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let d = start_daemon(
        &redis,
        &format!(
            "file_output:\n  local: true\n  local_dir: {}\n  work_dir: {}\n  s3: {{access_key: testing, secret: testing-secret, region: us-east-1, bucket: recordings, endpoint: \"{}\"}}",
            dir.path().display(),
            work.path().display(),
            moto.url()
        ),
    )?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let file = dir.path().join("rooms/kept.mp4");
    let id = lk.reserve().await?.expect("acked");
    lk.start(&id, url_request(&web.url("/p"), &file))
        .await?
        .expect("started");
    tokio::time::sleep(Duration::from_secs(6)).await;
    lk.end(&id).await?.expect("ended");
    let info = results.next(Duration::from_secs(60)).await?;
    assert_eq!(info.error, "", "{info:?}");
    let f = info.file.context("a file result")?;
    assert!(
        f.download_url.starts_with("s3://recordings/")
            && f.download_url.ends_with("rooms/kept.mp4"),
        "{}",
        f.download_url
    );
    assert!(file.exists(), "the local file is kept");
    let key = f.download_url.trim_start_matches("s3://recordings/");
    let body = client
        .get_object()
        .bucket("recordings")
        .key(key)
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    assert_eq!(body.as_ref(), std::fs::read(&file)?.as_slice());
    assert!(probe(&file)?.video_duration >= 3.0);
    d.rec.signal(Signal::SIGTERM);
    let done = tokio::task::block_in_place(|| d.rec.wait(Duration::from_secs(30)))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    Ok(())
}
