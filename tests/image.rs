//! The container image as users run it: built from the Dockerfile by `make image`, started with
//! docker or podman, the recorder as uid 10001 under tini. Run by `make image-test`
//! (scripts/image.sh), which builds the image and names it in `LIVEKIT_RECORDER_IMAGE`; ignored
//! otherwise, since building the image takes a release build.
//!
//! The containers share the host's network (loopback only): the page, Redis and the
//! livekit-server double run on the host's 127.0.0.1.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use common::livekit::{free_port, url_request, wait_health, RedisServer, Server};
use common::*;
use nix::sys::signal::Signal;

/// The image's user (Dockerfile: RECORDER_UID).
const RECORDER_UID: u32 = 10001;

fn image() -> String {
    std::env::var("LIVEKIT_RECORDER_IMAGE").expect("make image-test names the image")
}

fn engine() -> PathBuf {
    PathBuf::from(std::env::var("LIVEKIT_RECORDER_ENGINE").unwrap_or_else(|_| "podman".into()))
}

/// What scripts/image.sh passes to every `run` of the engine (podman: `--runtime runc` and
/// explicit limits).
fn engine_args() -> Vec<String> {
    std::env::var("LIVEKIT_RECORDER_ENGINE_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A directory the container's user can write, mounted at /out.
fn out_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

/// A running container; removed when dropped, even if the test failed half-way.
struct Container {
    rec: Option<Recorder>,
    name: String,
}

impl Container {
    /// `docker|podman run` of the image with `env` passed by name and `out` mounted at /out.
    fn run(env: &[(&str, &str)], out: &Path) -> Result<Self> {
        let name = format!("lkrec-image-test-{}-{}", std::process::id(), free_port());
        let mount = format!("{}:/out", out.display());
        let mut args = vec!["run".to_owned()];
        args.extend(engine_args());
        args.extend(
            [
                "--rm",
                "--name",
                &name,
                "--network",
                "host",
                "--shm-size",
                "1g",
                "-v",
                &mount,
                "-e",
                "RUST_LOG",
            ]
            .map(String::from),
        );
        for (k, _) in env {
            args.extend(["-e".into(), (*k).to_owned()]);
        }
        args.push(image());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all_env = vec![("RUST_LOG", "livekit_recorder=debug")];
        all_env.extend_from_slice(env);
        let rec = Recorder::start_program(&engine(), &all_env, &args, |_| {})?;
        Ok(Self {
            rec: Some(rec),
            name,
        })
    }

    /// SIGTERM to the engine's client, which passes it to the container (tini, then the
    /// recorder): what `docker stop` and a pod deletion do.
    fn terminate(&self) {
        self.recorder().signal(Signal::SIGTERM);
    }

    fn recorder(&self) -> &Recorder {
        self.rec.as_ref().expect("present until waited for")
    }

    fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let rec = self.rec.as_mut().expect("present until waited for");
        rec.wait_for_log(needle, timeout)
    }

    /// Waits for the engine's client to exit (it exits with the container's code).
    fn wait(mut self, timeout: Duration) -> Result<Finished> {
        self.rec.take().expect("waited for once").wait(timeout)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new(engine())
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The recording at `path`: written by the image's user, playable, with audio and video.
fn check_recording(path: &Path, seconds: std::ops::RangeInclusive<f64>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("no file at {}", path.display()))?;
    assert_eq!(meta.uid(), RECORDER_UID, "written as the image's user");
    let p = probe(path)?;
    assert_eq!(
        (p.video_codec.as_str(), p.audio_codec.as_str()),
        ("h264", "aac"),
        "{p:?}"
    );
    assert!(
        seconds.contains(&p.format_duration),
        "duration {p:?}, want {seconds:?}"
    );
    assert!(
        (p.video_duration - p.audio_duration).abs() < 0.5,
        "audio as long as video: {p:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs the container image: make image-test"]
fn the_image_records_a_page_as_its_own_user_and_finishes_on_sigterm() -> Result<()> {
    let web = WebServer::start(&[])?;
    let out = out_dir()?;
    let request = serde_json::json!({
        "url": web.url("/"),
        "filepath": "/out/image.mp4",
        "options": {"width": 1280, "height": 720},
    })
    .to_string();
    let mut c = Container::run(
        &[
            ("LIVEKIT_RECORDER_CONFIG", "log_level: debug\n"),
            ("RECORDING_REQUEST", &request),
            ("SERVICE_MODE", "0"),
            // The production display, no fallback: Xorg with the dummy driver as uid 10001.
            ("LIVEKIT_RECORDER_X_SERVER", "xorg"),
        ],
        out.path(),
    )?;
    c.wait_for_log("session::record: recording", Duration::from_secs(90))?;
    std::thread::sleep(Duration::from_secs(10));
    c.terminate();
    let done = c.wait(Duration::from_secs(60))?;
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    let result = done.result()?;
    assert_eq!(result["error"], "", "{result}");
    check_recording(&out.path().join("image.mp4"), 9.5..=11.5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the container image: make image-test"]
async fn the_image_serves_a_reservation_and_drains_on_sigterm() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let out = out_dir()?;
    let health_port = free_port();
    let config = format!(
        "redis: {{address: \"{}\"}}\nhealth_port: {health_port}\nlog_level: debug\n",
        redis.address()
    );
    let mut c = Container::run(
        &[
            ("SERVICE_MODE", "1"),
            ("LIVEKIT_RECORDER_CONFIG", &config),
            ("LIVEKIT_RECORDER_X_SERVER", "xorg"),
        ],
        out.path(),
    )?;
    tokio::task::block_in_place(|| wait_health(health_port, "available", Duration::from_secs(90)))?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let id = lk
        .reserve()
        .await?
        .expect("the container acks the reservation");
    lk.start(
        &id,
        url_request(&web.url("/"), Path::new("/out/service.mp4")),
    )
    .await?
    .expect("start succeeds");
    tokio::task::block_in_place(|| {
        c.wait_for_log("session::record: recording", Duration::from_secs(60))
    })?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGTERM drains: the recording goes on until it is ended, then the result is published
    // and the recorder exits 0.
    c.terminate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec = c.rec.as_mut().expect("running");
    assert!(
        rec.child.try_wait()?.is_none(),
        "a draining recorder keeps recording:\n{}",
        rec.stderr()
    );
    lk.end(&id).await?.expect("end succeeds");
    let info = results.next(Duration::from_secs(60)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "", "{info:?}");
    let done = tokio::task::block_in_place(|| c.wait(Duration::from_secs(60)))?;
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    check_recording(&out.path().join("service.mp4"), 4.0..=12.0)
}
