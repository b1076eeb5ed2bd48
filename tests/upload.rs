//! Uploads against real servers on loopback: moto for S3, Azurite for Azure Blob Storage.

#[path = "common/storage.rs"]
mod storage;

use std::time::{Duration, Instant};

use livekit_recorder::config::{AzureConfig, FileOutputConfig, S3Config};
use livekit_recorder::upload::azure::AzureBlob;
use livekit_recorder::upload::{s3, UploadError, Uploader};

const MIB: u64 = 1024 * 1024;
const BUCKET: &str = "recordings";

fn s3_config(endpoint: &str) -> S3Config {
    S3Config {
        access_key: "testing".into(),
        secret: "testing-secret".into(),
        endpoint: endpoint.into(),
        region: String::new(),
        bucket: BUCKET.into(),
        ..Default::default()
    }
}

fn s3_uploader(cfg: &S3Config) -> Uploader {
    Uploader::from_config(&FileOutputConfig {
        s3: Some(cfg.clone()),
        ..Default::default()
    })
    .expect("a valid config")
    .expect("an S3 uploader")
}

/// A moto server with the bucket made.
async fn moto_with_bucket() -> (storage::Server, S3Config, aws_sdk_s3::Client) {
    let server = storage::moto().expect("moto_server");
    let cfg = s3_config(&server.url());
    let client = s3::client(&cfg).expect("an S3 client");
    client
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    (server, cfg, client)
}

/// Downloads an object: its SHA-256, content type and ETag.
async fn s3_get(client: &aws_sdk_s3::Client, key: &str) -> ([u8; 32], String, String) {
    let out = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("get object");
    let content_type = out.content_type().unwrap_or_default().to_owned();
    let etag = out.e_tag().unwrap_or_default().to_owned();
    let body = out.body.collect().await.expect("object body").into_bytes();
    (storage::sha256(&body), content_type, etag)
}

async fn open_multipart_uploads(client: &aws_sdk_s3::Client) -> usize {
    client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list multipart uploads")
        .uploads()
        .len()
}

#[tokio::test]
async fn s3_small_file_is_one_put() {
    let (_server, cfg, client) = moto_with_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.mp4");
    let sha = storage::write_file(&path, 300_000, 1).unwrap();

    let key = "room one/2022-05-01T10:00:00 small.mp4";
    let url = s3_uploader(&cfg).upload(&path, key).await.unwrap();
    assert_eq!(url, format!("s3://{BUCKET}/{key}"));

    let (got, content_type, etag) = s3_get(&client, key).await;
    assert_eq!(got, sha, "downloaded bytes differ");
    assert_eq!(content_type, "video/mp4");
    assert!(!etag.contains('-'), "a single put has a plain ETag: {etag}");
    assert!(path.exists(), "the local file is kept");
}

#[tokio::test]
async fn s3_large_file_is_a_parallel_multipart_upload() {
    let (_server, cfg, client) = moto_with_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.mp4");
    let size = 20_000_000;
    let sha = storage::write_file(&path, size, 2).unwrap();

    let key = "rooms/large.mp4";
    let uploader = s3_uploader(&cfg).with_part_size(5 * MIB);
    let url = uploader.upload(&path, key).await.unwrap();
    assert_eq!(url, "s3://recordings/rooms/large.mp4");

    let (got, content_type, etag) = s3_get(&client, key).await;
    assert_eq!(got, sha, "downloaded bytes differ");
    assert_eq!(content_type, "video/mp4");
    assert!(
        etag.trim_matches('"').ends_with("-4"),
        "20 MB in 5 MiB parts is a 4-part upload: ETag {etag}"
    );
    assert_eq!(open_multipart_uploads(&client).await, 0);
}

#[tokio::test]
async fn s3_failed_multipart_upload_is_aborted() {
    let (_server, cfg, client) = moto_with_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parts.mp4");
    storage::write_file(&path, 3 * MIB as usize, 3).unwrap();

    // Parts under S3's 5 MiB minimum: the completion is refused (not a transient failure).
    let uploader = s3_uploader(&cfg)
        .with_part_size(MIB)
        .with_retry_budget(Duration::from_secs(30));
    let start = Instant::now();
    let e = uploader.upload(&path, "too-small.mp4").await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, UploadError::S3 { .. }), "{e:?}");
    assert!(text.contains("CompleteMultipartUpload"), "{text}");
    assert!(text.contains("EntityTooSmall"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a 4xx is not retried"
    );
    assert_eq!(
        open_multipart_uploads(&client).await,
        0,
        "the upload was aborted"
    );
}

#[tokio::test]
async fn s3_missing_bucket_fails_at_once() {
    let (server, _cfg, _client) = moto_with_bucket().await;
    let mut cfg = s3_config(&server.url());
    cfg.bucket = "no-such-bucket".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mp4");
    storage::write_file(&path, 1000, 4).unwrap();
    let start = Instant::now();
    let e = Uploader::from_config(&FileOutputConfig {
        s3: Some(cfg),
        ..Default::default()
    })
    .unwrap()
    .unwrap()
    .upload(&path, "a.mp4")
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no-such-bucket") && e.contains("NoSuchBucket"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{e}");
}

#[tokio::test]
async fn s3_endpoint_down_fails_after_the_retry_budget() {
    let port = storage::closed_port().unwrap();
    let cfg = s3_config(&format!("http://127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mp4");
    storage::write_file(&path, 1000, 5).unwrap();

    let budget = Duration::from_secs(2);
    let uploader = s3_uploader(&cfg).with_retry_budget(budget);
    let start = Instant::now();
    let e = uploader.upload(&path, "rec/a.mp4").await.unwrap_err();
    let elapsed = start.elapsed();
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, UploadError::S3 { .. }), "{e:?}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "names the endpoint: {text}"
    );
    assert!(text.contains(BUCKET), "names the bucket: {text}");
    assert!(text.contains("rec/a.mp4"), "names the key: {text}");
    assert!(text.contains("attempts"), "was retried: {text}");
    assert!(!text.contains("testing-secret"), "{text}");
    assert!(elapsed >= budget, "gave up before the budget: {elapsed:?}");
    assert!(elapsed < budget + Duration::from_secs(10), "{elapsed:?}");
}

fn azure_config(server: &storage::Server, container: &str) -> AzureConfig {
    AzureConfig {
        account_name: storage::AZURITE_ACCOUNT.into(),
        account_key: storage::AZURITE_KEY.into(),
        container_name: container.into(),
        endpoint: format!("{}/{}", server.url(), storage::AZURITE_ACCOUNT),
        ..Default::default()
    }
}

#[tokio::test]
async fn azure_uploads_blocks_and_small_files() {
    let server = storage::azurite().expect("azurite");
    let cfg = azure_config(&server, "videos");
    let blob = AzureBlob::new(&cfg).unwrap();
    blob.create_container().await.expect("create container");
    blob.create_container()
        .await
        .expect("an existing container is fine");
    let uploader = storage::azure_uploader(&cfg);
    let dir = tempfile::tempdir().unwrap();

    // ~10 MB: three 4 MiB blocks, then the block list.
    let large = dir.path().join("large.mp4");
    let sha = storage::write_file(&large, 10_000_000, 6).unwrap();
    let key = "room one/2022-05-01 large.mp4";
    let url = uploader.upload(&large, key).await.unwrap();
    assert_eq!(
        url,
        format!(
            // Percent-encoded: the URL names exactly the blob written.
            "http://127.0.0.1:{}/devstoreaccount1/videos/room%20one/2022-05-01%20large.mp4",
            server.port
        )
    );
    let (body, content_type) = blob.get_blob(key).await.unwrap();
    assert_eq!(body.len(), 10_000_000);
    assert_eq!(storage::sha256(&body), sha, "downloaded bytes differ");
    assert_eq!(content_type.as_deref(), Some("video/mp4"));

    // Smaller than a block: one Put Blob.
    let small = dir.path().join("small.mp4");
    let sha = storage::write_file(&small, 100_000, 7).unwrap();
    uploader.upload(&small, "small.mp4").await.unwrap();
    let (body, content_type) = blob.get_blob("small.mp4").await.unwrap();
    assert_eq!(storage::sha256(&body), sha);
    assert_eq!(content_type.as_deref(), Some("video/mp4"));

    // Smaller blocks, more of them than the concurrency.
    let url = uploader
        .clone()
        .with_part_size(MIB)
        .upload(&large, "many-blocks.mp4")
        .await
        .unwrap();
    assert!(url.ends_with("/videos/many-blocks.mp4"), "{url}");
    let (body, _) = blob.get_blob("many-blocks.mp4").await.unwrap();
    assert_eq!(body.len(), 10_000_000);
}

#[tokio::test]
async fn azure_uploads_with_a_sas_token_instead_of_the_key() {
    let server = storage::azurite().expect("azurite");
    let keyed = azure_config(&server, "videos");
    let blob = AzureBlob::new(&keyed).unwrap();
    blob.create_container().await.expect("create container");
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large.mp4");
    let sha = storage::write_file(&large, 10_000_000, 9).unwrap();

    // A container SAS as an operator would issue it (minted by Microsoft's SDK, not by us).
    let sas = storage::azure_container_sas("videos", "rcw").expect("a SAS");
    let cfg = AzureConfig {
        account_key: String::new(),
        sas_token: format!("?{sas}"),
        ..keyed.clone()
    };
    let url = storage::azure_uploader(&cfg)
        .upload(&large, "rooms/sas.mp4")
        .await
        .unwrap();
    assert!(url.ends_with("/videos/rooms/sas.mp4"), "{url}");
    assert!(!url.contains('?'), "no SAS in the download URL: {url}");
    let (body, content_type) = blob.get_blob("rooms/sas.mp4").await.unwrap();
    assert_eq!(storage::sha256(&body), sha, "downloaded bytes differ");
    assert_eq!(content_type.as_deref(), Some("video/mp4"));

    // Without read the size cannot be checked: the upload is not reported done, and the error
    // says why without showing the signature.
    let write_only = storage::azure_container_sas("videos", "cw").expect("a SAS");
    let signature: String = url::form_urlencoded::parse(write_only.as_bytes())
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .expect("a signature");
    let e = storage::azure_uploader(&AzureConfig {
        account_key: String::new(),
        sas_token: write_only.clone(),
        ..keyed
    })
    .upload(&large, "rooms/write-only.mp4")
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("Get Blob Properties") && e.contains("HTTP 403"),
        "{e}"
    );
    assert!(!e.contains(&signature) && !e.contains(&write_only), "{e}");
}

#[tokio::test]
async fn azure_errors_name_the_endpoint_and_are_retried_only_when_transient() {
    let server = storage::azurite().expect("azurite");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mp4");
    storage::write_file(&path, 1000, 8).unwrap();

    // A container that does not exist: a 404, not retried.
    let cfg = azure_config(&server, "missing");
    let start = Instant::now();
    let e = storage::azure_uploader(&cfg)
        .upload(&path, "a.mp4")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ContainerNotFound") && e.contains("missing"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{e}");

    // A wrong key: refused, and the key is not shown.
    let mut cfg = azure_config(&server, "videos");
    AzureBlob::new(&cfg)
        .unwrap()
        .create_container()
        .await
        .unwrap();
    cfg.account_key = "d3Jvbmcta2V5".into();
    let e = storage::azure_uploader(&cfg)
        .upload(&path, "a.mp4")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 403"), "{e}");
    assert!(
        !e.contains("d3Jvbmcta2V5") && !e.contains(storage::AZURITE_KEY),
        "{e}"
    );

    // Nothing listening: retried for the budget, then an error naming where.
    let port = storage::closed_port().unwrap();
    let cfg = AzureConfig {
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        ..azure_config(&server, "videos")
    };
    let budget = Duration::from_secs(2);
    let start = Instant::now();
    let e = storage::azure_uploader(&cfg)
        .with_retry_budget(budget)
        .upload(&path, "rec/a.mp4")
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, UploadError::Azure { .. }), "{e:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.contains("videos") && text.contains("rec/a.mp4"),
        "{text}"
    );
    assert!(text.contains("attempts"), "was retried: {text}");
    assert!(elapsed >= budget, "{elapsed:?}");
    assert!(elapsed < budget + Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn unreadable_files_are_reported_as_such() {
    let cfg = s3_config("http://127.0.0.1:9");
    let e = s3_uploader(&cfg)
        .upload(std::path::Path::new("/nonexistent/x.mp4"), "x.mp4")
        .await
        .unwrap_err();
    assert!(matches!(e, UploadError::File { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/x.mp4"), "{e}");
}

/// A blob store that takes every upload and then reports the blob shorter than what was sent: a
/// fault no emulator shows.
fn short_blob_store() -> u16 {
    storage::stand_in(|request| {
        let common = "x-ms-request-id: 1\r\nx-ms-version: 2026-04-06\r\nETag: \"0x1\"\r\n\
                      Last-Modified: Wed, 25 Nov 2026 20:00:00 GMT\r\nConnection: close\r\n";
        if request.line.starts_with("HEAD ") {
            format!("HTTP/1.1 200 OK\r\n{common}x-ms-blob-type: BlockBlob\r\nContent-Type: video/mp4\r\nContent-Length: 7\r\n\r\n")
        } else {
            format!("HTTP/1.1 201 Created\r\n{common}Content-Length: 0\r\n\r\n")
        }
    })
    .expect("a stand-in server")
}

#[tokio::test]
async fn a_stored_blob_shorter_than_the_file_is_an_error() {
    let port = short_blob_store();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mp4");
    storage::write_file(&path, 1000, 13).unwrap();
    let cfg = AzureConfig {
        account_name: storage::AZURITE_ACCOUNT.into(),
        account_key: storage::AZURITE_KEY.into(),
        container_name: "videos".into(),
        endpoint: format!("http://127.0.0.1:{port}/{}", storage::AZURITE_ACCOUNT),
        ..Default::default()
    };
    let e = storage::azure_uploader(&cfg)
        .upload(&path, "short.mp4")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the stored blob has 7 bytes, the file 1000: the upload is incomplete"),
        "{e}"
    );
    assert!(path.exists(), "the file stays");
}
