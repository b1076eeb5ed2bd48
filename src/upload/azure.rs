//! Azure Blob Storage uploads through Microsoft's SDK (`azure_storage_blob`), authorised by the
//! account key, a SAS, or an Entra ID identity (workload or managed identity).
//!
//! The SDK sends the requests (Put Blob, Put Block, Put Block List, Get Blob Properties); which
//! blocks there are, how many go at once and how failures are retried stay ours, so Azure
//! uploads follow the same rules as S3 and GCS (retry budget, kept file, size check).
//!
//! The SDK has no Shared Key credential: with an account key we sign an account SAS ourselves
//! (blob service, container and object, read/write/create, valid for a day from the start of each
//! upload) and hand the SDK the SAS'd URL. That string-to-sign is the one piece of Azure's protocol
//! written here. Without a key or a SAS the identity of the pod is used: workload identity when
//! `AZURE_FEDERATED_TOKEN_FILE` is set (AKS), else the managed identity (App Service's
//! `IDENTITY_ENDPOINT`, or the VM's instance metadata service); Entra ID needs an https endpoint.
//!
//! `endpoint` empty = `https://<account>.blob.core.windows.net`; set = that address, which for
//! Azurite carries the account in its path (`http://127.0.0.1:10000/devstoreaccount1`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, StatusCode};
use azure_core::Bytes;
use azure_identity::{
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{plan_parts, retry, Failure, Job, Part, UploadError, CONTENT_TYPE};
use crate::config::AzureConfig;

/// Block size of block uploads, as the original's.
pub const DEFAULT_BLOCK_SIZE: u64 = 4 * 1024 * 1024;
/// The version of the account SAS we sign (its string-to-sign has nine fields).
const SAS_VERSION: &str = "2019-02-02";
/// How long a SAS we sign is valid: from a little before the upload starts (clocks differ) to a
/// day after, longer than any retry budget.
const SAS_BEFORE: Duration = Duration::from_secs(15 * 60);
const SAS_VALID: Duration = Duration::from_secs(24 * 3600);
/// A block blob has at most this many blocks.
const MAX_BLOCKS: u64 = 50_000;

/// How requests are authorised.
#[derive(Clone)]
enum Auth {
    /// The account key (decoded): an account SAS is signed for each upload.
    Key(Vec<u8>),
    /// A SAS token the operator issued (the query string, without `?`).
    Sas(String),
    /// An Entra ID identity.
    Entra(Arc<dyn TokenCredential>),
}

impl Auth {
    fn name(&self) -> &'static str {
        match self {
            Auth::Key(_) => "account key",
            Auth::Sas(_) => "SAS token",
            Auth::Entra(_) => "Entra ID",
        }
    }
}

/// A container of a storage account, and how to be let in.
#[derive(Clone)]
pub struct AzureBlob {
    account: String,
    container: String,
    auth: Auth,
    /// The account's address without a trailing slash.
    base: url::Url,
    /// `base` as text, for download URLs and messages.
    endpoint: String,
}

impl std::fmt::Debug for AzureBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlob")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth.name())
            .finish()
    }
}

impl AzureBlob {
    /// A client for `cfg`'s container (which must exist for uploads).
    pub fn new(cfg: &AzureConfig) -> Result<Self, UploadError> {
        for (key, value) in [
            ("file_output.azblob.account_name", &cfg.account_name),
            ("file_output.azblob.container_name", &cfg.container_name),
        ] {
            if value.trim().is_empty() {
                return Err(UploadError::Config {
                    key,
                    problem: "required when file_output.azblob is set".into(),
                });
            }
        }
        let base = if cfg.endpoint.trim().is_empty() {
            super::normalize_endpoint(
                &format!("https://{}.blob.core.windows.net", cfg.account_name),
                "file_output.azblob.account_name",
            )?
        } else {
            super::normalize_endpoint(&cfg.endpoint, "file_output.azblob.endpoint")?
        };
        let auth = auth(cfg, &base)?;
        Ok(Self {
            account: cfg.account_name.clone(),
            container: cfg.container_name.clone(),
            auth,
            endpoint: base.as_str().trim_end_matches('/').to_owned(),
            base,
        })
    }

    /// `"account key"`, `"SAS token"` or `"Entra ID"`.
    pub fn auth_kind(&self) -> &'static str {
        self.auth.name()
    }

    /// `<endpoint>/<container>/<name>`, each piece of the name percent-encoded as the upload
    /// sends it: the address of exactly the blob written (a `#` or `?` in a name stays in the
    /// name). Never carries a SAS.
    pub fn download_url(&self, name: &str) -> String {
        self.blob_url(name).into()
    }

    fn error(&self, name: &str, message: String) -> UploadError {
        UploadError::Azure {
            endpoint: self.endpoint.clone(),
            container: self.container.clone(),
            key: name.to_owned(),
            message,
        }
    }

    /// Creates the container (private); one that already exists is fine. Not part of an upload
    /// (the original never created containers): for tests and setup tools.
    pub async fn create_container(&self) -> Result<(), UploadError> {
        let fail = |m: String| self.error("", format!("Create Container: {m}"));
        let (url, credential) = self.authorised(self.container_url()).map_err(fail)?;
        let options = BlobContainerClientOptions {
            client_options: client_options(),
            ..Default::default()
        };
        let client = BlobContainerClient::new(url, credential, Some(options))
            .map_err(|e| fail(describe(&e)))?;
        match client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(fail(describe(&e))),
        }
    }

    /// Downloads a blob whole, with its content type. For checks and tests (small blobs).
    pub async fn get_blob(&self, name: &str) -> Result<(Vec<u8>, Option<String>), UploadError> {
        let fail = |m: String| self.error(name, format!("Get Blob: {m}"));
        let blob = self.blob_client(name).map_err(fail)?;
        let result = blob.download(None).await.map_err(|e| fail(describe(&e)))?;
        let content_type = result.properties.content_type.clone();
        let body = result
            .body
            .collect()
            .await
            .map_err(|e| fail(describe(&e)))?;
        Ok((body.to_vec(), content_type))
    }

    /// Uploads the file, then checks that the stored blob has its size: the local file is only
    /// removed after that.
    pub(crate) async fn upload(&self, job: &Job<'_>) -> Result<(), UploadError> {
        let blob = self
            .blob_client(job.key)
            .map_err(|m| self.error(job.key, m))?;
        self.put(&blob, job).await?;
        self.verify(&blob, job).await
    }

    /// The SDK's client for one blob, authorised: the SAS (a fresh one when signing with the key)
    /// in its URL, or the Entra credential in its pipeline.
    fn blob_client(&self, name: &str) -> Result<BlobClient, String> {
        let (url, credential) = self.authorised(self.blob_url(name))?;
        let options = BlobClientOptions {
            client_options: client_options(),
            ..Default::default()
        };
        BlobClient::new(url, credential, Some(options)).map_err(|e| describe(&e))
    }

    /// `url` with the SAS in its query, or the Entra credential to send with it.
    #[allow(clippy::type_complexity)]
    fn authorised(
        &self,
        mut url: url::Url,
    ) -> Result<(url::Url, Option<Arc<dyn TokenCredential>>), String> {
        match &self.auth {
            Auth::Key(key) => {
                let sas = account_sas(&self.account, key, &url, SystemTime::now());
                url.set_query(Some(&sas));
                Ok((url, None))
            }
            Auth::Sas(sas) => {
                url.set_query(Some(sas));
                Ok((url, None))
            }
            Auth::Entra(credential) => Ok((url, Some(credential.clone()))),
        }
    }

    /// Get Blob Properties: the stored blob's size must be the file's.
    async fn verify(&self, blob: &BlobClient, job: &Job<'_>) -> Result<(), UploadError> {
        let stored = retry(job.retry, "Get Blob Properties", 0, || async {
            let response = blob.get_properties(None).await.map_err(|e| failure(&e))?;
            Ok(response.content_length().ok().flatten())
        })
        .await
        .map_err(|m| self.error(job.key, format!("Get Blob Properties after upload: {m}")))?;
        if stored != Some(job.size) {
            let shown = stored.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
            return Err(self.error(
                job.key,
                format!(
                    "the stored blob has {shown} bytes, the file {}: the upload is incomplete",
                    job.size
                ),
            ));
        }
        Ok(())
    }

    async fn put(&self, blob: &BlobClient, job: &Job<'_>) -> Result<(), UploadError> {
        let block_blob = blob.block_blob_client();
        if job.size <= job.part_size {
            // One Put Blob.
            let body = read_range(job, 0, job.size)
                .await
                .map_err(|m| self.error(job.key, m))?;
            return retry(job.retry, "Put Blob", job.size, || async {
                let options = BlockBlobClientUploadOptions {
                    blob_content_type: Some(CONTENT_TYPE.into()),
                    parallel: Some(std::num::NonZero::<usize>::MIN),
                    partition_size: std::num::NonZero::new(job.part_size.max(1)),
                    ..Default::default()
                };
                block_blob
                    .upload(body.clone().into(), Some(options))
                    .await
                    .map(drop)
                    .map_err(|e| failure(&e))
            })
            .await
            .map_err(|m| self.error(job.key, format!("Put Blob: {m}")));
        }
        let blocks = plan_parts(job.size, job.part_size, MAX_BLOCKS);
        tracing::info!(
            container = %self.container,
            key = job.key,
            blocks = blocks.len(),
            block_bytes = blocks[0].len,
            "Azure block upload started"
        );
        futures::stream::iter(blocks.iter().copied())
            .map(|block| self.put_block(&block_blob, job, block))
            .buffer_unordered(job.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let list = BlockLookupList {
            latest: Some(blocks.iter().map(block_id).collect()),
            ..Default::default()
        };
        retry(job.retry, "Put Block List", 0, || async {
            let content: RequestContent<BlockLookupList, _> = list
                .clone()
                .try_into()
                .map_err(|e: azure_core::Error| Failure::permanent(describe(&e)))?;
            let options = BlockBlobClientCommitBlockListOptions {
                blob_content_type: Some(CONTENT_TYPE.into()),
                ..Default::default()
            };
            block_blob
                .commit_block_list(content, Some(options))
                .await
                .map(drop)
                .map_err(|e| failure(&e))
        })
        .await
        .map_err(|m| self.error(job.key, format!("Put Block List: {m}")))
    }

    async fn put_block(
        &self,
        block_blob: &azure_storage_blob::BlockBlobClient,
        job: &Job<'_>,
        block: Part,
    ) -> Result<(), UploadError> {
        let body = read_range(job, block.offset, block.len)
            .await
            .map_err(|m| self.error(job.key, m))?;
        let id = block_id(&block);
        let request = format!("Put Block {}", block.number);
        retry(job.retry, &request, block.len, || async {
            block_blob
                .stage_block(&id, block.len, body.clone().into(), None)
                .await
                .map(drop)
                .map_err(|e| failure(&e))
        })
        .await
        .map_err(|m| self.error(job.key, format!("{request}: {m}")))?;
        tracing::debug!(
            key = job.key,
            block = block.number,
            bytes = block.len,
            "Azure block uploaded"
        );
        Ok(())
    }

    fn container_url(&self) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(&self.container);
        }
        url
    }

    /// The blob's address: each `/`-separated piece of the name percent-encoded.
    fn blob_url(&self, name: &str) -> url::Url {
        let mut url = self.container_url();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(name.split('/'));
        }
        url
    }
}

/// How `cfg` lets us in: the account key, else the SAS token, else the pod's Entra identity.
fn auth(cfg: &AzureConfig, base: &url::Url) -> Result<Auth, UploadError> {
    let key = cfg.account_key.trim();
    let sas = cfg.sas_token.trim().trim_start_matches('?');
    if !key.is_empty() && !sas.is_empty() {
        return Err(UploadError::Config {
            key: "file_output.azblob.sas_token",
            problem: "set account_key or sas_token, not both".into(),
        });
    }
    if !key.is_empty() {
        // As lenient as Go's decoder, which the original used.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let key = lenient.decode(key).map_err(|_| UploadError::Config {
            key: "file_output.azblob.account_key",
            problem: "not valid base64 (it is the storage account's access key)".into(),
        })?;
        return Ok(Auth::Key(key));
    }
    if !sas.is_empty() {
        if !sas.split('&').any(|p| p.starts_with("sig=")) {
            return Err(UploadError::Config {
                key: "file_output.azblob.sas_token",
                problem: "not a SAS token (it has no sig= parameter)".into(),
            });
        }
        return Ok(Auth::Sas(sas.to_owned()));
    }
    if base.scheme() != "https" {
        return Err(UploadError::Config {
            key: "file_output.azblob.endpoint",
            problem: "Entra ID (no account_key, no sas_token) needs an https endpoint".into(),
        });
    }
    entra(&|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(Auth::Entra)
        .map_err(|problem| UploadError::Config {
            key: "file_output.azblob",
            problem,
        })
}

/// The pod's Entra identity: workload identity when its token file is named (AKS sets
/// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`), else the managed identity
/// (the user-assigned one named by `AZURE_CLIENT_ID`, else the system-assigned one).
fn entra(env: &dyn Fn(&str) -> Option<String>) -> Result<Arc<dyn TokenCredential>, String> {
    if let Some(token_file) = env("AZURE_FEDERATED_TOKEN_FILE") {
        let options = WorkloadIdentityCredentialOptions {
            client_id: env("AZURE_CLIENT_ID"),
            tenant_id: env("AZURE_TENANT_ID"),
            token_file_path: Some(token_file.into()),
            ..Default::default()
        };
        let credential = WorkloadIdentityCredential::new(Some(options))
            .map_err(|e| format!("workload identity: {}", describe(&e)))?;
        tracing::info!("Azure uploads authorised by the pod's workload identity");
        return Ok(credential);
    }
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
        ..Default::default()
    };
    let credential = ManagedIdentityCredential::new(Some(options))
        .map_err(|e| format!("managed identity: {}", describe(&e)))?;
    tracing::info!("Azure uploads authorised by the managed identity");
    Ok(credential)
}

/// The SDK's options: its own retries are off (ours are around every request).
fn client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

/// An account SAS for the blob service (containers and objects: read, write, create) signed with
/// the account key, valid from a quarter of an hour before `now` to a day after. Plain http only
/// when the endpoint is (Azurite).
fn account_sas(account: &str, key: &[u8], url: &url::Url, now: SystemTime) -> String {
    let start = iso8601(now - SAS_BEFORE);
    let expiry = iso8601(now + SAS_VALID);
    let protocol = if url.scheme() == "https" {
        "https"
    } else {
        "https,http"
    };
    let (permissions, services, resource_types) = ("rwc", "b", "co");
    let string_to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n{start}\n{expiry}\n\n{protocol}\n{SAS_VERSION}\n"
    );
    let signature = sign(key, &string_to_sign);
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature)
        .finish()
}

/// `2026-11-25T18:19:09Z`: the UTC time to the second (RFC 3339, as SAS fields take it).
fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    azure_core::time::to_rfc3339(&azure_core::time::OffsetDateTime::from(whole))
}

fn sign(key: &[u8], string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Block ids (the SDK sends them base64-encoded): the zero-padded block number, all of one
/// length as Azure requires.
fn block_id(block: &Part) -> Vec<u8> {
    format!("{:06}", block.number).into_bytes()
}

/// `len` bytes of the file from `offset`.
async fn read_range(job: &Job<'_>, offset: u64, len: u64) -> Result<Bytes, String> {
    let fail = |e: std::io::Error| format!("reading {}: {e}", job.local.display());
    let mut file = tokio::fs::File::open(job.local).await.map_err(fail)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(fail)?;
    let mut buf = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_exact(&mut buf).await.map_err(fail)?;
    Ok(Bytes::from(buf))
}

/// A failed request, and whether it is worth trying again (no answer, 5xx, 408, 429).
fn failure(e: &azure_core::Error) -> Failure {
    let transient = match e.kind() {
        ErrorKind::HttpResponse { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::RequestTimeout
                || *status == StatusCode::TooManyRequests
        }
        ErrorKind::Connection | ErrorKind::Io => true,
        _ => false,
    };
    Failure {
        transient,
        message: describe(e),
    }
}

/// An SDK error as one line: `HTTP 404 ContainerNotFound: The specified container does not
/// exist.` for answers, the error's chain otherwise. A SAS signature is never shown.
fn describe(e: &azure_core::Error) -> String {
    let text = match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let mut s = format!("HTTP {}", u16::from(*status));
            if let Some(code) = error_code {
                s.push(' ');
                s.push_str(code);
            }
            let message = raw_response
                .as_ref()
                .and_then(|r| xml_text(&String::from_utf8_lossy(r.body()), "Message"));
            if let Some(m) = message {
                s.push_str(": ");
                s.push_str(m.lines().next().unwrap_or_default());
            }
            s
        }
        _ => super::error_chain(e),
    };
    redact_signatures(&text)
}

/// `sig=<anything>` -> `sig=REDACTED`.
fn redact_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The text of the first `<tag>` of an XML error body.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> AzureConfig {
        AzureConfig {
            account_name: "devstoreaccount1".into(),
            account_key: "c2VjcmV0".into(),
            container_name: "videos".into(),
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    fn client(endpoint: &str) -> AzureBlob {
        AzureBlob::new(&config(endpoint)).unwrap()
    }

    #[test]
    fn blob_urls_encode_each_segment() {
        let c = client("");
        assert_eq!(
            c.blob_url("room/a b#1?.mp4").as_str(),
            "https://devstoreaccount1.blob.core.windows.net/videos/room/a%20b%231%3F.mp4"
        );
        let c = client("http://127.0.0.1:10000/devstoreaccount1/");
        assert_eq!(
            c.blob_url("x.mp4").as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/videos/x.mp4"
        );
        // The download URL names the blob written, whatever its name holds.
        assert_eq!(
            c.download_url("a b#1?.mp4"),
            "http://127.0.0.1:10000/devstoreaccount1/videos/a%20b%231%3F.mp4"
        );
        assert_eq!(
            c.download_url("x%2E%2E/y.mp4"),
            "http://127.0.0.1:10000/devstoreaccount1/videos/x%252E%252E/y.mp4"
        );
    }

    #[test]
    fn the_key_signs_an_account_sas_and_stays_out_of_urls() {
        let c = client("http://127.0.0.1:10000/devstoreaccount1");
        let (url, credential) = c.authorised(c.blob_url("a/b.mp4")).unwrap();
        assert!(credential.is_none());
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(query["sv"], SAS_VERSION);
        assert_eq!(query["ss"], "b");
        assert_eq!(query["srt"], "co");
        assert_eq!(query["sp"], "rwc");
        assert_eq!(
            query["spr"], "https,http",
            "http allowed for a http endpoint"
        );
        assert!(!query["sig"].is_empty());
        assert!(!url.as_str().contains("c2VjcmV0"));
        assert_eq!(url.path(), "/devstoreaccount1/videos/a/b.mp4");
        assert!(!c.download_url("a/b.mp4").contains('?'));
        // https endpoints get an https-only SAS.
        let c = client("");
        let (url, _) = c.authorised(c.blob_url("b.mp4")).unwrap();
        assert!(url.query().unwrap().contains("spr=https&"), "{url}");
    }

    #[test]
    fn the_account_sas_is_signed_over_the_documented_fields() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_094_749); // 2025-11-25T18:19:09Z
        let url = url::Url::parse("http://127.0.0.1:10000/devstoreaccount1/c").unwrap();
        let sas = account_sas("acct", b"Jefe", &url, now);
        let expected_string = "acct\nrwc\nb\nco\n2025-11-25T18:04:09Z\n2025-11-26T18:19:09Z\n\nhttps,http\n2019-02-02\n";
        assert_eq!(
            sas,
            format!(
                "sv=2019-02-02&ss=b&srt=co&sp=rwc&st=2025-11-25T18%3A04%3A09Z&se=2025-11-26T18%3A19%3A09Z&spr=https%2Chttp&sig={}",
                url::form_urlencoded::byte_serialize(sign(b"Jefe", expected_string).as_bytes())
                    .collect::<String>()
            )
        );
    }

    #[test]
    fn times_are_utc_to_the_second() {
        let at = |s| iso8601(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_764_094_749), "2025-11-25T18:19:09Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_decoded_key() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD.encode([
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ])
        );
    }

    #[test]
    fn a_sas_token_is_used_as_given() {
        let c = AzureBlob::new(&AzureConfig {
            account_key: String::new(),
            sas_token: "?sv=2022-11-02&sp=rwc&sig=abc%3D".into(),
            ..config("http://127.0.0.1:10000/devstoreaccount1")
        })
        .unwrap();
        assert_eq!(c.auth_kind(), "SAS token");
        let (url, credential) = c.authorised(c.blob_url("x.mp4")).unwrap();
        assert!(credential.is_none());
        assert_eq!(url.query(), Some("sv=2022-11-02&sp=rwc&sig=abc%3D"));
    }

    #[test]
    fn credentials_are_checked_when_configured() {
        let problem = |cfg: AzureConfig| match AzureBlob::new(&cfg) {
            Err(UploadError::Config { key, problem }) => format!("{key}: {problem}"),
            other => panic!("{other:?}"),
        };
        let both = problem(AzureConfig {
            sas_token: "sig=x".into(),
            ..config("")
        });
        assert!(both.contains("not both"), "{both}");
        let not_sas = problem(AzureConfig {
            account_key: String::new(),
            sas_token: "sv=2022-11-02".into(),
            ..config("")
        });
        assert!(not_sas.contains("sig="), "{not_sas}");
        let bad_key = problem(AzureConfig {
            account_key: "not base64!".into(),
            ..config("")
        });
        assert!(bad_key.contains("base64"), "{bad_key}");
        // Entra ID tokens are only sent over https.
        let entra_http = problem(AzureConfig {
            account_key: String::new(),
            ..config("http://127.0.0.1:10000/devstoreaccount1")
        });
        assert!(entra_http.contains("https"), "{entra_http}");
    }

    #[test]
    fn entra_uses_the_workload_identity_when_its_token_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "a.b.c").unwrap();
        let token = token.to_string_lossy().into_owned();
        let vars = [
            ("AZURE_FEDERATED_TOKEN_FILE", token.as_str()),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000002"),
        ];
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let credential = entra(&env).unwrap();
        assert!(
            format!("{credential:?}").contains("WorkloadIdentityCredential"),
            "{credential:?}"
        );
        // A token file without the rest of what AKS injects: a clear error.
        let partial = |name: &str| (name == "AZURE_FEDERATED_TOKEN_FILE").then(|| token.clone());
        let e = entra(&partial).map(|_| ()).expect_err("no tenant");
        assert!(
            e.starts_with("workload identity:") && e.contains("tenant"),
            "{e}"
        );
    }

    #[test]
    fn entra_falls_back_to_the_managed_identity() {
        let managed = |credential: Arc<dyn TokenCredential>| {
            format!("{credential:?}").contains("ManagedIdentityCredential")
        };
        assert!(managed(entra(&|_| None).unwrap()));
        let with_client = |name: &str| {
            (name == "AZURE_CLIENT_ID").then(|| "00000000-0000-0000-0000-000000000001".to_owned())
        };
        assert!(managed(entra(&with_client).unwrap()));
    }

    #[test]
    fn block_ids_have_one_length() {
        let id = |n| {
            block_id(&Part {
                number: n,
                offset: 0,
                len: 0,
            })
        };
        assert_eq!(id(1).len(), id(50_000).len());
        assert_ne!(id(1), id(2));
    }

    #[test]
    fn signatures_never_reach_messages() {
        assert_eq!(
            redact_signatures("GET http://h/c/x?sv=1&sig=abc%2B%3D&se=2 failed; sig=zz"),
            "GET http://h/c/x?sv=1&sig=REDACTED&se=2 failed; sig=REDACTED"
        );
        assert_eq!(redact_signatures("no secret"), "no secret");
    }

    #[test]
    fn error_bodies_are_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        assert_eq!(
            xml_text(body, "Code").as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(xml_text(body, "Nope"), None);
    }
}
