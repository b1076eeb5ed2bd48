//! The built-in layout templates (`web/`: speaker and grid, light and dark), embedded in the
//! binary at build time and served by the recorder itself on loopback, so that recording a room
//! depends on no third-party host. Used when neither the request's `base_url` nor the config's
//! `template_address` names another host.
//!
//! One server answers both address forms: the legacy recorder's `{base}/#/{layout}?url=&token=`
//! ([`base_url`], `index.html`, livekit-client 1.1.7) and livekit egress's
//! `{base}?layout=&token=&url=` ([`egress_base_url`], `egress.html`, livekit-client 2.x).

use std::net::SocketAddr;

use tokio::net::TcpListener;

mod files {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error("this build has no built-in templates (build them with `make web`) and no template_address is configured")]
    NotBuilt,
    #[error("could not serve the built-in templates: {0}")]
    Serve(std::io::Error),
}

/// Whether the templates were built into this binary.
pub fn built() -> bool {
    files::FILES.iter().any(|(name, _)| *name == "index.html")
}

/// The template base address (`http://127.0.0.1:<port>/#`) of this process's template server,
/// started on first use: the legacy recorder form, `{base}/{layout}?url=...&token=...`.
pub async fn base_url() -> Result<String, TemplatesError> {
    Ok(format!("http://{}/#", server_addr().await?))
}

/// Starts the template server when this binary has templates and `configured` (the config's
/// template address) leaves the built-in ones in use: the legacy base, or `None`.
pub async fn start_if_needed(configured: &str) -> Option<String> {
    if !configured.is_empty() || !built() {
        return None;
    }
    match base_url().await {
        Ok(base) => Some(base),
        Err(e) => {
            tracing::warn!(error = %e, "built-in templates unavailable");
            None
        }
    }
}

/// The egress page (`http://127.0.0.1:<port>/egress.html`) on the same server as [`base_url`]:
/// livekit egress's room composite form, the base plus the query `layout`, `token`, `url`
/// (added as Go's `url.Values.Encode` does). The page follows layout changes made through the
/// recorder participant's metadata (`{"layout":"<name>"}`, livekit-server's UpdateLayout).
pub async fn egress_base_url() -> Result<String, TemplatesError> {
    Ok(format!("http://{}/{EGRESS_PAGE}", server_addr().await?))
}

/// The egress page's file name in `web/dist`.
const EGRESS_PAGE: &str = "egress.html";

/// This process's template server, once started.
static SERVER: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();

/// Where this process's template server listens, if it runs: the network policy keeps it
/// reachable whatever `deny_networks` says.
pub fn serving() -> Option<SocketAddr> {
    SERVER.get().copied()
}

/// This process's template server, started on first use.
async fn server_addr() -> Result<SocketAddr, TemplatesError> {
    if !built() {
        return Err(TemplatesError::NotBuilt);
    }
    SERVER
        .get_or_try_init(|| async {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(TemplatesError::Serve)?;
            let addr = listener.local_addr().map_err(TemplatesError::Serve)?;
            tokio::spawn(serve(listener));
            tracing::debug!(%addr, "serving the built-in templates");
            Ok::<_, TemplatesError>(addr)
        })
        .await
        .copied()
}

/// Serves the templates on `listener`: the files by name under any path (so `/egress.html?...`
/// is the egress page and `/speaker-dark/app.js` an asset), `index.html` for every other path
/// (the legacy layouts route on the hash or the path).
pub async fn serve(listener: TcpListener) {
    let app =
        axum::Router::new().fallback(|uri: axum::http::Uri| async move { respond(uri.path()) });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "template server failed");
    }
}

fn respond(path: &str) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let name = path.rsplit('/').next().unwrap_or_default();
    let (name, body) = files::FILES
        .iter()
        .find(|(n, _)| *n == name && *n != "index.html")
        .or_else(|| files::FILES.iter().find(|(n, _)| *n == "index.html"))
        .map(|(n, b)| (*n, *b))
        .unwrap_or((
            "index.html",
            b"<div class=\"error\">templates not built</div>",
        ));
    let kind = match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_built_in() {
        // `make test` builds web/ first; a bare `cargo test` without it must say so here.
        assert!(
            built(),
            "web/dist was not built into this binary: run `make web`"
        );
        let names: Vec<&str> = files::FILES.iter().map(|(n, _)| *n).collect();
        for want in ["index.html", "app.js", "app.css", EGRESS_PAGE, "egress.js"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    /// One runtime for every test that uses the process-wide server: a `#[tokio::test]` runtime
    /// would take the server task down with it when its test ends, under the other tests' feet.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        });
        RT.block_on(f)
    }

    #[test]
    fn every_layout_path_gets_the_page_and_assets_resolve_anywhere() {
        block_on(every_layout_path());
    }

    async fn every_layout_path() {
        let base = base_url().await.unwrap();
        assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/#"));
        let root = base.trim_end_matches('#');
        let index = files::FILES
            .iter()
            .find(|(n, _)| *n == "index.html")
            .unwrap()
            .1;
        for (path, body, kind) in [
            ("", index, "text/html"),
            ("speaker-dark", index, "text/html"),
            ("grid-light?url=x&token=y", index, "text/html"),
            (
                "app.js",
                files::FILES.iter().find(|(n, _)| *n == "app.js").unwrap().1,
                "text/javascript",
            ),
            (
                "speaker-dark/app.css",
                files::FILES
                    .iter()
                    .find(|(n, _)| *n == "app.css")
                    .unwrap()
                    .1,
                "text/css",
            ),
        ] {
            let (head, got) = get(&format!("{root}{path}")).await;
            assert!(head.contains("200"), "{path}: {head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("content-type: {kind}")),
                "{path}: {head}"
            );
            assert_eq!(got, body, "{path}");
        }
        // One server per process.
        assert_eq!(base_url().await.unwrap(), base);
    }

    #[test]
    fn the_egress_page_is_served_by_the_same_server() {
        block_on(egress_page());
    }

    async fn egress_page() {
        let file = |name: &str| files::FILES.iter().find(|(n, _)| *n == name).unwrap().1;
        let egress = egress_base_url().await.unwrap();
        let legacy = base_url().await.unwrap();
        assert_eq!(
            egress,
            format!("{}{EGRESS_PAGE}", legacy.trim_end_matches('#')),
            "one server for both forms"
        );
        assert!(egress.starts_with("http://127.0.0.1:") && egress.ends_with("/egress.html"));
        let page = file(EGRESS_PAGE);
        assert_ne!(page, file("index.html"));
        // The address livekit egress builds: the base plus layout, token, url (keys sorted).
        for (url, body, kind) in [
            (
                format!("{egress}?layout=speaker&token=eyJ.a.b&url=ws%3A%2F%2F127.0.0.1%3A7880"),
                page,
                "text/html",
            ),
            (
                format!("{egress}?a=1&layout=grid-light&token=t&url=ws%3A%2F%2Fh"),
                page,
                "text/html",
            ),
            (egress.clone(), page, "text/html"),
            (
                egress.replace(EGRESS_PAGE, "egress.js"),
                file("egress.js"),
                "text/javascript",
            ),
            (
                egress.replace(EGRESS_PAGE, "app.css"),
                file("app.css"),
                "text/css",
            ),
        ] {
            let (head, got) = get(&url).await;
            assert!(head.contains("200"), "{url}: {head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("content-type: {kind}")),
                "{url}: {head}"
            );
            assert_eq!(got, body, "{url}");
        }
        let html = String::from_utf8_lossy(page);
        assert!(
            html.contains("egress.js") && html.contains("app.css"),
            "{html}"
        );
        assert_eq!(egress_base_url().await.unwrap(), egress);
    }

    async fn get(url: &str) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&out[..split]).into_owned(),
            out[split + 4..].to_vec(),
        )
    }
}
