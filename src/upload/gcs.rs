//! Google Cloud Storage uploads, through Google's `google-cloud-storage` client.
//!
//! Credentials: `credentials_json` (a service account key, the original recorder's key) when set,
//! else Application Default Credentials (GKE Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS`,
//! the metadata server). `STORAGE_EMULATOR_HOST` set (as Google's libraries read it): that
//! emulator, anonymously. `endpoint` set: that endpoint (a private one), with the credentials
//! above. Every file goes up as a resumable upload, streamed from disk. The client's own
//! retries are off: [`super::retry`] bounds them as for S3 and Azure, and a retried upload starts
//! over. The stored object's size (and CRC32C, which the client checks) is verified before the
//! file may be removed.

use google_cloud_auth::credentials::{self, anonymous, service_account, Credentials};
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_storage::client::Storage;
use tokio::sync::OnceCell;

use super::{retry, Failure, Job, UploadError, CONTENT_TYPE};
use crate::config::GcpConfig;

/// The environment variable Google's libraries read for an emulator's address.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// A bucket and a client for it (built on first use: building it is async).
#[derive(Clone)]
pub(crate) struct GcsTarget {
    bucket: String,
    /// Where requests go, for messages.
    endpoint: String,
    /// `None`: Google's endpoint.
    endpoint_override: Option<String>,
    credentials: Credentials,
    client: std::sync::Arc<OnceCell<Storage>>,
}

impl std::fmt::Debug for GcsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsTarget")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GcsTarget {
    pub(crate) fn new(cfg: &GcpConfig) -> Result<Self, UploadError> {
        Self::with_emulator(cfg, std::env::var(EMULATOR_ENV).ok())
    }

    /// As [`Self::new`], with the emulator's address given (`STORAGE_EMULATOR_HOST`'s value).
    pub(crate) fn with_emulator(
        cfg: &GcpConfig,
        emulator: Option<String>,
    ) -> Result<Self, UploadError> {
        if cfg.bucket.trim().is_empty() {
            return Err(UploadError::Config {
                key: "file_output.gcp.bucket",
                problem: "required when file_output.gcp is set".into(),
            });
        }
        install_crypto_provider();
        let emulator = emulator.filter(|h| !h.trim().is_empty()).map(|h| {
            if h.contains("://") {
                h
            } else {
                format!("http://{h}")
            }
        });
        let endpoint_override = match (&emulator, cfg.endpoint.trim()) {
            (Some(e), _) => Some(e.clone()),
            (None, "") => None,
            (None, e) => Some(
                super::normalize_endpoint(e, "file_output.gcp.endpoint")?
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned(),
            ),
        };
        let credentials = if emulator.is_some() {
            anonymous::Builder::new().build()
        } else {
            credentials_for(cfg)?
        };
        Ok(Self {
            bucket: cfg.bucket.clone(),
            endpoint: endpoint_override
                .clone()
                .unwrap_or_else(|| "https://storage.googleapis.com".into()),
            endpoint_override,
            credentials,
            client: std::sync::Arc::new(OnceCell::new()),
        })
    }

    pub(crate) fn download_url(&self, key: &str) -> String {
        format!("gs://{}/{}", self.bucket, key)
    }

    fn error(&self, key: &str, message: String) -> UploadError {
        UploadError::Gcs {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message,
        }
    }

    async fn client(&self) -> Result<&Storage, String> {
        self.client
            .get_or_try_init(|| async {
                // Always a resumable upload: one request more for a small file, and the one
                // path every server takes (fake-gcs-server, for one, stores single-shot
                // multipart uploads from this client wrongly: its CRC32C check fails).
                let mut builder = Storage::builder()
                    .with_credentials(self.credentials.clone())
                    .with_retry_policy(NeverRetry)
                    .with_resumable_upload_threshold(0_usize);
                if let Some(e) = &self.endpoint_override {
                    builder = builder.with_endpoint(e.clone());
                }
                builder.build().await.map_err(|e| e.to_string())
            })
            .await
    }

    /// Uploads the file (a resumable upload) and checks the stored object's size.
    pub(crate) async fn upload(&self, job: &Job<'_>) -> Result<(), UploadError> {
        let storage = self
            .client()
            .await
            .map_err(|m| self.error(job.key, format!("client: {m}")))?;
        let bucket = format!("projects/_/buckets/{}", self.bucket);
        tracing::debug!(bucket = %self.bucket, key = job.key, bytes = job.size, "GCS upload");
        let object = retry(job.retry, "upload", job.size, || async {
            let file = tokio::fs::File::open(job.local)
                .await
                .map_err(|e| Failure::permanent(format!("cannot read the file: {e}")))?;
            storage
                .write_object(&bucket, job.key, file)
                .set_content_type(CONTENT_TYPE)
                .send_unbuffered()
                .await
                .map_err(|e| failure(&e))
        })
        .await
        .map_err(|m| self.error(job.key, m))?;
        if u64::try_from(object.size).ok() != Some(job.size) {
            return Err(self.error(
                job.key,
                format!(
                    "the stored object has {} bytes, the file {}: the upload is incomplete",
                    object.size, job.size
                ),
            ));
        }
        Ok(())
    }
}

/// The key in the config, or Application Default Credentials.
fn credentials_for(cfg: &GcpConfig) -> Result<Credentials, UploadError> {
    let invalid = |problem: String| UploadError::Config {
        key: "file_output.gcp.credentials_json",
        problem,
    };
    if cfg.credentials_json.trim().is_empty() {
        return credentials::Builder::default()
            .build()
            .map_err(|e| UploadError::Config {
                key: "file_output.gcp",
                problem: format!("no credentials_json and no Application Default Credentials: {e}"),
            });
    }
    let key: serde_json::Value = serde_json::from_str(&cfg.credentials_json)
        .map_err(|e| invalid(format!("not JSON: {e}")))?;
    service_account::Builder::new(key)
        .build()
        .map_err(|e| invalid(format!("not a service account key: {e}")))
}

/// Worth retrying: no answer, a connection or I/O error, a timeout, 5xx, 408, 429.
fn failure(e: &google_cloud_storage::Error) -> Failure {
    let message = super::error_chain(e);
    let transient = e.is_transient_and_before_rpc()
        || e.is_connect()
        || e.is_io()
        || e.is_timeout()
        || e.is_transport()
        || matches!(e.http_status_code(), Some(s) if s >= 500 || s == 408 || s == 429);
    Failure { transient, message }
}

/// The client's TLS (rustls) needs a process-wide crypto provider: ring, as S3's client uses.
fn install_crypto_provider() {
    // Err: one is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> GcpConfig {
        GcpConfig {
            bucket: "b".into(),
            credentials_json: json.into(),
            endpoint: String::new(),
        }
    }

    #[test]
    fn bad_keys_and_missing_buckets_are_config_errors() {
        let e = GcsTarget::new(&GcpConfig::default()).unwrap_err();
        assert!(e.to_string().contains("file_output.gcp.bucket"), "{e}");
        let e = GcsTarget::with_emulator(&cfg("{not json"), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("file_output.gcp.credentials_json: not JSON"),
            "{e}"
        );
        let e = GcsTarget::with_emulator(&cfg(r#"{"type": "authorized_user"}"#), None).unwrap_err();
        assert!(e.to_string().contains("not a service account key"), "{e}");
    }

    #[test]
    fn the_emulator_is_used_anonymously_and_wins_over_the_endpoint() {
        let mut c = cfg("");
        c.endpoint = "https://storage.private.example".into();
        let t = GcsTarget::with_emulator(&c, Some("127.0.0.1:4443".into())).unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4443");
        assert_eq!(t.download_url("a/b.mp4"), "gs://b/a/b.mp4");
        // A bad key is not even read when the emulator is used.
        let t = GcsTarget::with_emulator(&cfg("{not json"), Some("http://127.0.0.1:1".into()));
        assert!(t.is_ok());
    }
}
