//! Uploads of finished recordings to S3 (or any S3-compatible server), Azure Blob Storage or
//! Google Cloud Storage.
//!
//! Built once from `file_output` ([`Uploader::from_config`]), then [`Uploader::upload`] sends a
//! local MP4 under the request's `filepath` (used verbatim as the object key / blob name) and
//! returns the `download_url` of the protocol (`s3://<bucket>/<key>`, or the blob's address).
//!
//! Large files are streamed in parts, a few at a time: S3 multipart uploads (aborted when they
//! fail) and Azure block lists. Every request is retried on transient failures (connection
//! errors, timeouts, HTTP 5xx/408/429) with exponential backoff for at most
//! [`DEFAULT_RETRY_BUDGET`] (about a minute) since its first attempt; other failures end the
//! upload at once. Credentials are never logged nor shown in errors.

pub mod azure;
pub mod gcs;
pub mod s3;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::FileOutputConfig;

/// The content type of every uploaded file.
pub const CONTENT_TYPE: &str = "video/mp4";
/// How long one request is retried after its first failure before the upload gives up.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(60);
/// How many parts or blocks are in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Why an upload (or building the uploader) failed. The text says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("invalid upload config: {key}: {problem}")]
    Config { key: &'static str, problem: String },
    #[error("upload failed: cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("S3 upload of {key} to bucket {bucket} at {endpoint} failed: {message}")]
    S3 {
        endpoint: String,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("GCS upload of {key} to bucket {bucket} at {endpoint} failed: {message}")]
    Gcs {
        endpoint: String,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("Azure upload of {key} to container {container} at {endpoint} failed: {message}")]
    Azure {
        endpoint: String,
        container: String,
        key: String,
        message: String,
    },
}

/// Where files go.
#[derive(Debug, Clone)]
enum Backend {
    S3(s3::S3Target),
    Azure(azure::AzureBlob),
    Gcs(gcs::GcsTarget),
}

/// Uploads finished recordings to the storage configured in `file_output`.
#[derive(Debug, Clone)]
pub struct Uploader {
    backend: Backend,
    part_size: u64,
    concurrency: usize,
    retry: RetryPolicy,
}

impl Uploader {
    /// `None` when `file_output` has no `s3`, `azblob` nor `gcp` (files stay local). When more
    /// than one is set, S3 wins, then Azure, then GCS, as in the original.
    pub fn from_config(cfg: &FileOutputConfig) -> Result<Option<Self>, UploadError> {
        let (backend, part_size) = if let Some(s3) = &cfg.s3 {
            (Backend::S3(s3::S3Target::new(s3)?), s3::DEFAULT_PART_SIZE)
        } else if let Some(az) = &cfg.azblob {
            (
                Backend::Azure(azure::AzureBlob::new(az)?),
                azure::DEFAULT_BLOCK_SIZE,
            )
        } else if let Some(gcp) = &cfg.gcp {
            (
                Backend::Gcs(gcs::GcsTarget::new(gcp)?),
                s3::DEFAULT_PART_SIZE,
            )
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            backend,
            part_size,
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
        }))
    }

    /// Files larger than this go in parts (S3 multipart) or blocks (Azure) of this size.
    /// Defaults: 8 MiB for S3, 4 MiB for Azure. S3 rejects parts under 5 MiB (but the last).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// How many parts or blocks are sent at once (default [`DEFAULT_CONCURRENCY`]).
    pub fn with_concurrency(mut self, parts: usize) -> Self {
        self.concurrency = parts.max(1);
        self
    }

    /// How long a failing request is retried before the upload gives up
    /// (default [`DEFAULT_RETRY_BUDGET`]).
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry.budget = budget;
        self
    }

    /// `"s3"`, `"azure"` or `"gcs"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::S3(_) => "s3",
            Backend::Azure(_) => "azure",
            Backend::Gcs(_) => "gcs",
        }
    }

    /// The `download_url` a file uploaded as `key` gets.
    pub fn download_url(&self, key: &str) -> String {
        match &self.backend {
            Backend::S3(t) => t.download_url(key),
            Backend::Azure(t) => t.download_url(key),
            Backend::Gcs(t) => t.download_url(key),
        }
    }

    /// Uploads `local` as `key` (verbatim) with content type `video/mp4` and returns its
    /// `download_url`. The local file is left in place.
    pub async fn upload(&self, local: &Path, key: &str) -> Result<String, UploadError> {
        let file_error = |source| UploadError::File {
            path: local.to_owned(),
            source,
        };
        let meta = tokio::fs::metadata(local).await.map_err(file_error)?;
        if !meta.is_file() {
            return Err(file_error(std::io::Error::other("not a regular file")));
        }
        // Fail on an unreadable file here rather than as a request error.
        drop(tokio::fs::File::open(local).await.map_err(file_error)?);
        let size = meta.len();
        let started = Instant::now();
        tracing::info!(
            backend = self.backend(),
            key,
            bytes = size,
            file = %local.display(),
            "upload started"
        );
        let job = Job {
            local,
            key,
            size,
            part_size: self.part_size,
            concurrency: self.concurrency,
            retry: &self.retry,
        };
        let sent = match &self.backend {
            Backend::S3(t) => t.upload(&job).await,
            Backend::Azure(t) => t.upload(&job).await,
            Backend::Gcs(t) => t.upload(&job).await,
        };
        crate::metrics::metrics().upload(self.backend(), size, started.elapsed(), sent.is_ok());
        sent?;
        let url = self.download_url(key);
        tracing::info!(
            backend = self.backend(),
            key,
            bytes = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            download_url = %url,
            "upload finished"
        );
        Ok(url)
    }
}

/// One upload, as the backends see it.
pub(crate) struct Job<'a> {
    pub local: &'a Path,
    pub key: &'a str,
    pub size: u64,
    pub part_size: u64,
    pub concurrency: usize,
    pub retry: &'a RetryPolicy,
}

/// One piece of a file: `number` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
}

/// Splits `size` bytes into parts of `part_size`, growing the part size (to whole MiB) when that
/// would make more than `max_parts` parts. An empty file is one empty part.
pub(crate) fn plan_parts(size: u64, part_size: u64, max_parts: u64) -> Vec<Part> {
    const MIB: u64 = 1024 * 1024;
    let mut part_size = part_size.max(1);
    if size.div_ceil(part_size) > max_parts {
        part_size = size.div_ceil(max_parts).div_ceil(MIB) * MIB;
    }
    let count = size.div_ceil(part_size).max(1);
    (0..count)
        .map(|i| {
            let offset = i * part_size;
            Part {
                number: (i + 1) as u32,
                offset,
                len: part_size.min(size - offset),
            }
        })
        .collect()
}

/// How failing requests are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Retries stop once a request has been failing for this long.
    pub budget: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: DEFAULT_RETRY_BUDGET,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// A failed attempt of one request.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Worth trying again (connection refused or reset, timeout, 5xx, throttling).
    pub transient: bool,
    pub message: String,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }
}

/// How long one attempt of a request sending `bytes` may take before it is given up as hung:
/// a minute, plus the time to send them at 64 KiB/s.
pub(crate) fn attempt_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (64 * 1024))
}

/// Runs `attempt` until it succeeds, fails permanently, or has been failing for the budget.
/// Each attempt has [`attempt_timeout`]`(bytes)`. The error is the last failure's message, with
/// the number of attempts when there were several.
pub(crate) async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    request: &str,
    bytes: u64,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let start = Instant::now();
    let limit = attempt_timeout(bytes);
    let mut delay = policy.first_delay;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let failure = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(failure)) => failure,
            Err(_) => Failure::transient(format!("no answer within {}s", limit.as_secs())),
        };
        let elapsed = start.elapsed();
        if !failure.transient || elapsed >= policy.budget {
            return Err(if attempts == 1 {
                failure.message
            } else {
                format!(
                    "{} (gave up after {attempts} attempts in {:.1}s)",
                    failure.message,
                    elapsed.as_secs_f64()
                )
            });
        }
        let jitter = delay.mul_f64(rand::random_range(0.0..0.25));
        let wait = (delay + jitter).min(policy.budget - elapsed);
        tracing::warn!(
            request,
            attempt = attempts,
            error = %failure.message,
            retry_in_ms = wait.as_millis() as u64,
            "upload request failed, retrying"
        );
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(policy.max_delay);
    }
}

/// `endpoint` as an absolute http(s) base address without a trailing slash; a bare host gets
/// `https://`, as the original's SDKs did.
pub(crate) fn normalize_endpoint(
    endpoint: &str,
    config_key: &'static str,
) -> Result<url::Url, UploadError> {
    let trimmed = endpoint.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let invalid = |problem: String| UploadError::Config {
        key: config_key,
        problem,
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| invalid(format!("`{endpoint}` is not a valid address: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!(
            "`{endpoint}` must be an http:// or https:// address"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(format!(
            "`{endpoint}` must have no query, fragment or credentials"
        )));
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// `err` and its sources, joined with `: ` (deduplicated where a source repeats its parent).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AzureConfig, GcpConfig, S3Config};

    fn s3(endpoint: &str, region: &str) -> S3Config {
        S3Config {
            access_key: "AKIDEXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            endpoint: endpoint.into(),
            region: region.into(),
            bucket: "recordings".into(),
            ..Default::default()
        }
    }

    fn azure(endpoint: &str) -> AzureConfig {
        AzureConfig {
            account_name: "acct".into(),
            account_key: "c2VjcmV0LWtleQ==".into(),
            container_name: "videos".into(),
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    fn uploader(cfg: FileOutputConfig) -> Uploader {
        Uploader::from_config(&cfg).unwrap().expect("an uploader")
    }

    fn config_error(cfg: FileOutputConfig) -> String {
        let e = Uploader::from_config(&cfg).unwrap_err();
        assert!(matches!(e, UploadError::Config { .. }), "{e:?}");
        e.to_string()
    }

    #[tokio::test]
    async fn no_upload_configured_means_none() {
        let cfg = FileOutputConfig {
            local: true,
            ..Default::default()
        };
        assert!(Uploader::from_config(&cfg).unwrap().is_none());
    }

    #[tokio::test]
    async fn s3_download_url_is_the_bucket_and_the_key_as_given() {
        for endpoint in ["", "http://127.0.0.1:9000", "minio.example.com:9000/"] {
            let u = uploader(FileOutputConfig {
                s3: Some(s3(endpoint, "")),
                ..Default::default()
            });
            assert_eq!(u.backend(), "s3");
            assert_eq!(
                u.download_url("room/2022-01-01 rec.mp4"),
                "s3://recordings/room/2022-01-01 rec.mp4"
            );
            assert_eq!(u.download_url("/abs/x.mp4"), "s3://recordings//abs/x.mp4");
        }
    }

    #[tokio::test]
    async fn azure_download_url_uses_the_account_host_or_the_endpoint() {
        let u = uploader(FileOutputConfig {
            azblob: Some(azure("")),
            ..Default::default()
        });
        assert_eq!(u.backend(), "azure");
        // The blob's address, as the upload sends it (each piece percent-encoded).
        assert_eq!(
            u.download_url("room/a b.mp4"),
            "https://acct.blob.core.windows.net/videos/room/a%20b.mp4"
        );
        let u = uploader(FileOutputConfig {
            azblob: Some(azure("http://127.0.0.1:10000/devstoreaccount1/")),
            ..Default::default()
        });
        assert_eq!(
            u.download_url("x.mp4"),
            "http://127.0.0.1:10000/devstoreaccount1/videos/x.mp4"
        );
    }

    #[tokio::test]
    async fn s3_wins_over_azure() {
        let u = uploader(FileOutputConfig {
            s3: Some(s3("", "eu-west-1")),
            azblob: Some(azure("")),
            gcp: Some(GcpConfig {
                bucket: "g".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(u.backend(), "s3");
        assert_eq!(u.part_size, s3::DEFAULT_PART_SIZE);
        let u = uploader(FileOutputConfig {
            azblob: Some(azure("")),
            gcp: Some(GcpConfig {
                bucket: "g".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(u.backend(), "azure");
        assert_eq!(u.part_size, azure::DEFAULT_BLOCK_SIZE);
    }

    #[tokio::test]
    async fn invalid_configs_name_their_key_and_never_show_secrets() {
        let mut c = s3("", "");
        c.bucket.clear();
        let e = config_error(FileOutputConfig {
            s3: Some(c),
            ..Default::default()
        });
        assert!(e.contains("file_output.s3.bucket"), "{e}");

        let mut c = s3("", "");
        c.secret.clear();
        let e = config_error(FileOutputConfig {
            s3: Some(c),
            ..Default::default()
        });
        assert!(e.contains("file_output.s3.secret"), "{e}");

        for endpoint in ["ftp://host", "http://", "http://h:1/?x=1", "http://a b"] {
            let e = config_error(FileOutputConfig {
                s3: Some(s3(endpoint, "")),
                ..Default::default()
            });
            assert!(e.contains("file_output.s3.endpoint"), "{endpoint}: {e}");
            assert!(!e.contains("EXAMPLEKEY"), "{e}");
        }

        let mut c = azure("");
        c.account_key = "not base64!".into();
        let e = config_error(FileOutputConfig {
            azblob: Some(c),
            ..Default::default()
        });
        assert!(e.contains("file_output.azblob.account_key"), "{e}");
        assert!(!e.contains("not base64!"), "{e}");

        for (field, clear) in [
            (
                "file_output.azblob.account_name",
                (|c: &mut AzureConfig| c.account_name.clear()) as fn(&mut AzureConfig),
            ),
            ("file_output.azblob.container_name", |c| {
                c.container_name.clear()
            }),
        ] {
            let mut c = azure("");
            clear(&mut c);
            let e = config_error(FileOutputConfig {
                azblob: Some(c),
                ..Default::default()
            });
            assert!(e.contains(field), "{e}");
        }

        let e = config_error(FileOutputConfig {
            azblob: Some(azure("gopher://x")),
            ..Default::default()
        });
        assert!(e.contains("file_output.azblob.endpoint"), "{e}");

        let e = config_error(FileOutputConfig {
            gcp: Some(GcpConfig {
                bucket: "g".into(),
                credentials_json: r#"{"private_key": "SECRET-KEY-TEXT""#.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(e.contains("file_output.gcp.credentials_json"), "{e}");
        assert!(!e.contains("SECRET-KEY-TEXT"), "{e}");
    }

    #[tokio::test]
    async fn debug_output_has_no_secrets() {
        let u = uploader(FileOutputConfig {
            s3: Some(s3("http://127.0.0.1:9", "")),
            ..Default::default()
        });
        let d = format!("{u:?}");
        assert!(!d.contains("EXAMPLEKEY"), "{d}");
        let u = uploader(FileOutputConfig {
            azblob: Some(azure("")),
            ..Default::default()
        });
        let d = format!("{u:?}");
        assert!(
            !d.contains("c2VjcmV0LWtleQ") && !d.contains("secret-key"),
            "{d}"
        );
    }

    #[test]
    fn endpoints_are_normalized() {
        let n = |e| normalize_endpoint(e, "k").unwrap().to_string();
        assert_eq!(n("http://127.0.0.1:9000"), "http://127.0.0.1:9000/");
        assert_eq!(n("s3.example.com"), "https://s3.example.com/");
        assert_eq!(
            n("http://127.0.0.1:10000/devstoreaccount1/"),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
    }

    #[test]
    fn parts_cover_the_file_exactly() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(
            plan_parts(0, 8 * MIB, 10_000),
            vec![Part {
                number: 1,
                offset: 0,
                len: 0
            }]
        );
        let parts = plan_parts(20_000_000, 5 * MIB, 10_000);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[3].offset, 15 * MIB);
        assert_eq!(parts[3].len, 20_000_000 - 15 * MIB);
        assert_eq!(
            parts.iter().map(|p| p.len).sum::<u64>(),
            20_000_000,
            "{parts:?}"
        );
        assert!(parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.number == i as u32 + 1));
        // Too many parts: the part size grows to whole MiB.
        let parts = plan_parts(100 * MIB + 1, MIB, 10);
        assert!(parts.len() <= 10, "{}", parts.len());
        assert_eq!(parts[0].len, 11 * MIB);
        assert_eq!(parts.iter().map(|p| p.len).sum::<u64>(), 100 * MIB + 1);
    }

    fn quick(budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            budget: Duration::from_millis(budget_ms),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let mut n = 0;
        let r = retry(&quick(5_000), "test", 0, || {
            n += 1;
            let now = n;
            async move {
                if now < 3 {
                    Err(Failure::transient("connection refused"))
                } else {
                    Ok(now)
                }
            }
        })
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let mut n = 0;
        let r: Result<(), _> = retry(&quick(5_000), "test", 0, || {
            n += 1;
            async { Err(Failure::permanent("HTTP 403 AccessDenied")) }
        })
        .await;
        assert_eq!(r, Err("HTTP 403 AccessDenied".to_string()));
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_budget() {
        let start = Instant::now();
        let r: Result<(), _> = retry(&quick(300), "test", 0, || async {
            Err(Failure::transient("connection refused"))
        })
        .await;
        let elapsed = start.elapsed();
        let e = r.unwrap_err();
        assert!(e.starts_with("connection refused (gave up after "), "{e}");
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
}
