//! The built-in layout templates (`web/`: speaker and grid, light and dark), embedded in the
//! binary at build time and served by the recorder itself on loopback, so that recording a room
//! depends on no third-party host. Used when neither the request's `base_url` nor the config's
//! `template_address` names another host.

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
/// started on first use.
pub async fn base_url() -> Result<String, TemplatesError> {
    static SERVER: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();
    if !built() {
        return Err(TemplatesError::NotBuilt);
    }
    let addr = SERVER
        .get_or_try_init(|| async {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(TemplatesError::Serve)?;
            let addr = listener.local_addr().map_err(TemplatesError::Serve)?;
            tokio::spawn(serve(listener));
            tracing::debug!(%addr, "serving the built-in templates");
            Ok::<_, TemplatesError>(addr)
        })
        .await?;
    Ok(format!("http://{addr}/#"))
}

/// Serves the templates on `listener`: the assets by file name under any path, `index.html`
/// for every other path (the layouts route on the hash or the path).
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
        for want in ["index.html", "app.js", "app.css"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[tokio::test]
    async fn every_layout_path_gets_the_page_and_assets_resolve_anywhere() {
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
