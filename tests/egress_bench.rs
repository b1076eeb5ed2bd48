//! Egress worker latency benchmark, run by `scripts/bench.sh` (`make bench`); ignored by
//! `cargo test`. It prints figures and asserts only that it ran (every egress started, went
//! ACTIVE and completed; the worker exited cleanly).
//!
//!   cargo test --test egress_bench -- --ignored --nocapture
//!
//! One worker (`EGRESS_MODE=1`, the binary cargo built for the tests) on a private redis-server,
//! driven by the livekit-server double of `common::egress`, all on loopback:
//!
//! 1. idle claims: `BENCH_EGRESS_CLAIMS` (default 50) StartEgress requests to the idle worker,
//!    each released at once by a ClaimResponse naming another server (livekit-server chose
//!    another worker): request publish -> the worker's ClaimRequest arrival;
//! 2. `BENCH_EGRESS_N` (default 5) web egresses one after another: a static local page to a
//!    local MP4, 1280x720 preset, `BENCH_EGRESS_SECONDS` (default 3) s after ACTIVE, StopEgress,
//!    wait for COMPLETE. Per egress: publish -> ClaimRequest, ClaimRequest -> Response (includes
//!    the node's selection wait), choice (ClaimResponse) -> Response, publish -> Response,
//!    publish -> IOInfo UpdateEgress(ACTIVE) arrival, StopEgress publish -> COMPLETE arrival.
//!
//! Prints a table (p50 / p95 / max, linear interpolation) and one `EGRESS_BENCH_JSON {..}` line
//! with every sample, which scripts/bench/bench.py turns into rows of its table.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::egress::wire::rpc::{self, start_egress_request::Request as Source};
use common::egress::wire::ClaimResponse;
use common::egress::{
    is_final, new_id, now_ns, rclaim_channel, req_channel, CallOptions, EgressServer,
    EGRESS_HANDLER, EGRESS_INTERNAL,
};
use common::livekit::RedisServer;
use common::{assert_nothing_left, Recorder, WebServer};
use livekit_protocol as lk;
use livekit_protocol::{
    web_egress_request, EgressStatus, EncodedFileOutput, EncodedFileType, EncodingOptionsPreset,
};

const READY: &str = "egress worker ready";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle claim may take before the bench gives up on it.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// A page that does not change: the bench measures the worker, not the page.
const STATIC_PAGE: &str = r#"<!doctype html><html><head><title>egress bench</title></head>
<body style="margin:0;background:#1d3557;color:#f1faee;font:64px sans-serif">
<div style="padding:200px 120px">livekit-recorder egress bench</div></body></html>"#;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn config(redis: &RedisServer, local_dir: &Path) -> String {
    // 2 cores x 0.8 = 1.6 and a web egress costs 1: one recording at a time on the bench VM.
    format!(
        "log_level: info
api_key: devkey
api_secret: \"egress-bench-secret-0123456789abcdefXYZ\"
ws_url: \"ws://127.0.0.1:7880\"
redis: {{address: \"{}\"}}
cpu_cost: {{max_cpu_utilization: 0.8, room_composite_cpu_cost: 1.0, web_cpu_cost: 1.0}}
file_output: {{local_dir: \"{}\"}}
",
        redis.address(),
        local_dir.display()
    )
}

fn web_request(egress_id: &str, url: &str, filepath: &str) -> rpc::StartEgressRequest {
    rpc::StartEgressRequest {
        egress_id: egress_id.to_owned(),
        request: Some(Source::Web(lk::WebEgressRequest {
            url: url.to_owned(),
            file_outputs: vec![EncodedFileOutput {
                file_type: EncodedFileType::Mp4 as i32,
                filepath: filepath.to_owned(),
                ..Default::default()
            }],
            options: Some(web_egress_request::Options::Preset(
                EncodingOptionsPreset::H264720p30 as i32,
            )),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `later - earlier` in ms; an error when either is missing.
fn span(earlier: Option<Instant>, later: Option<Instant>, what: &str) -> Result<f64> {
    match (earlier, later) {
        (Some(a), Some(b)) => Ok(ms(b.saturating_duration_since(a))),
        _ => bail!("no timestamps for {what}"),
    }
}

/// Linear interpolation between closest ranks (as scripts/bench/bench.py's `pct`).
fn pct(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let k = (v.len() - 1) as f64 * q;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (k - lo as f64)
}

#[derive(Default, serde::Serialize)]
struct Samples {
    /// Idle worker: StartEgress publish -> ClaimRequest arrival (ms).
    idle_claim_ms: Vec<f64>,
    /// Recordings: StartEgress publish -> ClaimRequest arrival (ms).
    claim_ms: Vec<f64>,
    /// ClaimRequest arrival -> StartEgress Response arrival (ms).
    claim_to_response_ms: Vec<f64>,
    /// The node's ClaimResponse (its choice) -> StartEgress Response arrival (ms).
    choice_to_response_ms: Vec<f64>,
    /// StartEgress publish -> Response arrival (ms).
    start_response_ms: Vec<f64>,
    /// StartEgress publish -> IOInfo UpdateEgress(ACTIVE) arrival (ms).
    start_to_active_ms: Vec<f64>,
    /// StopEgress publish -> IOInfo update with COMPLETE arrival (ms).
    stop_to_complete_ms: Vec<f64>,
    /// StartEgress attempts beyond the first (should be 0).
    retries: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench.sh"]
async fn egress_worker_latency() -> Result<()> {
    let n: usize = env_num("BENCH_EGRESS_N", 5).max(1);
    let record_secs: f64 = env_num("BENCH_EGRESS_SECONDS", 3.0);
    let idle_claims: usize = env_num("BENCH_EGRESS_CLAIMS", 50);
    let t_all = Instant::now();

    let redis = RedisServer::start()?;
    let web = WebServer::start(&[("/static.html", STATIC_PAGE)])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&redis, dir.path());
    let mut rec = Recorder::start(
        &[
            ("EGRESS_MODE", "1"),
            ("LIVEKIT_RECORDER_CONFIG", &cfg),
            ("RUST_LOG", "livekit_recorder=info"),
        ],
        &[],
    )?;
    let spawned = Instant::now();
    tokio::task::block_in_place(|| rec.wait_for_log(READY, READY_TIMEOUT))?;
    let ready_ms = ms(spawned.elapsed());
    // The worker logs READY once subscribed; wait until Redis says so too.
    lk.wait_numsub(
        &req_channel(EGRESS_INTERNAL, "StartEgress", ""),
        |k| k >= 1,
        Duration::from_secs(10),
    )
    .await?;

    let mut s = Samples::default();
    let url = web.url("/static.html");

    // 1. Idle claims: the worker claims, the node picks someone else.
    let rclaim = rclaim_channel(EGRESS_INTERNAL, "StartEgress", "");
    for _ in 0..idle_claims {
        let raw = prost::Message::encode_to_vec(&web_request(&new_id("EG_"), &url, "idle.mp4"));
        let expiry = now_ns() + 10_000_000_000;
        let rid = lk
            .send_request(EGRESS_INTERNAL, "StartEgress", "", raw, expiry)
            .await?;
        let deadline = Instant::now() + CLAIM_TIMEOUT;
        let claim = loop {
            if let Some(c) = lk.claims(&rid).into_iter().next() {
                break c;
            }
            if Instant::now() >= deadline {
                bail!("the idle worker did not claim {rid} within {CLAIM_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        s.idle_claim_ms.push(span(
            lk.call_record(&rid).sent,
            Some(claim.at),
            "idle claim",
        )?);
        let elsewhere = ClaimResponse {
            request_id: rid.clone(),
            server_id: new_id("SRV_"),
        };
        lk.publish_sealed(&rclaim, &elsewhere).await?;
        if !lk.responses(&rid).is_empty() {
            bail!("the worker answered a StartEgress it was not chosen for");
        }
    }

    // 2. Recordings, one after another.
    for i in 0..n {
        let id = new_id("EG_");
        let out = lk
            .start_egress_with(
                web_request(&id, &url, &format!("bench-{i}.mp4")),
                CallOptions::start(),
            )
            .await;
        let info = out
            .result
            .with_context(|| format!("StartEgress {} of {n}", i + 1))?;
        if info.status() != EgressStatus::EgressStarting {
            bail!("StartEgress answered {:?}", info.status());
        }
        s.retries += out.request_ids.len() - 1;
        let first = lk.call_record(&out.request_ids[0]);
        let last = lk.call_record(out.request_ids.last().expect("an attempt"));
        let claim = last.claims.first().map(|c| c.at);
        let response = last.responses.first().map(|r| r.at);
        s.claim_ms
            .push(span(last.sent, claim, "StartEgress publish -> claim")?);
        s.claim_to_response_ms
            .push(span(claim, response, "claim -> response")?);
        s.choice_to_response_ms
            .push(span(last.chosen_at, response, "choice -> response")?);
        s.start_response_ms.push(span(
            first.sent,
            response,
            "StartEgress publish -> response",
        )?);

        lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
            .await?;
        let active = lk
            .updates(&id)
            .into_iter()
            .find(|u| u.status() == EgressStatus::EgressActive)
            .map(|u| u.arrived);
        s.start_to_active_ms
            .push(span(first.sent, active, "StartEgress publish -> ACTIVE")?);

        tokio::time::sleep(Duration::from_secs_f64(record_secs)).await;
        let stop = lk.stop_egress_with(&id, CallOptions::handler()).await;
        stop.result
            .with_context(|| format!("StopEgress {} of {n}", i + 1))?;
        let done = lk.wait_final(&id, END_TIMEOUT).await?;
        if done.status() != EgressStatus::EgressComplete {
            bail!(
                "egress {} of {n} ended {:?}: {}",
                i + 1,
                done.status(),
                done.error
            );
        }
        let stop_sent = lk.call_record(&stop.request_ids[0]).sent;
        let complete = lk
            .updates(&id)
            .into_iter()
            .find(|u| is_final(u.status()))
            .map(|u| u.arrived);
        s.stop_to_complete_ms
            .push(span(stop_sent, complete, "StopEgress -> COMPLETE")?);
        // The worker is idle again once the egress's handler topics are released.
        for m in ["StopEgress", "UpdateStream"] {
            lk.wait_numsub(
                &req_channel(EGRESS_HANDLER, m, &id),
                |k| k == 0,
                Duration::from_secs(10),
            )
            .await?;
        }
    }

    let tag = rec.tag.clone();
    rec.signal(nix::sys::signal::Signal::SIGTERM);
    let done = tokio::task::block_in_place(|| rec.wait(Duration::from_secs(60)))?;
    if done.code != Some(0) {
        bail!("worker exit {:?}:\n{}", done.code, done.stderr);
    }
    assert_nothing_left(&tag);

    let row = |name: &str, xs: &[f64], unit: f64, label: &str| {
        println!(
            "| {name} | {} | p50 {:.2} / p95 {:.2} / max {:.2} {label} |",
            xs.len(),
            pct(xs, 0.5) / unit,
            pct(xs, 0.95) / unit,
            xs.iter().copied().fold(f64::NAN, f64::max) / unit,
        );
    };
    println!();
    println!(
        "egress worker bench: {n} web egresses of a static page (720p30 preset, {record_secs} s each), \
         {idle_claims} idle claims; worker ready within {:.0} ms of spawn (log polled every 50 ms); {} StartEgress retries; took {:.1} s",
        ready_ms,
        s.retries,
        t_all.elapsed().as_secs_f64()
    );
    println!();
    println!("| measure | samples | figures |");
    println!("| --- | --- | --- |");
    row(
        "idle worker: StartEgress publish → ClaimRequest",
        &s.idle_claim_ms,
        1.0,
        "ms",
    );
    row("StartEgress publish → ClaimRequest", &s.claim_ms, 1.0, "ms");
    row(
        "StartEgress ClaimRequest → Response (incl. selection wait)",
        &s.claim_to_response_ms,
        1.0,
        "ms",
    );
    row(
        "StartEgress ClaimResponse (choice) → Response",
        &s.choice_to_response_ms,
        1.0,
        "ms",
    );
    row(
        "StartEgress publish → Response",
        &s.start_response_ms,
        1.0,
        "ms",
    );
    row(
        "StartEgress publish → UpdateEgress(ACTIVE)",
        &s.start_to_active_ms,
        1000.0,
        "s",
    );
    row(
        "StopEgress publish → COMPLETE",
        &s.stop_to_complete_ms,
        1000.0,
        "s",
    );
    println!();
    println!(
        "EGRESS_BENCH_JSON {}",
        serde_json::json!({
            "n": n,
            "record_seconds": record_secs,
            "idle_claims": idle_claims,
            "ready_ms": ready_ms,
            "samples": s,
        })
    );
    Ok(())
}
