//! Recordings delivered to storage, end to end: the real binary records a local page and uploads
//! the finished file to an S3 API server (moto) or Azurite through their `endpoint` settings.
//! Run one at a time.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::storage;
use common::*;
use livekit_recorder::config::{AzureConfig, S3Config};
use livekit_recorder::upload::azure::AzureBlob;
use livekit_recorder::upload::s3;
use nix::sys::signal::Signal;

/// Records the demo page for `secs` seconds with `config`, to object key `key`.
fn record(config: &str, key: &str, secs: u64) -> Result<(Finished, String)> {
    let web = WebServer::start(&[])?;
    let req = format!(
        r#"{{"url": "{}", "filepath": "{key}", "options": {{"width": 640, "height": 360}}}}"#,
        web.url("/")
    );
    let mut rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", config),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    rec.wait_for_log("recording", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(secs));
    rec.signal(Signal::SIGTERM);
    let done = rec.wait(Duration::from_secs(120))?;
    assert_nothing_left(&tag);
    Ok((done, tag))
}

fn check_playable(bytes: &[u8], min_secs: f64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("downloaded.mp4");
    std::fs::write(&path, bytes)?;
    let p = probe(&path)?;
    assert_eq!(
        (p.video_codec.as_str(), p.audio_codec.as_str()),
        ("h264", "aac")
    );
    assert!(p.video_duration >= min_secs, "{} s", p.video_duration);
    assert_eq!(decode_errors(&path)?, "");
    Ok(())
}

/// A moto S3 server with an empty `recordings` bucket, and a client for it (the recorder's
/// config names the same keys: `testing` / `testing-secret`, us-east-1).
async fn recordings_bucket() -> Result<(storage::Server, aws_sdk_s3::Client)> {
    let moto = storage::moto()?;
    let cfg = S3Config {
        access_key: "testing".into(),
        secret: "testing-secret".into(),
        endpoint: moto.url(),
        region: "us-east-1".into(),
        bucket: "recordings".into(),
        ..Default::default()
    };
    let client = s3::client(&cfg)?;
    client.create_bucket().bucket("recordings").send().await?;
    Ok((moto, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_lands_in_s3_at_the_requested_key() -> Result<()> {
    let (moto, client) = recordings_bucket().await?;
    let work = tempfile::tempdir()?;
    let config = format!(
        "file_output:\n  work_dir: {}\n  s3: {{access_key: testing, secret: testing-secret, region: us-east-1, bucket: recordings, endpoint: \"{}\"}}",
        work.path().display(),
        moto.url()
    );
    let key = "rooms/2026/room one.mp4";
    let (done, _) = tokio::task::block_in_place(|| record(&config, key, 4))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let result = done.result()?;
    assert_eq!(result["download_url"], format!("s3://recordings/{key}"));
    assert!(
        result.get("filepath").is_none(),
        "the uploaded local file is gone: {result}"
    );
    assert_eq!(
        std::fs::read_dir(work.path())?.count(),
        0,
        "the work file is removed after a confirmed upload"
    );
    let obj = client
        .get_object()
        .bucket("recordings")
        .key(key)
        .send()
        .await?;
    assert_eq!(obj.content_type(), Some("video/mp4"));
    let body = obj.body.collect().await?.into_bytes();
    check_playable(&body, 3.0)?;
    Ok(())
}

/// Regression against the original: `local: true` with a storage writes the request's filepath,
/// uploads it, and keeps it (the original uploads whenever a storage is configured; `local` only
/// decides where the file is written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_s3_uploads_and_keeps_the_file() -> Result<()> {
    let (moto, client) = recordings_bucket().await?;
    let work = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let local = out.path().join("rooms/kept.mp4");
    let config = format!(
        "file_output:\n  local: true\n  work_dir: {}\n  s3: {{access_key: testing, secret: testing-secret, region: us-east-1, bucket: recordings, endpoint: \"{}\"}}",
        work.path().display(),
        moto.url()
    );
    let filepath = local.to_str().unwrap().to_owned();
    let (done, _) = tokio::task::block_in_place(|| record(&config, &filepath, 4))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let result = done.result()?;
    assert_eq!(result["error"], "", "{result}");
    // The object key is the filepath (its leading `/` dropped, as the original's S3 client did).
    let key = filepath.trim_start_matches('/');
    assert_eq!(result["download_url"], format!("s3://recordings/{key}"));
    assert_eq!(
        result["filepath"], filepath,
        "the local file is reported: {result}"
    );
    assert!(local.exists(), "the local file is kept after the upload");
    assert_eq!(
        std::fs::read_dir(work.path())?.count(),
        0,
        "nothing in the work dir: the file was written where local says"
    );
    let obj = client
        .get_object()
        .bucket("recordings")
        .key(key)
        .send()
        .await?;
    let body = obj.body.collect().await?.into_bytes();
    assert_eq!(
        body.as_ref(),
        std::fs::read(&local)?.as_slice(),
        "the upload is the kept file"
    );
    check_playable(&body, 3.0)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_lands_in_azurite() -> Result<()> {
    let azurite = storage::azurite()?;
    let endpoint = format!("{}/{}", azurite.url(), storage::AZURITE_ACCOUNT);
    let cfg = AzureConfig {
        account_name: storage::AZURITE_ACCOUNT.into(),
        account_key: storage::AZURITE_KEY.into(),
        container_name: "recordings".into(),
        endpoint: endpoint.clone(),
        ..Default::default()
    };
    let blob = AzureBlob::new(&cfg)?;
    blob.create_container().await?;
    let config = format!(
        "file_output:\n  azblob: {{account_name: {}, account_key: \"{}\", container_name: recordings, endpoint: \"{endpoint}\"}}",
        storage::AZURITE_ACCOUNT,
        storage::AZURITE_KEY
    );
    let key = "rooms/room.mp4";
    let (done, _) = tokio::task::block_in_place(|| record(&config, key, 4))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.result()?["download_url"],
        format!("{endpoint}/recordings/{key}")
    );
    let (bytes, content_type) = blob.get_blob(key).await?;
    assert_eq!(content_type.as_deref(), Some("video/mp4"));
    check_playable(&bytes, 3.0)?;
    Ok(())
}

#[test]
fn an_endpoint_that_is_down_fails_and_names_the_kept_file() -> Result<()> {
    let port = storage::closed_port()?;
    let work = tempfile::tempdir()?;
    let config = format!(
        "file_output:\n  work_dir: {}\n  s3: {{access_key: a, secret: b, region: us-east-1, bucket: recordings, endpoint: \"http://127.0.0.1:{port}\"}}",
        work.path().display()
    );
    let (done, _) = record(&config, "lost/x.mp4", 3)?;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let result = done.result()?;
    let error = result["error"].as_str().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    let kept = result["filepath"]
        .as_str()
        .expect("the kept file is reported");
    assert!(
        error.ends_with(&format!("the recording is kept at {kept}")),
        "{error}"
    );
    let kept = std::path::Path::new(kept);
    assert!(kept.starts_with(work.path()), "{}", kept.display());
    assert!(probe(kept)?.video_duration >= 2.0, "the kept file plays");
    Ok(())
}

#[test]
fn rtmp_to_two_live_urls_and_a_dead_one_delivers_both_live_streams() -> Result<()> {
    let nginx = common::rtmp::NginxRtmp::start()?;
    // A fourth URL whose server goes away mid-stream.
    let dropping = common::rtmp::NginxRtmp::start()?;
    let dead_port = storage::closed_port()?;
    let dead = format!("rtmp://127.0.0.1:{dead_port}/live/c");
    let web = WebServer::start(&[])?;
    let req = format!(
        r#"{{"url": "{}", "rtmp": {{"urls": ["{}", "{}", "{dead}", "{}"]}}, "options": {{"width": 640, "height": 360}}}}"#,
        web.url("/"),
        nginx.url("a"),
        nginx.url("b"),
        dropping.url("d"),
    );
    let mut rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", "log_level: debug"),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    rec.wait_for_log("recording", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(3));
    let dropped_port = dropping.port;
    drop(dropping);
    std::thread::sleep(Duration::from_secs(4));
    rec.signal(Signal::SIGTERM);
    let done = rec.wait(Duration::from_secs(30))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    let result = done.result()?;
    let urls: Vec<&str> = result["rtmp"]
        .as_array()
        .expect("rtmp results")
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(urls.len(), 4, "{result}");
    // Printed without their stream keys.
    assert_eq!(
        urls[0],
        format!("rtmp://127.0.0.1:{dead_port}/live/{{stream_key}}"),
        "the dead URL ends first: {result}"
    );
    assert_eq!(
        urls[1],
        format!("rtmp://127.0.0.1:{dropped_port}/live/{{stream_key}}"),
        "then the dropped one: {result}"
    );
    // The stream keys stay out of the log.
    assert!(!done.stderr.contains("/live/a"), "stream key logged");
    std::thread::sleep(Duration::from_millis(500));
    for stream in ["a", "b"] {
        let p = probe(&nginx.recording(stream))?;
        assert_eq!(
            (p.video_codec.as_str(), p.audio_codec.as_str()),
            ("h264", "aac"),
            "{stream}"
        );
        assert!(
            p.format_duration >= 5.0,
            "{stream}: {} s",
            p.format_duration
        );
        assert_eq!((p.width, p.height), (640, 360));
    }
    assert!(!nginx.recording("c").exists());
    Ok(())
}
