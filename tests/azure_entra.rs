//! Azure uploads with no key and no SAS: the Entra ID path, end to end on loopback. Azurite runs
//! over https with OAuth on; the managed identity's token comes from a stand-in for App Service's
//! identity endpoint (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`, which the SDK's managed identity
//! credential reads), serving tokens with Entra ID's issuer and Storage's audience.
//!
//! One test in this binary: it sets process environment variables (the credential reads them).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::storage;
use livekit_recorder::config::AzureConfig;
use livekit_recorder::upload::azure::AzureBlob;

const IDENTITY_HEADER: &str = "identity-header-secret";

/// What the identity endpoint was asked.
#[derive(Default)]
struct Asked {
    requests: Vec<String>,
    header_seen: bool,
}

/// An HTTP endpoint answering every GET with a bearer token for `audience`, valid for an hour.
fn identity_endpoint(audience: &'static str) -> (u16, Arc<Mutex<Asked>>) {
    let asked = Arc::new(Mutex::new(Asked::default()));
    let record = asked.clone();
    let port = storage::stand_in(move |request| {
        {
            let mut a = record.lock().unwrap();
            a.requests.push(request.line.clone());
            a.header_seen |= request.header("x-identity-header") == Some(IDENTITY_HEADER);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = format!(
            r#"{{"access_token":"{}","expires_on":"{}","resource":"https://storage.azure.com","token_type":"Bearer"}}"#,
            jwt(audience, now),
            now + 3600
        );
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })
    .expect("a stand-in identity endpoint");
    (port, asked)
}

/// An (unsigned) access token shaped as Entra ID's.
fn jwt(audience: &str, now: u64) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = b64(r#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(&format!(
        r#"{{"aud":"{audience}","iss":"https://sts.windows.net/00000000-0000-0000-0000-000000000002/","iat":{},"nbf":{},"exp":{},"oid":"00000000-0000-0000-0000-000000000003","tid":"00000000-0000-0000-0000-000000000002"}}"#,
        now - 60,
        now - 60,
        now + 3600
    ));
    format!("{header}.{claims}.{}", b64("signature"))
}

/// Azurite's account at the https server, with no key and no SAS: Entra ID.
fn keyless(server: &storage::Server) -> AzureConfig {
    AzureConfig {
        account_name: storage::AZURITE_ACCOUNT.into(),
        container_name: "videos".into(),
        endpoint: format!(
            "https://127.0.0.1:{}/{}",
            server.port,
            storage::AZURITE_ACCOUNT
        ),
        ..Default::default()
    }
}

#[test]
fn azure_uploads_with_the_managed_identity() {
    let server = storage::azurite_https_oauth().expect("azurite over https");
    let (port, asked) = identity_endpoint("https://storage.azure.com");
    // SAFETY (set_var): set before the runtime and any other thread of this binary starts
    // reading the environment; this binary has one test.
    std::env::set_var("SSL_CERT_FILE", server.file("cert.pem"));
    std::env::set_var(
        "IDENTITY_ENDPOINT",
        format!("http://127.0.0.1:{port}/msi/token"),
    );
    std::env::set_var("IDENTITY_HEADER", IDENTITY_HEADER);
    for name in [
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_ID",
        "MSI_ENDPOINT",
    ] {
        std::env::remove_var(name);
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cfg = keyless(&server);
        let blob = AzureBlob::new(&cfg).expect("an Entra ID client");
        assert_eq!(blob.auth_kind(), "Entra ID");
        blob.create_container().await.expect("create container");

        let dir = tempfile::tempdir().unwrap();
        let large = dir.path().join("large.mp4");
        let sha = storage::write_file(&large, 10_000_000, 11).unwrap();
        let url = storage::azure_uploader(&cfg)
            .upload(&large, "rooms/entra.mp4")
            .await
            .unwrap();
        assert_eq!(
            url,
            format!(
                "https://127.0.0.1:{}/{}/videos/rooms/entra.mp4",
                server.port,
                storage::AZURITE_ACCOUNT
            )
        );
        let (body, content_type) = blob.get_blob("rooms/entra.mp4").await.unwrap();
        assert_eq!(storage::sha256(&body), sha, "downloaded bytes differ");
        assert_eq!(content_type.as_deref(), Some("video/mp4"));

        let asked = asked.lock().unwrap();
        assert!(asked.header_seen, "the identity header was sent");
        assert!(!asked.requests.is_empty());
        for request in &asked.requests {
            assert!(
                request.starts_with("GET /msi/token?")
                    && request.contains("resource=https%3A%2F%2Fstorage.azure.com"),
                "{request}"
            );
        }
    });

    // A token Storage does not accept (another audience): refused at once, not retried for the
    // budget, and the error says so.
    let (other_port, _) = identity_endpoint("https://management.azure.com");
    std::env::set_var(
        "IDENTITY_ENDPOINT",
        format!("http://127.0.0.1:{other_port}/msi/token"),
    );
    runtime.block_on(async {
        let cfg = keyless(&server);
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.mp4");
        storage::write_file(&small, 1000, 12).unwrap();
        let started = std::time::Instant::now();
        let e = storage::azure_uploader(&cfg)
            .upload(&small, "rooms/refused.mp4")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 401") || e.contains("HTTP 403"), "{e}");
        assert!(e.contains("rooms/refused.mp4"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20), "{e}");
    });
}
