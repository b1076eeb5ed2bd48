//! The health port of service mode: `/metrics` scraped before, during and after a recording
//! and a failed one (parsed with a Prometheus text parser), `/readyz`, and `/healthz` turning 503
//! when the service loop is wedged (through the recorder's test hook).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::livekit::{self, url_request, wait_health, RedisServer, Server};
use common::{assert_nothing_left, storage::free_port, Recorder, WebServer};
use nix::sys::signal::Signal;

/// GET `path` on the health port: (status code, body).
fn get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP body")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((code, body.to_owned()))
}

/// The scrape, parsed: every sample by its name and labels (`name{k="v",...}` sorted).
fn scrape(port: u16) -> Result<HashMap<String, f64>> {
    let (code, body) = get(port, "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).context("exposition does not parse")?;
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(f64::NAN)
}

const STARTED: &str = "livekit_recorder_recordings_started_total{mode=service}";
const COMPLETED: &str = "livekit_recorder_recordings_completed_total{mode=service}";
const FAILED: &str = "livekit_recorder_recordings_failed_total{mode=service,reason=recording}";
const ACTIVE: &str = "livekit_recorder_recordings_active{}";
const DURATION_COUNT: &str = "livekit_recorder_recording_duration_seconds_count{}";
const ACKED: &str = "livekit_recorder_reservations_acked_total{}";
const FRAMES: &str = "livekit_recorder_frames_captured_total{}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_by_exactly_one_per_recording_and_failure() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let daemon = livekit::start_daemon(&redis, &livekit::local_files_in_temp())?;
    let (rec, port) = (daemon.rec, daemon.health_port);
    assert_eq!(get(port, "/readyz")?.0, 200, "ready while available");
    assert_eq!(get(port, "/healthz")?, (200, "ok".to_owned()));
    let before = scrape(port)?;
    for key in [STARTED, COMPLETED, FAILED, ACTIVE, ACKED, FRAMES] {
        assert_eq!(value(&before, key), 0.0, "{key} before any recording");
    }
    assert!(value(&before, "process_resident_memory_bytes{}") > 1e6);
    assert!(before.contains_key("process_cpu_seconds_total{}"));

    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let dir = tempfile::tempdir()?;
    let id = lk.reserve().await?.expect("acked");
    lk.start(&id, url_request(&web.url("/"), &dir.path().join("a.mp4")))
        .await?
        .expect("started");
    wait_health(port, "recording", Duration::from_secs(10))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = scrape(port)?;
    assert_eq!(value(&during, STARTED), 1.0);
    assert_eq!(value(&during, ACTIVE), 1.0, "one recording in progress");
    assert_eq!(value(&during, ACKED), 1.0);
    assert!(
        value(&during, FRAMES) > 30.0,
        "frames are counted while recording"
    );
    assert_eq!(get(port, "/readyz")?.0, 503, "busy: not ready");
    lk.end(&id).await?.expect("ended");
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!(info.error, "");
    let after = scrape(port)?;
    assert_eq!(value(&after, COMPLETED), 1.0);
    assert_eq!(value(&after, ACTIVE), 0.0);
    assert_eq!(
        value(&after, DURATION_COUNT),
        1.0,
        "the histogram got its sample"
    );
    assert_eq!(value(&after, FAILED), 0.0);

    // A recording that fails: its page does not load.
    wait_health(port, "available", Duration::from_secs(10))?;
    let id = lk.reserve().await?.expect("acked");
    let closed = free_port()?;
    lk.start(
        &id,
        url_request(
            &format!("http://127.0.0.1:{closed}/"),
            &dir.path().join("b.mp4"),
        ),
    )
    .await?
    .expect("started");
    let info = results.next(Duration::from_secs(60)).await?;
    assert!(!info.error.is_empty());
    let failed = scrape(port)?;
    assert_eq!(value(&failed, STARTED), 2.0);
    assert_eq!(value(&failed, FAILED), 1.0, "one failure, reason recording");
    assert_eq!(value(&failed, COMPLETED), 1.0);
    assert_eq!(value(&failed, ACTIVE), 0.0);
    for (k, _) in failed
        .iter()
        .filter(|(k, _)| k.contains("livekit_recorder"))
    {
        assert!(
            !k.contains(&id) && !k.contains("127.0.0.1"),
            "no id or URL in {k}"
        );
    }

    let tag = rec.tag.clone();
    rec.signal(Signal::SIGTERM);
    assert_eq!(rec.wait(Duration::from_secs(15))?.code, Some(0));
    assert_nothing_left(&tag);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_turns_503_when_the_loop_is_wedged() -> Result<()> {
    let redis = RedisServer::start()?;
    let port = free_port()?;
    let config = format!(
        "redis: {{address: \"{}\"}}\nhealth_port: {port}\nlog_level: debug\n",
        redis.address()
    );
    let rec = Recorder::start(
        &[
            ("SERVICE_MODE", "1"),
            ("LIVEKIT_RECORDER_CONFIG", &config),
            ("LIVEKIT_RECORDER_TEST_WEDGE_AFTER_SECS", "4"),
        ],
        &[],
    )?;
    wait_health(port, "available", Duration::from_secs(15))?;
    assert_eq!(get(port, "/healthz")?, (200, "ok".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = get(port, "/healthz")?;
        if last.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        last,
        (503, "wedged".to_owned()),
        "a wedged loop is not alive"
    );
    // The bare state is still served on every other path, as the original did.
    assert_eq!(get(port, "/")?, (200, "available".to_owned()));
    let tag = rec.tag.clone();
    rec.signal(Signal::SIGKILL);
    let _ = rec.wait(Duration::from_secs(10));
    assert_nothing_left(&tag);
    Ok(())
}
