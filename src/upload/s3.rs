//! S3 and S3-compatible uploads (aws-sdk-s3 over hyper + rustls/ring).
//!
//! Credentials: the config's `access_key`/`secret` (and `session_token`) when set, else AWS's
//! default chain: environment, web identity (EKS IRSA), EKS Pod Identity and ECS container
//! credentials, then IMDSv2 (an instance profile). `region`: the config's, else `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, else `us-east-1`. `endpoint` empty = AWS's endpoint for the region, set =
//! that server with path-style addressing. The SDK's own retries
//! are off: [`super::retry`] bounds them. Checksums are only sent where S3 requires them, which
//! S3-compatible servers accept as well.

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use futures::{StreamExt, TryStreamExt};

use super::{plan_parts, retry, Failure, Job, Part, UploadError, CONTENT_TYPE};
use crate::config::S3Config;

/// Part size of multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// The region when the config has none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A bucket and a client for it.
#[derive(Clone)]
pub(crate) struct S3Target {
    client: Client,
    bucket: String,
    /// Where requests go, for messages: the configured endpoint or AWS's.
    endpoint: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// An S3 client for `cfg` (bucket not checked), as the uploader uses it: the config's keys or
/// the default chain, the region, path-style addressing when an endpoint is set, no SDK retries.
pub fn client(cfg: &S3Config) -> Result<Client, UploadError> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let region = Region::new(region(cfg));
    let credentials = credentials(cfg, &http, &region)?;
    let mut builder = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        )
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if !cfg.endpoint.trim().is_empty() {
        let endpoint = super::normalize_endpoint(&cfg.endpoint, "file_output.s3.endpoint")?;
        builder = builder
            .endpoint_url(endpoint.as_str().trim_end_matches('/'))
            .force_path_style(true);
    } else if cfg.force_path_style {
        builder = builder.force_path_style(true);
    }
    Ok(Client::from_conf(builder.build()))
}

/// The config's region, else the environment's (as AWS's tools read it), else `us-east-1`.
fn region(cfg: &S3Config) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match cfg.region.trim() {
        "" => env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        r => r.to_owned(),
    }
}

/// The config's keys (both or neither), or AWS's default chain when neither is set.
fn credentials(
    cfg: &S3Config,
    http: &SharedHttpClient,
    region: &Region,
) -> Result<SharedCredentialsProvider, UploadError> {
    let missing = |key| {
        UploadError::Config {
        key,
        problem: "required when the other key is set (set both, or neither to use the AWS default credential chain)".into(),
    }
    };
    match (cfg.access_key.is_empty(), cfg.secret.is_empty()) {
        (false, false) => Ok(SharedCredentialsProvider::new(Credentials::new(
            &cfg.access_key,
            &cfg.secret,
            (!cfg.session_token.is_empty()).then(|| cfg.session_token.clone()),
            None,
            "livekit-recorder config",
        ))),
        (true, false) => Err(missing("file_output.s3.access_key")),
        (false, true) => Err(missing("file_output.s3.secret")),
        (true, true) => Ok(SharedCredentialsProvider::new(DefaultChain {
            config: ProviderConfig::default()
                .with_http_client(http.clone())
                .with_region(Some(region.clone())),
            chain: tokio::sync::OnceCell::new(),
        })),
    }
}

/// AWS's default credential chain, built on first use (building it reads profile files, which
/// is async), then asked each time the client's identity cache needs fresh credentials.
#[derive(Debug)]
struct DefaultChain {
    config: ProviderConfig,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .configure(self.config.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

impl S3Target {
    pub(crate) fn new(cfg: &S3Config) -> Result<Self, UploadError> {
        if cfg.bucket.is_empty() {
            return Err(UploadError::Config {
                key: "file_output.s3.bucket",
                problem: "required when file_output.s3 is set".into(),
            });
        }
        let client = client(cfg)?;
        let endpoint = if cfg.endpoint.trim().is_empty() {
            format!("https://s3.{}.amazonaws.com", region(cfg))
        } else {
            super::normalize_endpoint(&cfg.endpoint, "file_output.s3.endpoint")?
                .as_str()
                .trim_end_matches('/')
                .to_owned()
        };
        Ok(Self {
            client,
            bucket: cfg.bucket.clone(),
            endpoint,
        })
    }

    pub(crate) fn download_url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn error(&self, key: &str, message: String) -> UploadError {
        UploadError::S3 {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message,
        }
    }

    /// Uploads the file, then checks that the stored object has its size: the local file is
    /// only removed after that.
    pub(crate) async fn upload(&self, job: &Job<'_>) -> Result<(), UploadError> {
        if job.size <= job.part_size {
            self.put_object(job).await?;
        } else {
            self.multipart(job).await?;
        }
        self.verify(job).await
    }

    /// HeadObject: the stored object's size must be the file's. (Each part's bytes were already
    /// checked by the server against the checksums sent with them where S3 requires them; an
    /// S3-compatible server may not offer a whole-object checksum to compare.)
    async fn verify(&self, job: &Job<'_>) -> Result<(), UploadError> {
        let head = retry(job.retry, "HeadObject", 0, || async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(job.key)
                .send()
                .await
                .map_err(failure)
        })
        .await
        .map_err(|m| self.error(job.key, format!("HeadObject after upload: {m}")))?;
        let stored = head.content_length().unwrap_or(-1);
        if u64::try_from(stored).ok() != Some(job.size) {
            return Err(self.error(
                job.key,
                format!(
                    "the stored object has {stored} bytes, the file {}: the upload is incomplete",
                    job.size
                ),
            ));
        }
        Ok(())
    }

    async fn put_object(&self, job: &Job<'_>) -> Result<(), UploadError> {
        tracing::debug!(bucket = %self.bucket, key = job.key, bytes = job.size, "S3 PutObject");
        retry(job.retry, "PutObject", job.size, || async {
            let body = file_body(job, 0, job.size).await?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(job.key)
                .content_type(CONTENT_TYPE)
                .content_length(job.size as i64)
                .body(body)
                .send()
                .await
                .map_err(failure)
        })
        .await
        .map(drop)
        .map_err(|m| self.error(job.key, format!("PutObject: {m}")))
    }

    async fn multipart(&self, job: &Job<'_>) -> Result<(), UploadError> {
        let parts = plan_parts(job.size, job.part_size, MAX_PARTS);
        let created = retry(job.retry, "CreateMultipartUpload", 0, || async {
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(job.key)
                .content_type(CONTENT_TYPE)
                .send()
                .await
                .map_err(failure)
        })
        .await
        .map_err(|m| self.error(job.key, format!("CreateMultipartUpload: {m}")))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                self.error(
                    job.key,
                    "CreateMultipartUpload: the response has no upload id".into(),
                )
            })?
            .to_owned();
        tracing::info!(
            bucket = %self.bucket,
            key = job.key,
            upload_id = %upload_id,
            parts = parts.len(),
            part_bytes = parts[0].len,
            "S3 multipart upload started"
        );
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: job.key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let result = self.send_parts(job, &upload_id, &parts).await;
        let result = match result {
            Ok(done) => self.complete(job, &upload_id, done).await,
            Err(e) => Err(e),
        };
        if result.is_ok() {
            guard.upload_id = None;
        } else {
            guard.abort_now().await;
        }
        result
    }

    async fn send_parts(
        &self,
        job: &Job<'_>,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<Vec<CompletedPart>, UploadError> {
        let mut done: Vec<CompletedPart> = futures::stream::iter(parts.iter().copied())
            .map(|part| self.upload_part(job, upload_id, part))
            .buffer_unordered(job.concurrency)
            .try_collect()
            .await?;
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    async fn upload_part(
        &self,
        job: &Job<'_>,
        upload_id: &str,
        part: Part,
    ) -> Result<CompletedPart, UploadError> {
        let request = format!("UploadPart {}", part.number);
        let out = retry(job.retry, &request, part.len, || async {
            let body = file_body(job, part.offset, part.len).await?;
            self.client
                .upload_part()
                .bucket(&self.bucket)
                .key(job.key)
                .upload_id(upload_id)
                .part_number(part.number as i32)
                .content_length(part.len as i64)
                .body(body)
                .send()
                .await
                .map_err(failure)
        })
        .await
        .map_err(|m| self.error(job.key, format!("{request}: {m}")))?;
        tracing::debug!(
            key = job.key,
            part = part.number,
            bytes = part.len,
            "S3 part uploaded"
        );
        Ok(CompletedPart::builder()
            .part_number(part.number as i32)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .build())
    }

    async fn complete(
        &self,
        job: &Job<'_>,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), UploadError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        retry(job.retry, "CompleteMultipartUpload", job.size, || async {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(job.key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
                .await
                .map_err(failure)
        })
        .await
        .map(drop)
        .map_err(|m| self.error(job.key, format!("CompleteMultipartUpload: {m}")))
    }
}

/// `len` bytes of the file from `offset`, streamed.
async fn file_body(job: &Job<'_>, offset: u64, len: u64) -> Result<ByteStream, Failure> {
    ByteStream::read_from()
        .path(job.local)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|e| {
            Failure::permanent(format!(
                "reading {}: {}",
                job.local.display(),
                super::error_chain(&e)
            ))
        })
}

/// Classifies an SDK error: connection problems, timeouts, 5xx and throttling are transient.
fn failure<E>(err: SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            let message = match (code, err.message()) {
                ("", _) => format!("HTTP {status}: {}", super::error_chain(&err)),
                (code, Some(m)) if !m.is_empty() => format!("HTTP {status} {code}: {m}"),
                (code, _) => format!("HTTP {status} {code}"),
            };
            let transient = status >= 500
                || status == 408
                || status == 429
                || matches!(
                    code,
                    "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable"
                );
            Failure { transient, message }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::transient(super::error_chain(&err))
        }
        SdkError::DispatchFailure(dispatch) => {
            let message = super::error_chain(&err);
            if dispatch.is_user() {
                Failure::permanent(message)
            } else {
                Failure::transient(message)
            }
        }
        _ => Failure::permanent(super::error_chain(&err)),
    }
}

/// Aborts a multipart upload that did not complete, so its parts are not stored (and billed)
/// forever: at once on failure, or in the background when the upload future is dropped.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortOnDrop {
    async fn abort_now(&mut self) {
        if let Some(id) = self.upload_id.take() {
            abort(&self.client, &self.bucket, &self.key, &id).await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            runtime.spawn(async move { abort(&client, &bucket, &key, &id).await });
        }
    }
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(bucket, key, upload_id, "S3 multipart upload aborted"),
        Err(e) => tracing::warn!(
            bucket,
            key,
            upload_id,
            error = %super::error_chain(&e),
            "could not abort S3 multipart upload; its parts stay until a lifecycle rule removes them"
        ),
    }
}
