//! Azure Blob Storage uploads over the Blob REST API (reqwest), with Shared Key authorization.
//!
//! The azure_storage_blobs crates are deprecated and bring a second HTTP stack; the few calls
//! needed here are small: Put Blob for small files, else Put Block (4 MiB blocks, a few at a
//! time) then Put Block List, with the blob's content type set to `video/mp4`. `endpoint` empty
//! = `https://<account>.blob.core.windows.net`; set = that address, which for Azurite carries the
//! account in its path (`http://127.0.0.1:10000/devstoreaccount1`).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{plan_parts, retry, Failure, Job, Part, UploadError, CONTENT_TYPE};
use crate::config::AzureConfig;

/// Block size of block uploads, as the original's.
pub const DEFAULT_BLOCK_SIZE: u64 = 4 * 1024 * 1024;
/// The REST API version requests are made with.
pub const API_VERSION: &str = "2021-08-06";
/// A block blob has at most this many blocks.
const MAX_BLOCKS: u64 = 50_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A container of a storage account, with the account's key.
#[derive(Clone)]
pub struct AzureBlob {
    http: reqwest::Client,
    account: String,
    key: Vec<u8>,
    container: String,
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
            .finish_non_exhaustive()
    }
}

/// A failed request, with the error code Azure gave.
#[derive(Debug)]
struct HttpFailure {
    status: StatusCode,
    code: String,
    message: String,
}

impl AzureBlob {
    /// A client for `cfg`'s container (which must exist for uploads).
    pub fn new(cfg: &AzureConfig) -> Result<Self, UploadError> {
        for (key, value) in [
            ("file_output.azblob.account_name", &cfg.account_name),
            ("file_output.azblob.account_key", &cfg.account_key),
            ("file_output.azblob.container_name", &cfg.container_name),
        ] {
            if value.trim().is_empty() {
                return Err(UploadError::Config {
                    key,
                    problem: "required when file_output.azblob is set".into(),
                });
            }
        }
        // As lenient as Go's decoder, which the original used.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let key = lenient
            .decode(cfg.account_key.trim())
            .map_err(|_| UploadError::Config {
                key: "file_output.azblob.account_key",
                problem: "not valid base64 (it is the storage account's access key)".into(),
            })?;
        let base = if cfg.endpoint.trim().is_empty() {
            super::normalize_endpoint(
                &format!("https://{}.blob.core.windows.net", cfg.account_name),
                "file_output.azblob.account_name",
            )?
        } else {
            super::normalize_endpoint(&cfg.endpoint, "file_output.azblob.endpoint")?
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| UploadError::Config {
                key: "file_output.azblob",
                problem: format!("cannot make an HTTP client: {}", super::error_chain(&e)),
            })?;
        Ok(Self {
            http,
            account: cfg.account_name.clone(),
            key,
            container: cfg.container_name.clone(),
            endpoint: base.as_str().trim_end_matches('/').to_owned(),
            base,
        })
    }

    /// `<endpoint>/<container>/<name>`, each piece of the name percent-encoded as the upload
    /// sends it: the address of exactly the blob written (a `#` or `?` in a name stays in the
    /// name).
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
        let mut url = self.container_url();
        url.query_pairs_mut().append_pair("restype", "container");
        match self.send(Method::PUT, url, &[], Vec::new()).await {
            Ok(_) => Ok(()),
            Err(Ok(f)) if f.status == StatusCode::CONFLICT => Ok(()),
            Err(e) => Err(self.error("", format!("Create Container: {}", describe(e)))),
        }
    }

    /// Downloads a blob whole, with its content type. For checks and tests (small blobs).
    pub async fn get_blob(&self, name: &str) -> Result<(Vec<u8>, Option<String>), UploadError> {
        let fail = |e| self.error(name, format!("Get Blob: {}", describe(e)));
        let response = self
            .send(Method::GET, self.blob_url(name), &[], Vec::new())
            .await
            .map_err(fail)?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| fail(Err(e)))?;
        Ok((body.to_vec(), content_type))
    }

    /// Uploads the file, then checks that the stored blob has its size: the local file is only
    /// removed after that.
    pub(crate) async fn upload(&self, job: &Job<'_>) -> Result<(), UploadError> {
        self.put(job).await?;
        self.verify(job).await
    }

    /// Get Blob Properties (HEAD): the stored blob's size must be the file's.
    async fn verify(&self, job: &Job<'_>) -> Result<(), UploadError> {
        let stored = retry(job.retry, "Get Blob Properties", 0, || async {
            match self
                .send(Method::HEAD, self.blob_url(job.key), &[], Vec::new())
                .await
            {
                Ok(r) => Ok(r
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())),
                Err(e) => Err(Failure {
                    transient: true,
                    message: describe(e),
                }),
            }
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

    async fn put(&self, job: &Job<'_>) -> Result<(), UploadError> {
        if job.size <= job.part_size {
            let body = read_range(job, 0, job.size)
                .await
                .map_err(|m| self.error(job.key, m))?;
            let headers = [
                ("x-ms-blob-type", "BlockBlob"),
                ("x-ms-blob-content-type", CONTENT_TYPE),
            ];
            return self
                .request(job, "Put Blob", self.blob_url(job.key), &headers, &body)
                .await;
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
            .map(|block| self.put_block(job, block))
            .buffer_unordered(job.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for block in &blocks {
            list.push_str("<Latest>");
            list.push_str(&block_id(block));
            list.push_str("</Latest>");
        }
        list.push_str("</BlockList>");
        let mut url = self.blob_url(job.key);
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let headers = [("x-ms-blob-content-type", CONTENT_TYPE)];
        self.request(job, "Put Block List", url, &headers, list.as_bytes())
            .await
    }

    async fn put_block(&self, job: &Job<'_>, block: Part) -> Result<(), UploadError> {
        let body = read_range(job, block.offset, block.len)
            .await
            .map_err(|m| self.error(job.key, m))?;
        let mut url = self.blob_url(job.key);
        url.query_pairs_mut()
            .append_pair("comp", "block")
            .append_pair("blockid", &block_id(&block));
        let request = format!("Put Block {}", block.number);
        self.request(job, &request, url, &[], &body).await?;
        tracing::debug!(
            key = job.key,
            block = block.number,
            bytes = block.len,
            "Azure block uploaded"
        );
        Ok(())
    }

    /// One request of an upload, retried.
    async fn request(
        &self,
        job: &Job<'_>,
        what: &str,
        url: url::Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), UploadError> {
        retry(job.retry, what, body.len() as u64, || async {
            match self
                .send(Method::PUT, url.clone(), headers, body.to_vec())
                .await
            {
                Ok(_) => Ok(()),
                Err(Ok(f)) => {
                    let transient = f.status.is_server_error()
                        || f.status == StatusCode::REQUEST_TIMEOUT
                        || f.status == StatusCode::TOO_MANY_REQUESTS;
                    Err(Failure {
                        transient,
                        message: describe(Ok(f)),
                    })
                }
                Err(Err(e)) => Err(Failure {
                    transient: !e.is_builder(),
                    message: describe(Err(e)),
                }),
            }
        })
        .await
        .map_err(|m| self.error(job.key, format!("{what}: {m}")))
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

    /// Signs and sends one request. `Err(Ok)` is an HTTP error answer, `Err(Err)` no answer.
    async fn send(
        &self,
        method: Method,
        url: url::Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, Result<HttpFailure, reqwest::Error>> {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut ms_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        ms_headers.push(("x-ms-date".into(), date));
        ms_headers.push(("x-ms-version".into(), API_VERSION.into()));
        let authorization = self.authorization(&method, &url, body.len(), &ms_headers);
        let mut request = self
            .http
            .request(method, url.as_str())
            .header(reqwest::header::AUTHORIZATION, authorization);
        for (name, value) in &ms_headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_LENGTH, body.len());
        }
        let response = request.body(body).send().await.map_err(Err)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        Err(Ok(HttpFailure {
            status,
            code: code.or_else(|| xml_text(&text, "Code")).unwrap_or_default(),
            message: xml_text(&text, "Message")
                .map(|m| m.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default(),
        }))
    }

    /// `SharedKey <account>:<signature>` for a request (Shared Key, version 2015-02-21 and later).
    fn authorization(
        &self,
        method: &Method,
        url: &url::Url,
        content_length: usize,
        ms_headers: &[(String, String)],
    ) -> String {
        let string_to_sign = string_to_sign(
            &self.account,
            method.as_str(),
            url,
            content_length,
            ms_headers,
        );
        let signature = sign(&self.key, &string_to_sign);
        format!("SharedKey {}:{}", self.account, signature)
    }
}

/// The Shared Key string to sign. Only the headers this client sends are filled in: the
/// standard ones it never sets (Content-Type, Range, conditions...) are empty lines.
fn string_to_sign(
    account: &str,
    method: &str,
    url: &url::Url,
    content_length: usize,
    ms_headers: &[(String, String)],
) -> String {
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    // VERB, Content-Encoding, Content-Language, Content-Length, Content-MD5, Content-Type, Date,
    // If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range.
    let mut s = format!("{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n");
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .collect();
    headers.sort();
    for (k, v) in headers {
        s.push_str(&k);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    // Canonicalized resource: /account/path (the path as sent, which for Azurite repeats the
    // account), then each query parameter, lower-cased and sorted, with its decoded value.
    s.push('/');
    s.push_str(account);
    s.push_str(url.path());
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut i = 0;
    while i < params.len() {
        let name = params[i].0.clone();
        let mut values = Vec::new();
        while i < params.len() && params[i].0 == name {
            values.push(params[i].1.clone());
            i += 1;
        }
        s.push('\n');
        s.push_str(&name);
        s.push(':');
        s.push_str(&values.join(","));
    }
    s
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

/// Block ids: base64 of the zero-padded block number, all of one length as Azure requires.
fn block_id(block: &Part) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{:06}", block.number))
}

/// `len` bytes of the file from `offset`.
async fn read_range(job: &Job<'_>, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("reading {}: {e}", job.local.display());
    let mut file = tokio::fs::File::open(job.local).await.map_err(fail)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(fail)?;
    let mut buf = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_exact(&mut buf).await.map_err(fail)?;
    Ok(buf)
}

fn describe(e: Result<HttpFailure, reqwest::Error>) -> String {
    match e {
        Ok(f) => {
            let mut s = format!("HTTP {}", f.status.as_u16());
            if !f.code.is_empty() {
                s.push(' ');
                s.push_str(&f.code);
            }
            if !f.message.is_empty() {
                s.push_str(": ");
                s.push_str(&f.message);
            }
            s
        }
        Err(e) => super::error_chain(&e),
    }
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

    fn client(endpoint: &str) -> AzureBlob {
        AzureBlob::new(&AzureConfig {
            account_name: "devstoreaccount1".into(),
            account_key: "c2VjcmV0".into(),
            container_name: "videos".into(),
            endpoint: endpoint.into(),
        })
        .unwrap()
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
    fn string_to_sign_follows_the_shared_key_format() {
        let url = url::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/videos/x.mp4?comp=block&blockid=MDAwMDAx",
        )
        .unwrap();
        let headers = vec![
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            (
                "x-ms-date".to_string(),
                "Fri, 01 Jan 2021 00:00:00 GMT".to_string(),
            ),
        ];
        let s = string_to_sign("devstoreaccount1", "PUT", &url, 42, &headers);
        assert_eq!(
            s,
            "PUT\n\n\n42\n\n\n\n\n\n\n\n\n\
             x-ms-date:Fri, 01 Jan 2021 00:00:00 GMT\n\
             x-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/videos/x.mp4\nblockid:MDAwMDAx\ncomp:block"
        );
        let empty = string_to_sign("a", "GET", &url::Url::parse("https://h/c").unwrap(), 0, &[]);
        assert_eq!(empty, "GET\n\n\n\n\n\n\n\n\n\n\n\n/a/c");
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
    fn error_bodies_are_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        assert_eq!(
            xml_text(body, "Code").as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(xml_text(body, "Nope"), None);
    }
}
