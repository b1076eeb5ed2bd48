//! S3 uploads with no keys in the config: AWS's default credential chain (environment, then web
//! identity as EKS IRSA sets it up) against moto on loopback, STS included. One test function,
//! alone in its binary, since the chain reads the process environment.

#[path = "common/storage.rs"]
mod storage;

use std::time::Duration;

use livekit_recorder::config::{FileOutputConfig, S3Config};
use livekit_recorder::upload::{s3, Uploader};

const BUCKET: &str = "recordings";

fn keyless(endpoint: &str) -> S3Config {
    S3Config {
        endpoint: endpoint.into(),
        bucket: BUCKET.into(),
        ..Default::default()
    }
}

async fn upload(cfg: &S3Config, path: &std::path::Path, key: &str) -> Result<String, String> {
    Uploader::from_config(&FileOutputConfig {
        s3: Some(cfg.clone()),
        ..Default::default()
    })
    .expect("a valid config")
    .expect("an S3 uploader")
    .with_retry_budget(Duration::from_secs(2))
    .upload(path, key)
    .await
    .map_err(|e| e.to_string())
}

/// Requests moto answered at `/` with POST: STS calls (S3 requests name a bucket).
fn sts_calls(server: &storage::Server) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("\"POST / HTTP"))
        .count()
}

#[tokio::test]
async fn s3_without_keys_takes_credentials_from_the_environment_then_web_identity() {
    let home = tempfile::tempdir().unwrap();
    // Nothing from this machine: no profile files, never the instance metadata service.
    for (k, v) in [
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        (
            "AWS_CONFIG_FILE",
            home.path().join("config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials").display().to_string(),
        ),
    ] {
        std::env::set_var(k, v);
    }
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        std::env::remove_var(k);
    }
    let server = storage::moto().expect("moto_server");
    let keyed = S3Config {
        access_key: "setup".into(),
        secret: "setup-secret".into(),
        ..keyless(&server.url())
    };
    s3::client(&keyed)
        .unwrap()
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let file = home.path().join("rec.mp4");
    let sum = storage::write_file(&file, 3 * 1024 * 1024, 7).unwrap();
    let cfg = keyless(&server.url());

    // Keys in the config must come in pairs.
    let half = S3Config {
        access_key: "only-this".into(),
        ..cfg.clone()
    };
    let Err(err) = Uploader::from_config(&FileOutputConfig {
        s3: Some(half),
        ..Default::default()
    }) else {
        panic!("half a key pair is refused");
    };
    assert!(err.to_string().contains("file_output.s3.secret"), "{err}");

    // No credentials anywhere: a clear error, nothing uploaded.
    let err = upload(&cfg, &file, "none.mp4").await.unwrap_err();
    assert!(err.to_lowercase().contains("credential"), "{err}");

    // The environment's keys (and region).
    std::env::set_var("AWS_ACCESS_KEY_ID", "env-key");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret");
    std::env::set_var("AWS_REGION", "eu-west-1");
    let url = upload(&cfg, &file, "env.mp4").await.expect("uploaded");
    assert_eq!(url, format!("s3://{BUCKET}/env.mp4"));
    assert_eq!(sts_calls(&server), 0, "environment keys need no STS");

    // Web identity, as EKS IRSA sets it up: a token file and a role; STS answers on loopback.
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let token = home.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl").unwrap();
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/recorder");
    std::env::set_var("AWS_ROLE_SESSION_NAME", "recorder-test");
    std::env::set_var("AWS_ENDPOINT_URL_STS", server.url());
    std::env::set_var("AWS_ENDPOINT_URL", server.url());
    let url = upload(&cfg, &file, "irsa.mp4").await.expect("uploaded");
    assert_eq!(url, format!("s3://{BUCKET}/irsa.mp4"));
    assert!(
        sts_calls(&server) >= 1,
        "AssumeRoleWithWebIdentity was called"
    );

    // Both objects hold the file's bytes.
    for key in ["env.mp4", "irsa.mp4"] {
        let body = s3::client(&keyed)
            .unwrap()
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("get object")
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(storage::sha256(&body), sum, "{key}");
    }
}
