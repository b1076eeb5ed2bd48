//! Template input end to end: local pages that behave like the layout templates (hash routing,
//! url and token from the query, START_RECORDING / END_RECORDING on the console, `div.error`).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;

const SECRET: &str = "test-secret-test-secret-test-secret";
const WS_URL: &str = "ws://127.0.0.1:7880";

/// A template page: reports what it was given, animates, and runs `script`.
fn page(script: &str) -> String {
    format!(
        r#"<!doctype html><html><body style="margin:0;background:#000">
<canvas id="c" style="width:100vw;height:100vh;display:block"></canvas>
<script>
const [layout, query] = location.hash.slice(1).split('?');
const params = new URLSearchParams(query || '');
fetch('/report?layout=' + encodeURIComponent(layout) + '&url=' + encodeURIComponent(params.get('url'))
      + '&token=' + encodeURIComponent(params.get('token')));
const c = document.getElementById('c'), g = c.getContext('2d');
c.width = innerWidth; c.height = innerHeight;
(function draw(t) {{ g.fillStyle = `hsl(${{t / 10 % 360}},60%,40%)`; g.fillRect(0, 0, c.width, c.height);
  requestAnimationFrame(draw); }})(0);
{script}
</script></body></html>"#
    )
}

fn config(web: &WebServer, base: &str, extra: &str) -> String {
    format!(
        "api_key: test-key\napi_secret: {SECRET}\nws_url: {WS_URL}\ntemplate_address: {}\nlog_level: debug\n{extra}",
        web.url(base)
    )
}

fn request(file: &std::path::Path) -> String {
    format!(
        r#"{{"template": {{"layout": "speaker-dark", "room_name": "my-room"}}, "filepath": "{}", "options": {{"width": 640, "height": 360}}}}"#,
        file.display()
    )
}

#[test]
fn records_only_between_start_and_end_and_exits_by_itself() -> Result<()> {
    let web = WebServer::start(&[(
        "/tpl/",
        &page(
            "setTimeout(() => console.log('START_RECORDING'), 1500);
             setTimeout(() => console.log('END_RECORDING'), 6500);",
        ),
    )])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("room.mp4");
    let rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", &config(&web, "/tpl/#", "")),
            ("RECORDING_REQUEST", &request(&file)),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(40))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    let p = probe(&file)?;
    assert!(
        (4.0..=6.5).contains(&p.video_duration),
        "a 5 s span gave {} s",
        p.video_duration
    );
    assert_eq!(decode_errors(&file)?, "");

    // The page got the layout, the server address and a token that verifies with the secret.
    let report = web
        .reports()
        .into_iter()
        .next()
        .expect("the page reported its parameters");
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(report.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["layout"], "/speaker-dark");
    assert_eq!(q["url"], WS_URL);
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("test-key", SECRET)
        .verify(&q["token"])
        .expect("the token verifies");
    assert_eq!(claims.video.room, "my-room");
    assert!(claims.video.recorder && claims.video.hidden && claims.video.room_join);
    // The token never reaches the log.
    assert!(!done.stderr.contains(&q["token"]), "token logged");
    Ok(())
}

#[test]
fn repeated_markers_are_harmless() -> Result<()> {
    let web = WebServer::start(&[(
        "/twice/",
        &page(
            "setTimeout(() => console.log('START_RECORDING'), 1000);
             setTimeout(() => console.info('START_RECORDING'), 1300);
             setTimeout(() => console.warn('END_RECORDING'), 4000);
             setTimeout(() => console.error('END_RECORDING'), 4100);",
        ),
    )])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("twice.mp4");
    let rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", &config(&web, "/twice/#", "")),
            ("RECORDING_REQUEST", &request(&file)),
        ],
        &[],
    )?;
    let done = rec.wait(Duration::from_secs(40))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let p = probe(&file)?;
    assert!(
        (2.0..=4.0).contains(&p.video_duration),
        "{} s",
        p.video_duration
    );
    Ok(())
}

#[test]
fn a_page_that_never_starts_fails_within_the_start_timeout() -> Result<()> {
    let web = WebServer::start(&[("/never/", &page(""))])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("never.mp4");
    let rec = Recorder::start(
        &[
            (
                "LIVEKIT_RECORDER_CONFIG",
                &config(&web, "/never/#", "start_timeout: 3"),
            ),
            ("RECORDING_REQUEST", &request(&file)),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(30))?;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.took < Duration::from_secs(15), "took {:?}", done.took);
    assert_eq!(
        done.result()?["error"],
        "template did not log START_RECORDING within 3s"
    );
    assert_nothing_left(&tag);
    assert!(!file.exists() || std::fs::metadata(&file)?.len() == 0);
    Ok(())
}

#[test]
fn div_error_becomes_the_recording_error() -> Result<()> {
    let web = WebServer::start(&[
        (
            "/error-now/",
            "<!doctype html><body><div class=\"error\">missing required params url and token</div></body>",
        ),
        (
            "/error-later/",
            &page(
                "setTimeout(() => { document.body.innerHTML =
                   '<div class=\"error\">could not connect: connection refused</div>'; }, 1500);",
            ),
        ),
    ])?;
    for (base, want) in [
        ("/error-now/#", "missing required params url and token"),
        ("/error-later/#", "could not connect: connection refused"),
    ] {
        let dir = tempfile::tempdir()?;
        let rec = Recorder::start(
            &[
                (
                    "LIVEKIT_RECORDER_CONFIG",
                    &config(&web, base, "start_timeout: 20"),
                ),
                ("RECORDING_REQUEST", &request(&dir.path().join("e.mp4"))),
            ],
            &[],
        )?;
        let tag = rec.tag.clone();
        let done = rec.wait(Duration::from_secs(30))?;
        assert_eq!(done.code, Some(1), "{}", done.stderr);
        assert!(
            done.took < Duration::from_secs(12),
            "{base}: took {:?}",
            done.took
        );
        assert_eq!(done.result()?["error"], want);
        assert_nothing_left(&tag);
    }
    Ok(())
}

#[test]
fn a_url_request_ignores_markers() -> Result<()> {
    // URL input records from the start and only a signal ends it, whatever the page logs.
    let web = WebServer::start(&[(
        "/markers.html",
        &page(
            "console.log('END_RECORDING'); setTimeout(() => console.log('END_RECORDING'), 1000);",
        ),
    )])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("url.mp4");
    let req = format!(
        r#"{{"url": "{}", "filepath": "{}", "options": {{"width": 640, "height": 360}}}}"#,
        web.url("/markers.html"),
        file.display()
    );
    let mut rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", "log_level: debug"),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    rec.wait_for_log("recording", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        rec.child.try_wait()?.is_none(),
        "END_RECORDING ended a URL recording"
    );
    rec.signal(nix::sys::signal::Signal::SIGTERM);
    let done = rec.wait(Duration::from_secs(20))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(probe(&file)?.video_duration >= 3.0);
    Ok(())
}

#[test]
fn without_a_template_address_the_recorder_serves_its_own_templates() -> Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for (layout, ws_url, want) in [
        (
            "speaker-dark",
            format!("ws://127.0.0.1:{closed}"),
            "could not connect",
        ),
        (
            "grid-light",
            String::new(),
            "missing required params url and token",
        ),
    ] {
        let dir = tempfile::tempdir()?;
        let config = format!(
            "api_key: test-key\napi_secret: {SECRET}\nws_url: \"{ws_url}\"\nstart_timeout: 30\nlog_level: debug"
        );
        let req = format!(
            r#"{{"template": {{"layout": "{layout}", "room_name": "r"}}, "filepath": "{}/t.mp4", "options": {{"width": 640, "height": 360}}}}"#,
            dir.path().display()
        );
        let rec = Recorder::start(
            &[
                ("LIVEKIT_RECORDER_CONFIG", &config),
                ("RECORDING_REQUEST", &req),
            ],
            &[],
        )?;
        let tag = rec.tag.clone();
        let done = rec.wait(Duration::from_secs(40))?;
        assert_eq!(done.code, Some(1), "{layout}: {}", done.stderr);
        assert!(
            done.took < Duration::from_secs(25),
            "{layout}: took {:?}",
            done.took
        );
        let error = done.result()?["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with(want), "{layout}: {error}");
        // The page came from the recorder's own loopback server.
        assert!(
            done.stderr.contains("opening page url=http://127.0.0.1:")
                && done.stderr.contains(&format!("/#/{layout}?")),
            "{layout}: not the built-in server:\n{}",
            done.stderr
        );
        assert_nothing_left(&tag);
    }
    Ok(())
}
