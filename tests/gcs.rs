//! Google Cloud Storage uploads against fake-gcs-server on loopback (`STORAGE_EMULATOR_HOST`, as
//! Google's libraries read it): a 50 MB recording as a resumable upload, an emulator that is
//! down and then comes up (retried), one that stays down (the file is kept and named). One test
//! function, alone in its binary, since the emulator's address is in the process environment.
//!
//! The emulator listens on port 80 (so the test needs root, as CI has): Google's client sends a
//! `Host` header without the port, and fake-gcs-server builds the resumable session's address
//! from it, so on any other port the session would be looked for at port 80.

#[path = "common/storage.rs"]
mod storage;

use std::time::Duration;

use livekit_recorder::config::{FileOutputConfig, GcpConfig};
use livekit_recorder::upload::Uploader;

const BUCKET: &str = "recordings";

fn uploader(budget: Duration) -> Uploader {
    Uploader::from_config(&FileOutputConfig {
        gcp: Some(GcpConfig {
            bucket: BUCKET.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("a valid config")
    .expect("a GCS uploader")
    .with_retry_budget(budget)
}

async fn create_bucket(base: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/storage/v1/b?project=test"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"name": "{BUCKET}"}}"#))
        .send()
        .await
        .expect("the emulator answers");
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

async fn download(base: &str, key: &str) -> Vec<u8> {
    let name: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let r = reqwest::get(format!("{base}/storage/v1/b/{BUCKET}/o/{name}?alt=media"))
        .await
        .expect("the emulator answers");
    assert!(r.status().is_success(), "download {key}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_uploads_resumably_retries_and_keeps_the_file_when_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = 80;
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the GCS emulator needs 127.0.0.1:80 (root, nothing else on it)"
    );
    let base = "http://127.0.0.1".to_owned();
    std::env::set_var("STORAGE_EMULATOR_HOST", "127.0.0.1");

    // 50 MB, as a resumable upload.
    let big = dir.path().join("big.mp4");
    let sum = storage::write_file(&big, 50 * 1024 * 1024, 11).unwrap();
    let server = storage::fake_gcs(port).expect("fake-gcs-server");
    create_bucket(&base).await;
    let url = uploader(Duration::from_secs(10))
        .upload(&big, "rooms/big.mp4")
        .await
        .expect("uploaded");
    assert_eq!(url, format!("gs://{BUCKET}/rooms/big.mp4"));
    assert_eq!(
        storage::sha256(&download(&base, "rooms/big.mp4").await),
        sum,
        "the object's bytes are the file's"
    );
    assert!(
        server.log().contains("uploadType=resumable"),
        "a resumable upload:\n{}",
        server.log()
    );

    let small0 = dir.path().join("small0.mp4");
    storage::write_file(&small0, 3 * 1024 * 1024, 13).unwrap();
    uploader(Duration::from_secs(5))
        .upload(&small0, "small0.mp4")
        .await
        .expect("a small upload");

    // Down, then up again at the same address within the retry budget: retried.
    drop(server);
    let small = dir.path().join("small.mp4");
    let small_sum = storage::write_file(&small, 3 * 1024 * 1024, 12).unwrap();
    let up = uploader(Duration::from_secs(40));
    let upload = tokio::spawn({
        let small = small.clone();
        async move { up.upload(&small, "later.mp4").await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = storage::fake_gcs(port).expect("fake-gcs-server again");
    create_bucket(&base).await;
    let url = upload
        .await
        .unwrap()
        .expect("retried until the emulator was back");
    assert_eq!(url, format!("gs://{BUCKET}/later.mp4"));
    assert_eq!(
        storage::sha256(&download(&base, "later.mp4").await),
        small_sum
    );

    // Down for good: a clear error naming the endpoint, and the file is still there.
    drop(server);
    let err = uploader(Duration::from_secs(2))
        .upload(&small, "never.mp4")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GCS upload of never.mp4"), "{err}");
    assert!(err.contains(&base), "{err}");
    assert!(small.exists(), "the file is kept");
}
