//! Egress worker mode end to end: the real binary with `EGRESS_MODE=1` against a real
//! redis-server, driven by `common::egress::EgressServer`, an independent double of
//! livekit-server's psrpc side (spec/egress.md §1-§3). The recording tests use the CPU: run them
//! one at a time (`--test-threads=1`). The first three tests need no worker.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine;
use common::egress::wire::rpc::{self, start_egress_request::Request as Source};
use common::egress::wire::{self, ClaimRequest, ClaimResponse, Request, Response};
use common::egress::{
    claim_channel, collapse, new_id, now_ns, rank, rclaim_channel, req_channel, res_channel,
    CallOptions, EgressServer, Flavor, IoMode, Outcome, EGRESS_HANDLER, EGRESS_INTERNAL, IO_INFO,
};
use common::livekit::RedisServer;
use common::*;
use futures::StreamExt;
use livekit_protocol as lk;
use livekit_protocol::{
    egress_info, encoded_file_output, web_egress_request, EgressInfo, EgressStatus,
    EncodedFileOutput, EncodedFileType, EncodingOptionsPreset, FileInfo, StreamOutput,
    StreamProtocol,
};
use prost::Message;

const API_KEY: &str = "devkey";
const API_SECRET: &str = "egress-test-secret-0123456789abcdefXYZ";
const WS_URL: &str = "ws://127.0.0.1:7880";
/// What the worker logs once it is subscribed.
const READY: &str = "egress worker ready";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// From StartEgress to EGRESS_ACTIVE (Chromium's start on a busy 2-core machine).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// From the end to the final update (EOS, finalising, upload).
const END_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The double's own wire format, no worker needed.

#[test]
fn envelope_bytes_match_hand_derived_fixtures() {
    // ClaimRequest{request_id: "REQ_a", server_id: "SRV_b", affinity: 0.5}:
    // 0a 05 "REQ_a" | 12 05 "SRV_b" | 1d <0.5f32 LE = 00 00 00 3f>
    let claim = ClaimRequest {
        request_id: "REQ_a".into(),
        server_id: "SRV_b".into(),
        affinity: 0.5,
    };
    let mut value = vec![0x0a, 5];
    value.extend_from_slice(b"REQ_a");
    value.extend_from_slice(&[0x12, 5]);
    value.extend_from_slice(b"SRV_b");
    value.extend_from_slice(&[0x1d, 0x00, 0x00, 0x00, 0x3f]);
    assert_eq!(claim.encode_to_vec(), value);
    // Msg{type_url (41 bytes), value (19 bytes)}, channel empty and so absent.
    let type_url = b"type.googleapis.com/internal.ClaimRequest";
    assert_eq!(type_url.len(), 0x29);
    let mut sealed = vec![0x0a, 0x29];
    sealed.extend_from_slice(type_url);
    sealed.extend_from_slice(&[0x12, 0x13]);
    sealed.extend_from_slice(&value);
    assert_eq!(wire::seal(&claim), sealed);
    assert_eq!(wire::open::<ClaimRequest>(&sealed), Some(claim));
    // The wrong type does not open.
    assert_eq!(wire::open::<ClaimResponse>(&sealed), None);
    assert_eq!(wire::open::<Request>(b"\xff\xfe\x00garbage"), None);

    // Request{request_id: "REQ_x", client_id: "CLI_y", sent_at: 1, expiry: 300, raw_request: 01 02}:
    // 0a 05 "REQ_x" | 12 05 "CLI_y" | 18 01 | 20 ac 02 | 42 02 01 02 (multi false: absent)
    let req = Request {
        request_id: "REQ_x".into(),
        client_id: "CLI_y".into(),
        sent_at: 1,
        expiry: 300,
        raw_request: vec![1, 2],
        ..Request::default()
    };
    let mut want = vec![0x0a, 5];
    want.extend_from_slice(b"REQ_x");
    want.extend_from_slice(&[0x12, 5]);
    want.extend_from_slice(b"CLI_y");
    want.extend_from_slice(&[0x18, 0x01, 0x20, 0xac, 0x02, 0x42, 0x02, 0x01, 0x02]);
    assert_eq!(req.encode_to_vec(), want);

    // Response{request_id: "REQ_x", server_id: "SRV_z", error: "e", code: "unavailable"}:
    // 0a 05 .. | 12 05 .. | 2a 01 "e" | 32 0b "unavailable"
    let res = Response {
        request_id: "REQ_x".into(),
        server_id: "SRV_z".into(),
        error: "e".into(),
        code: "unavailable".into(),
        ..Response::default()
    };
    let mut want = vec![0x0a, 5];
    want.extend_from_slice(b"REQ_x");
    want.extend_from_slice(&[0x12, 5]);
    want.extend_from_slice(b"SRV_z");
    want.extend_from_slice(&[0x2a, 1, b'e', 0x32, 11]);
    want.extend_from_slice(b"unavailable");
    assert_eq!(res.encode_to_vec(), want);

    // rpc.StartEgressRequest{egress_id: "EG_x", web: {url: "u"}, room_name: "r"}:
    // 0a 04 "EG_x" | 5a 03 (0a 01 "u") | 92 01 01 "r"   (field 11 = 0x5a, field 18 = 0x92 0x01)
    let start = rpc::StartEgressRequest {
        egress_id: "EG_x".into(),
        request: Some(Source::Web(lk::WebEgressRequest {
            url: "u".into(),
            ..Default::default()
        })),
        room_name: "r".into(),
        ..Default::default()
    };
    let mut want = vec![0x0a, 4];
    want.extend_from_slice(b"EG_x");
    want.extend_from_slice(&[0x5a, 3, 0x0a, 1, b'u', 0x92, 0x01, 1, b'r']);
    assert_eq!(start.encode_to_vec(), want);
    // room_composite is field 5.
    let rc = rpc::StartEgressRequest {
        request: Some(Source::RoomComposite(
            lk::RoomCompositeEgressRequest::default(),
        )),
        ..Default::default()
    };
    assert_eq!(rc.encode_to_vec(), vec![0x2a, 0]);

    // ListActiveEgressResponse{egress_ids: ["a", "b"]}: 0a 01 "a" 0a 01 "b"
    let list = rpc::ListActiveEgressResponse {
        egress_ids: vec!["a".into(), "b".into()],
    };
    assert_eq!(list.encode_to_vec(), b"\x0a\x01a\x0a\x01b");
}

#[test]
fn channel_names_follow_psrpc() {
    assert_eq!(
        req_channel(EGRESS_INTERNAL, "StartEgress", ""),
        "EgressInternal|StartEgress|REQ"
    );
    assert_eq!(
        rclaim_channel(EGRESS_INTERNAL, "StartEgress", ""),
        "EgressInternal|StartEgress|RCLAIM"
    );
    assert_eq!(
        req_channel(EGRESS_HANDLER, "StopEgress", "EG_abc123"),
        "EgressHandler|StopEgress|EG_abc123|REQ"
    );
    assert_eq!(claim_channel(IO_INFO, "CLI_x"), "IOInfo|CLI_x|CLAIM");
    assert_eq!(res_channel(IO_INFO, "CLI_x"), "IOInfo|CLI_x|RES");
    // Sanitising: '-' '.' '/' 'ü' below U+10000, an emoji above.
    assert_eq!(
        req_channel(EGRESS_HANDLER, "StopEgress", "EG-a.b/ü😀"),
        "EgressHandler|StopEgress|EGu+002dau+002ebu+002fu+00fcU+0001f600|REQ"
    );
    let id = new_id("REQ_");
    assert_eq!(id.len(), 16);
    assert!(id[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
}

/// The double against a worker written by hand from the spec, on a real Redis: StartEgress with
/// a 0.5 claim, the worker's CreateEgress, and IOInfo switched off and on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_speaks_psrpc_to_a_hand_rolled_worker() -> Result<()> {
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let fake = tokio::spawn(fake_worker(redis.url(), ready_tx));
    let fake_server = ready_rx.await?;

    let id = new_id("EG_");
    let req = rpc::StartEgressRequest {
        egress_id: id.clone(),
        request: Some(Source::Web(lk::WebEgressRequest {
            url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let out = lk.start_egress_with(req, CallOptions::start()).await;
    let info = out.result?;
    assert_eq!(info.egress_id, id);
    let rec = lk.call_record(&out.request_ids[0]);
    assert_eq!(rec.claims.len(), 1);
    assert_eq!(rec.claims[0].affinity, 0.5);
    assert_eq!(rec.chosen.as_deref(), Some(fake_server.as_str()));
    assert_eq!(rec.responses.len(), 1);
    assert_eq!(lk.creates(&id), 1);
    assert_eq!(lk.statuses(&id), [EgressStatus::EgressStarting]);
    fake.await??;

    let io_req = req_channel(IO_INFO, "CreateEgress", "");
    assert_eq!(lk.numsub(&io_req).await?, 1);
    lk.set_io_mode(IoMode::Down).await?;
    assert_eq!(lk.numsub(&io_req).await?, 0);
    lk.set_io_mode(IoMode::Up).await?;
    assert_eq!(lk.numsub(&io_req).await?, 1);
    // Nobody serves EgressHandler here: the call ends unavailable after its attempts.
    let err = lk
        .stop_egress_with(&id, CallOptions::handler().once())
        .await
        .result
        .unwrap_err();
    assert_eq!(err.code, "unavailable");
    Ok(())
}

/// Takes one StartEgress with affinity 0.5, reports it with IOInfo.CreateEgress as a psrpc
/// client, then answers it. Sends its server id once subscribed.
async fn fake_worker(url: String, ready: tokio::sync::oneshot::Sender<String>) -> Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut sub = client.get_async_pubsub().await?;
    let me = new_id("SRV_");
    let cli = new_id("CLI_");
    let start_req = req_channel(EGRESS_INTERNAL, "StartEgress", "");
    let start_rclaim = rclaim_channel(EGRESS_INTERNAL, "StartEgress", "");
    for ch in [
        start_req.clone(),
        start_rclaim.clone(),
        claim_channel(IO_INFO, &cli),
        res_channel(IO_INFO, &cli),
    ] {
        sub.subscribe(ch).await?;
    }
    let _ = ready.send(me.clone());
    let mut stream = sub.into_on_message();
    let mut next = async |channel: &str| -> Result<Vec<u8>> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), stream.next())
                .await
                .context("fake worker: nothing arrived")?
                .context("fake worker: stream ended")?;
            if msg.get_channel_name() == channel {
                return Ok(msg.get_payload_bytes().to_vec());
            }
        }
    };
    let publish = async |conn: &mut redis::aio::MultiplexedConnection, ch: String, b: Vec<u8>| {
        redis::cmd("PUBLISH")
            .arg(ch)
            .arg(b)
            .query_async::<i64>(conn)
            .await
    };

    let req: Request = wire::open(&next(&start_req).await?).context("a Request")?;
    let start = rpc::StartEgressRequest::decode(req.raw_request.as_slice())?;
    let claim = ClaimRequest {
        request_id: req.request_id.clone(),
        server_id: me.clone(),
        affinity: 0.5,
    };
    publish(
        &mut conn,
        claim_channel(EGRESS_INTERNAL, &req.client_id),
        wire::seal(&claim),
    )
    .await?;
    let chosen: ClaimResponse = wire::open(&next(&start_rclaim).await?).context("a claim")?;
    if chosen.server_id != me || chosen.request_id != req.request_id {
        bail!("not chosen: {chosen:?}");
    }

    let info = EgressInfo {
        egress_id: start.egress_id.clone(),
        status: EgressStatus::EgressStarting as i32,
        ..Default::default()
    };
    let io = Request {
        request_id: new_id("REQ_"),
        client_id: cli.clone(),
        sent_at: now_ns(),
        expiry: now_ns() + 5_000_000_000,
        raw_request: info.encode_to_vec(),
        ..Request::default()
    };
    publish(
        &mut conn,
        req_channel(IO_INFO, "CreateEgress", ""),
        wire::seal(&io),
    )
    .await?;
    let io_claim: ClaimRequest =
        wire::open(&next(&claim_channel(IO_INFO, &cli)).await?).context("an IO claim")?;
    if io_claim.request_id != io.request_id || io_claim.affinity != 1.0 {
        bail!("odd IO claim {io_claim:?}");
    }
    let pick = ClaimResponse {
        request_id: io.request_id.clone(),
        server_id: io_claim.server_id,
    };
    publish(
        &mut conn,
        rclaim_channel(IO_INFO, "CreateEgress", ""),
        wire::seal(&pick),
    )
    .await?;
    let io_res: Response =
        wire::open(&next(&res_channel(IO_INFO, &cli)).await?).context("an IO response")?;
    if !io_res.error.is_empty() || !io_res.raw_response.is_empty() {
        bail!("CreateEgress answered {io_res:?}");
    }

    let res = Response {
        request_id: req.request_id.clone(),
        server_id: me,
        sent_at: now_ns(),
        raw_response: info.encode_to_vec(),
        ..Response::default()
    };
    publish(
        &mut conn,
        res_channel(EGRESS_INTERNAL, &req.client_id),
        wire::seal(&res),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// What varies between workers' configs.
struct Setup {
    template_base: String,
    room_cost: f64,
    web_cost: f64,
    /// A YAML flow mapping for `s3:`.
    s3: Option<String>,
    extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            template_base: String::new(),
            // 2 cores x 0.8 = 1.6: one recording at a time.
            room_cost: 1.0,
            web_cost: 1.0,
            s3: None,
            extra: String::new(),
        }
    }
}

struct Worker {
    rec: Recorder,
    dir: tempfile::TempDir,
}

impl Worker {
    fn local_dir(&self) -> &Path {
        self.dir.path()
    }

    fn stderr(&self) -> String {
        self.rec.stderr()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.rec.child.try_wait(), Ok(None))
    }

    /// SIGTERM; waits for exit 0, checks nothing is left and the API secret never reached
    /// stderr. Returns the run's output.
    fn stop(self) -> Result<Finished> {
        let tag = self.rec.tag.clone();
        self.rec.signal(nix::sys::signal::Signal::SIGTERM);
        let done = tokio::task::block_in_place(|| self.rec.wait(Duration::from_secs(60)))?;
        assert_eq!(done.code, Some(0), "worker exit:\n{}", done.stderr);
        assert_nothing_left(&tag);
        assert_no_secrets(&done.stderr, &[API_SECRET]);
        Ok(done)
    }
}

fn config(redis: &RedisServer, local_dir: &Path, s: &Setup) -> String {
    let mut c = format!(
        "log_level: debug
api_key: {API_KEY}
api_secret: \"{API_SECRET}\"
ws_url: \"{WS_URL}\"
redis: {{address: \"{}\"}}
cpu_cost: {{max_cpu_utilization: 0.8, room_composite_cpu_cost: {}, web_cpu_cost: {}}}
file_output: {{local_dir: \"{}\"}}
",
        redis.address(),
        s.room_cost,
        s.web_cost,
        local_dir.display()
    );
    if !s.template_base.is_empty() {
        c.push_str(&format!("template_base: \"{}\"\n", s.template_base));
    }
    if let Some(s3) = &s.s3 {
        c.push_str(&format!("s3: {s3}\n"));
    }
    c.push_str(&s.extra);
    c
}

/// Starts a worker and waits for [`READY`].
fn start_worker(redis: &RedisServer, setup: &Setup) -> Result<Worker> {
    let dir = tempfile::tempdir()?;
    let config = config(redis, dir.path(), setup);
    let mut rec = Recorder::start(
        &[("EGRESS_MODE", "1"), ("LIVEKIT_RECORDER_CONFIG", &config)],
        &[],
    )?;
    tokio::task::block_in_place(|| rec.wait_for_log(READY, READY_TIMEOUT))?;
    Ok(Worker { rec, dir })
}

/// A page that animates, reports its query string to `/report?kind=params&...` and runs `script`.
fn page(script: &str) -> String {
    format!(
        r#"<!doctype html><html><body style="margin:0;background:#000">
<canvas id="c" style="width:100vw;height:100vh;display:block"></canvas>
<script>
const q = new URLSearchParams(location.search);
const enc = encodeURIComponent;
fetch('/report?kind=params&keys=' + enc([...q.keys()].join(',')) + '&layout=' + enc(q.get('layout') || '')
      + '&url=' + enc(q.get('url') || '') + '&token=' + enc(q.get('token') || ''));
const c = document.getElementById('c'), g = c.getContext('2d');
c.width = innerWidth; c.height = innerHeight;
(function draw(t) {{ g.fillStyle = `hsl(${{t / 10 % 360}},60%,40%)`; g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = '#fff'; g.fillRect((t / 4) % c.width, c.height / 3, 60, 60);
  requestAnimationFrame(draw); }})(0);
function start() {{ const t = Date.now(); console.log('START_RECORDING'); fetch('/report?kind=start&t=' + t); }}
{script}
</script></body></html>"#
    )
}

/// A page that never logs START_RECORDING.
fn never_page() -> String {
    page("")
}

/// START after `start_ms`, END after `end_ms`.
fn timed_page(start_ms: u64, end_ms: u64) -> String {
    page(&format!(
        "setTimeout(start, {start_ms}); setTimeout(() => console.log('END_RECORDING'), {end_ms});"
    ))
}

/// The reports of `kind` the pages sent, parsed.
fn reports(web: &WebServer, kind: &str) -> Vec<std::collections::HashMap<String, String>> {
    web.reports()
        .into_iter()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<std::collections::HashMap<String, String>>()
        })
        .filter(|m| m.get("kind").map(String::as_str) == Some(kind))
        .collect()
}

/// The reports of `kind`, once there is one: a page's report is a fetch that can arrive after
/// what the page logged beside it has been acted on.
async fn wait_reports(
    web: &WebServer,
    kind: &str,
    timeout: Duration,
) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = reports(web, kind);
        if !found.is_empty() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("the page sent no {kind} report within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn preset() -> Option<web_egress_request::Options> {
    Some(web_egress_request::Options::Preset(
        EncodingOptionsPreset::H264720p30 as i32,
    ))
}

fn mp4(filepath: &str) -> EncodedFileOutput {
    EncodedFileOutput {
        file_type: EncodedFileType::Mp4 as i32,
        filepath: filepath.to_owned(),
        ..Default::default()
    }
}

fn rtmp(urls: &[&str]) -> StreamOutput {
    StreamOutput {
        protocol: StreamProtocol::Rtmp as i32,
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
    }
}

/// A web egress of `url` as livekit-server forwards it.
fn web_request(
    egress_id: &str,
    url: &str,
    files: Vec<EncodedFileOutput>,
    streams: Vec<StreamOutput>,
    await_start_signal: bool,
) -> rpc::StartEgressRequest {
    rpc::StartEgressRequest {
        egress_id: egress_id.to_owned(),
        request: Some(Source::Web(lk::WebEgressRequest {
            url: url.to_owned(),
            await_start_signal,
            file_outputs: files,
            stream_outputs: streams,
            options: preset(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A web egress that stays STARTING (the page never signals START): cheap to start and stop.
fn idle_request(egress_id: &str, web: &WebServer) -> rpc::StartEgressRequest {
    web_request(
        egress_id,
        &web.url("/never.html"),
        vec![mp4("idle-{time}.mp4")],
        vec![],
        true,
    )
}

/// Every `.mp4` under `dir`.
fn mp4s_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                found.push(p);
            }
        }
    }
    found
}

/// The local file a result names: `location` when it is a path, else `filename` under the
/// worker's `local_dir` (or as given when absolute). It must be the only MP4 there.
fn local_file(f: &FileInfo, local_dir: &Path) -> PathBuf {
    let files = mp4s_under(local_dir);
    assert_eq!(
        files.len(),
        1,
        "one MP4 in {}: {files:?}",
        local_dir.display()
    );
    let file = files[0].clone();
    let named = [
        PathBuf::from(&f.location),
        local_dir.join(&f.filename),
        PathBuf::from(&f.filename),
    ];
    assert!(
        named.iter().any(|p| p == &file),
        "the result {f:?} does not name {}",
        file.display()
    );
    file
}

/// `<prefix>YYYY-MM-DDTHHMMSS.mp4` (the `{time}` of a file name).
fn assert_time_name(path: &Path, prefix: &str) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let rest = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(".mp4"))
        .unwrap_or_else(|| panic!("{name:?} is not {prefix}<time>.mp4"));
    let b = rest.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    assert!(
        b.len() == 17
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..17),
        "{name:?}: {{time}} should read 2006-01-02T150405"
    );
}

fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} leaked:\n{text}");
    }
}

/// No stored update of `egress_id` carries any of `secrets` (requests are redacted).
fn assert_infos_redacted(lk: &EgressServer, egress_id: &str, secrets: &[&str]) {
    for u in lk.updates(egress_id) {
        let bytes = u.info.encode_to_vec();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} of {egress_id} carries {s:?}",
                u.method
            );
        }
    }
}

/// The ok answer of a StartEgress over all its attempts, and the server that gave it.
fn answered_by(lk: &EgressServer, out: &Outcome<EgressInfo>) -> Result<String> {
    let oks: Vec<_> = out
        .request_ids
        .iter()
        .flat_map(|r| lk.responses(r))
        .filter(|a| a.is_ok())
        .collect();
    match oks.as_slice() {
        [one] => Ok(one.server_id.clone()),
        other => bail!("{} ok answers: {other:?}", other.len()),
    }
}

/// Waits until no server lists `egress_id` as active.
async fn wait_unlisted(lk: &EgressServer, egress_id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if !lk.active_egress_ids().await?.contains(egress_id) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{egress_id} still listed active after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The playable-file checks every recording gets.
fn check_mp4(path: &Path, f: &FileInfo, about_secs: f64) -> Result<Probe> {
    assert_eq!(
        f.size,
        std::fs::metadata(path)?.len() as i64,
        "size in the result vs on disk"
    );
    assert!(
        f.started_at > 0 && f.ended_at > f.started_at,
        "file times {f:?}"
    );
    let p = probe(path)?;
    assert_eq!(p.video_codec, "h264");
    assert!(!p.audio_codec.is_empty(), "an audio track");
    assert_eq!((p.width, p.height), (1280, 720), "the 720p30 preset");
    assert!(
        (secs(f.duration) - p.video_duration).abs() <= 1.5,
        "result says {} s, the file has {} s",
        secs(f.duration),
        p.video_duration
    );
    assert!(
        (p.video_duration - about_secs).abs() <= 2.5,
        "recorded about {about_secs} s, the file has {} s",
        p.video_duration
    );
    assert_eq!(decode_errors(path)?, "");
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// 1 + 12: web egress to a local MP4; ListActiveEgress while recording and not after.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(deprecated)]
async fn web_egress_to_a_local_file_reports_every_status_in_order() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(&redis, &Setup::default())?;
    let id = new_id("EG_");

    let info = lk
        .start_egress(web_request(
            &id,
            &web.url("/"),
            vec![mp4("web-{time}.mp4")],
            vec![],
            false,
        ))
        .await?;
    assert_eq!(info.egress_id, id);
    assert_eq!(info.status(), EgressStatus::EgressStarting);
    assert!(info.started_at > 0 && info.updated_at > 0, "{info:?}");
    match &info.request {
        Some(egress_info::Request::Web(r)) => assert_eq!(r.url, web.url("/")),
        other => panic!("the info carries the request: {other:?}"),
    }
    // CreateEgress(STARTING) was stored before StartEgress was answered, and the egress's
    // handler channels were subscribed.
    let first = lk.updates(&id);
    assert_eq!(
        first.first().map(|u| (u.method.as_str(), u.status())),
        Some(("CreateEgress", EgressStatus::EgressStarting))
    );
    for m in ["StopEgress", "UpdateStream"] {
        let ch = req_channel(EGRESS_HANDLER, m, &id);
        assert!(lk.numsub(&ch).await? >= 1, "the worker subscribes {ch}");
    }

    lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
        .await?;
    let active_at = Instant::now();
    assert!(
        lk.active_egress_ids().await?.contains(&id),
        "ListActiveEgress lists the recording"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stopped = lk.stop_egress(&id).await?;
    let recorded = active_at.elapsed().as_secs_f64();
    assert_eq!(stopped.status(), EgressStatus::EgressEnding);
    assert_eq!(stopped.details, "End reason: StopEgress API");

    let done = lk
        .wait_status(&id, EgressStatus::EgressComplete, END_TIMEOUT)
        .await?;
    let updates = lk.updates(&id);
    assert_eq!(
        collapse(&lk.statuses(&id)),
        [
            EgressStatus::EgressStarting,
            EgressStatus::EgressActive,
            EgressStatus::EgressEnding,
            EgressStatus::EgressComplete
        ]
    );
    assert!(updates[1..].iter().all(|u| u.method == "UpdateEgress"));
    assert_eq!(lk.creates(&id), 1);
    assert!(
        done.started_at > 0 && done.ended_at > done.started_at,
        "{done:?}"
    );
    assert_eq!(done.error, "");

    assert_eq!(done.file_results.len(), 1, "{done:?}");
    let f = &done.file_results[0];
    let path = local_file(f, w.local_dir());
    assert_time_name(&path, "web-");
    check_mp4(&path, f, recorded)?;
    match &done.result {
        Some(egress_info::Result::File(legacy)) => assert_eq!(legacy.filename, f.filename),
        other => panic!("the legacy file result is filled: {other:?}"),
    }

    wait_unlisted(&lk, &id, Duration::from_secs(10)).await?;
    for m in ["StopEgress", "UpdateStream"] {
        lk.wait_numsub(
            &req_channel(EGRESS_HANDLER, m, &id),
            |n| n == 0,
            Duration::from_secs(10),
        )
        .await?;
    }
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2: the same to S3, storage from the request and from the config.

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .http_client(http)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_egress_to_s3_from_the_request_and_from_the_config() -> Result<()> {
    const REQ_KEY: &str = "reqAccessKEY0001";
    const REQ_SECRET: &str = "reqSecretS3cr3tValue0001";
    const CFG_KEY: &str = "cfgAccessKEY0002";
    const CFG_SECRET: &str = "cfgSecretS3cr3tValue0002";
    let moto = common::storage::moto()?;
    let s3 = s3_client(&moto.url());
    for bucket in ["req-bucket", "cfg-bucket"] {
        s3.create_bucket().bucket(bucket).send().await?;
    }
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(
        &redis,
        &Setup {
            s3: Some(format!(
                "{{access_key: {CFG_KEY}, secret: {CFG_SECRET}, endpoint: \"{}\", region: us-east-1, bucket: cfg-bucket, force_path_style: true}}",
                moto.url()
            )),
            ..Setup::default()
        },
    )?;

    let from_request = lk::S3Upload {
        access_key: REQ_KEY.into(),
        secret: REQ_SECRET.into(),
        region: "us-east-1".into(),
        endpoint: moto.url(),
        bucket: "req-bucket".into(),
        force_path_style: true,
        ..Default::default()
    };
    let cases = [
        (
            "req-bucket",
            "rooms/web-one.mp4",
            Some(encoded_file_output::Output::S3(from_request)),
        ),
        ("cfg-bucket", "rooms/web-two.mp4", None),
    ];
    for (bucket, key, storage) in cases {
        let id = new_id("EG_");
        let file = EncodedFileOutput {
            output: storage,
            ..mp4(key)
        };
        lk.start_egress(web_request(&id, &web.url("/"), vec![file], vec![], false))
            .await?;
        lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
            .await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        lk.stop_egress(&id).await?;
        let done = lk
            .wait_status(&id, EgressStatus::EgressComplete, END_TIMEOUT)
            .await?;
        assert_eq!(done.file_results.len(), 1, "{done:?}");
        let f = &done.file_results[0];
        assert_eq!(f.filename, key);
        assert!(
            f.location.ends_with(&format!("{bucket}/{key}")),
            "location {:?} names the object",
            f.location
        );
        let obj = s3.get_object().bucket(bucket).key(key).send().await?;
        let body = obj.body.collect().await?.into_bytes();
        assert_eq!(
            body.len() as i64,
            f.size,
            "uploaded bytes vs the result's size"
        );
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("object.mp4");
        std::fs::write(&path, &body)?;
        let p = probe(&path)?;
        assert_eq!(p.video_codec, "h264");
        assert!(p.video_duration >= 2.5, "{} s", p.video_duration);
        assert_eq!(decode_errors(&path)?, "");
        assert_infos_redacted(&lk, &id, &[REQ_KEY, REQ_SECRET, CFG_SECRET]);
        wait_unlisted(&lk, &id, Duration::from_secs(10)).await?;
    }
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET, REQ_SECRET, CFG_SECRET]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3: room composite of a local template page.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_composite_opens_the_template_with_layout_token_and_url() -> Result<()> {
    let web = WebServer::start(&[("/room.html", &timed_page(2500, 9000))])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(
        &redis,
        &Setup {
            template_base: web.url("/room.html"),
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    let req = rpc::StartEgressRequest {
        egress_id: id.clone(),
        room_id: "RM_roomRoomRoom".into(),
        room_name: "my-room".into(),
        request: Some(Source::RoomComposite(lk::RoomCompositeEgressRequest {
            room_name: "my-room".into(),
            layout: "speaker-dark".into(),
            file_outputs: vec![mp4("{room_name}-{time}.mp4")],
            options: Some(lk::room_composite_egress_request::Options::Preset(
                EncodingOptionsPreset::H264720p30 as i32,
            )),
            ..Default::default()
        })),
        ..Default::default()
    };
    let info = lk.start_egress(req).await?;
    assert_eq!(info.status(), EgressStatus::EgressStarting);
    assert_eq!(info.room_name, "my-room");
    assert_eq!(info.room_id, "RM_roomRoomRoom");

    let active = lk
        .wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
        .await?;
    let active_at = lk
        .updates(&id)
        .iter()
        .find(|u| u.status() == EgressStatus::EgressActive)
        .map(|u| unix_ms(u.at))
        .unwrap();
    let started = wait_reports(&web, "start", Duration::from_secs(10)).await?;
    let start_t: i64 = started
        .first()
        .context("the page reported START")?
        .get("t")
        .context("t")?
        .parse()?;
    assert!(
        active_at >= start_t,
        "ACTIVE stored at {active_at} before the page's START at {start_t}"
    );
    assert_eq!(active.room_name, "my-room");

    // The page ends the recording with END_RECORDING.
    let done = lk
        .wait_status(&id, EgressStatus::EgressComplete, END_TIMEOUT)
        .await?;
    assert_eq!(
        collapse(&lk.statuses(&id)),
        [
            EgressStatus::EgressStarting,
            EgressStatus::EgressActive,
            EgressStatus::EgressEnding,
            EgressStatus::EgressComplete
        ]
    );
    assert!(
        lk.updates(&id)
            .iter()
            .any(|u| u.info.details == "End reason: Source closed"),
        "the end reason is the page's END_RECORDING"
    );
    let f = &done.file_results[0];
    let path = local_file(f, w.local_dir());
    assert_time_name(&path, "my-room-");
    check_mp4(&path, f, 6.5)?;

    // What the page was given: layout, token, url (keys sorted as Go encodes them).
    let params = wait_reports(&web, "params", Duration::from_secs(10)).await?;
    let q = params.first().context("the page reported its query")?;
    assert_eq!(q["keys"], "layout,token,url");
    assert_eq!(q["layout"], "speaker-dark");
    assert_eq!(q["url"], WS_URL);
    let token = &q["token"];
    let claims = livekit_api::access_token::TokenVerifier::with_api_key(API_KEY, API_SECRET)
        .verify(token)
        .expect("the token verifies with the worker's key and secret");
    assert_eq!(claims.video.room, "my-room");
    let payload = token.split('.').nth(1).context("a JWT")?;
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))?,
    )?;
    assert_eq!(
        payload["sub"],
        id.as_str(),
        "identity = egress id: {payload}"
    );
    assert_eq!(payload["iss"], API_KEY);
    let video = &payload["video"];
    assert_eq!(video["roomJoin"], true, "{payload}");
    assert_eq!(video["room"], "my-room");
    assert_eq!(video["canSubscribe"], true, "{payload}");
    assert_eq!(video["hidden"], true, "{payload}");
    assert_eq!(video["recorder"], true, "{payload}");
    assert_ne!(video["canPublish"], true, "{payload}");
    assert_ne!(video["canPublishData"], true, "{payload}");
    let exp = payload["exp"].as_i64().context("exp")?;
    let now = unix_ms(SystemTime::now()) / 1000;
    assert!(
        (23 * 3600..=25 * 3600).contains(&(exp - now)),
        "valid for about 24 h: exp {exp}, now {now}"
    );

    wait_unlisted(&lk, &id, Duration::from_secs(10)).await?;
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET, token]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4: RTMP, then UpdateStream adds B and removes A.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(deprecated)]
async fn rtmp_outputs_are_added_and_removed_with_update_stream() -> Result<()> {
    const KEY_A: &str = "alphaKey7c1d93ee";
    const KEY_B: &str = "bravoKey4e8f21aa";
    let nginx = common::rtmp::NginxRtmp::start()?;
    let (url_a, url_b) = (nginx.url(KEY_A), nginx.url(KEY_B));
    let prefix = nginx.url("");
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(&redis, &Setup::default())?;
    let id = new_id("EG_");

    lk.start_egress(web_request(
        &id,
        &web.url("/"),
        vec![],
        vec![rtmp(&[&url_a])],
        false,
    ))
    .await?;
    lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let updated = lk.update_stream(&id, &[&url_b], &[&url_a]).await?;
    assert_eq!(updated.egress_id, id);
    let bytes = updated.encode_to_vec();
    for key in [KEY_A, KEY_B] {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "UpdateStream's answer carries a stream key"
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    lk.stop_egress(&id).await?;
    let done = lk
        .wait_status(&id, EgressStatus::EgressComplete, END_TIMEOUT)
        .await?;

    assert_eq!(done.stream_results.len(), 2, "{done:?}");
    let mut results = done.stream_results.clone();
    results.sort_by_key(|s| s.started_at);
    for s in &results {
        assert!(s.url.starts_with(&prefix), "{s:?}");
        assert!(!s.url.contains(KEY_A) && !s.url.contains(KEY_B), "{s:?}");
        assert_eq!(s.status(), lk::stream_info::Status::Finished, "{s:?}");
        assert!(s.started_at > 0 && s.ended_at > s.started_at, "{s:?}");
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(
        a.ended_at + 1_000_000_000 < b.ended_at,
        "A was removed seconds before B ended: {a:?} {b:?}"
    );
    assert!(
        b.started_at > a.started_at + 2_000_000_000,
        "B was added seconds after A started: {a:?} {b:?}"
    );
    match &done.result {
        Some(egress_info::Result::Stream(list)) => assert_eq!(list.info.len(), 2),
        other => panic!("the legacy stream result is filled: {other:?}"),
    }
    assert_infos_redacted(&lk, &id, &[KEY_A, KEY_B]);

    for key in [KEY_A, KEY_B] {
        let p = probe(&nginx.recording(key))?;
        assert_eq!(p.video_codec, "h264", "{key}");
        assert!(p.video_duration >= 2.5, "{key}: {} s", p.video_duration);
    }
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET, KEY_A, KEY_B]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5: StopEgress while STARTING aborts. (StopEgress while ACTIVE -> COMPLETE: test 1.)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_before_the_page_starts_aborts() -> Result<()> {
    let web = WebServer::start(&[("/never.html", &never_page())])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(
        &redis,
        &Setup {
            template_base: web.url("/never.html"),
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    let req = rpc::StartEgressRequest {
        egress_id: id.clone(),
        room_name: "my-room".into(),
        request: Some(Source::RoomComposite(lk::RoomCompositeEgressRequest {
            room_name: "my-room".into(),
            layout: "grid".into(),
            file_outputs: vec![mp4("never.mp4")],
            ..Default::default()
        })),
        ..Default::default()
    };
    lk.start_egress(req).await?;
    // The page loads (and reports) but never starts.
    wait_reports(&web, "params", ACTIVE_TIMEOUT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    lk.stop_egress(&id).await?;
    let done = lk.wait_final(&id, END_TIMEOUT).await?;
    assert_eq!(done.status(), EgressStatus::EgressAborted, "{done:?}");
    assert_eq!(done.error, "Stop called before pipeline could start");
    assert_eq!(done.error_code, 412);
    assert!(done.ended_at > 0);
    assert!(
        !lk.statuses(&id).contains(&EgressStatus::EgressActive),
        "{:?}",
        lk.statuses(&id)
    );

    // Gone: the worker no longer answers for it.
    lk.wait_numsub(
        &req_channel(EGRESS_HANDLER, "StopEgress", &id),
        |n| n == 0,
        Duration::from_secs(10),
    )
    .await?;
    let err = lk.stop_egress(&id).await.unwrap_err();
    assert_eq!(err.code, "unavailable", "{err}");
    wait_unlisted(&lk, &id, Duration::from_secs(5)).await?;
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6: a retried StartEgress (new request id, same egress id) -> already_exists.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_start_egress_is_answered_already_exists() -> Result<()> {
    let web = WebServer::start(&[("/never.html", &never_page())])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    // Room for two, so capacity does not hide the duplicate.
    let w = start_worker(
        &redis,
        &Setup {
            web_cost: 0.5,
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    let first = lk
        .start_egress_with(idle_request(&id, &web), CallOptions::start())
        .await;
    first.result.as_ref().map_err(Clone::clone)?;
    let worker = answered_by(&lk, &first)?;

    let again = lk
        .start_egress_with(idle_request(&id, &web), CallOptions::start())
        .await;
    let err = again.result.unwrap_err();
    assert_eq!(err.code, "already_exists", "{err}");
    assert_ne!(again.request_ids[0], first.request_ids[0]);
    let rec = lk.call_record(&again.request_ids[0]);
    assert_eq!(rec.claimants().into_iter().collect::<Vec<_>>(), [worker]);
    assert_eq!(rec.responses.len(), 1);
    assert_eq!(lk.creates(&id), 1, "one CreateEgress for the egress");

    lk.stop_egress(&id).await?;
    let done = lk.wait_final(&id, END_TIMEOUT).await?;
    assert_eq!(done.status(), EgressStatus::EgressAborted, "{done:?}");
    w.stop()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7: requests a browser worker cannot do get no claim.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsupported_requests_get_no_claim() -> Result<()> {
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    let mut w = start_worker(&redis, &Setup::default())?;
    let url = "http://127.0.0.1:9/page".to_owned();
    let web_with = |f: fn(&mut lk::WebEgressRequest)| {
        let mut r = lk::WebEgressRequest {
            url: url.clone(),
            ..Default::default()
        };
        f(&mut r);
        Source::Web(r)
    };
    let cases: Vec<(&str, Source)> = vec![
        (
            "track",
            Source::Track(lk::TrackEgressRequest {
                room_name: "r".into(),
                track_id: "TR_abc".into(),
                output: Some(lk::track_egress_request::Output::File(
                    lk::DirectFileOutput {
                        filepath: "track.ogg".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
        ),
        (
            "participant",
            Source::Participant(lk::ParticipantEgressRequest {
                room_name: "r".into(),
                identity: "alice".into(),
                file_outputs: vec![mp4("p.mp4")],
                ..Default::default()
            }),
        ),
        (
            "track composite",
            Source::TrackComposite(lk::TrackCompositeEgressRequest {
                room_name: "r".into(),
                audio_track_id: "TR_a".into(),
                video_track_id: "TR_v".into(),
                file_outputs: vec![mp4("tc.mp4")],
                ..Default::default()
            }),
        ),
        (
            "unified",
            Source::Egress(lk::StartEgressRequest {
                room_name: "r".into(),
                ..Default::default()
            }),
        ),
        (
            "replay",
            Source::Replay(lk::ExportReplayRequest {
                replay_id: "RP_x".into(),
                ..Default::default()
            }),
        ),
        (
            "web with segments only",
            web_with(|r| {
                r.segment_outputs = vec![lk::SegmentedFileOutput {
                    filename_prefix: "seg".into(),
                    playlist_name: "seg.m3u8".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "web with images only",
            web_with(|r| {
                r.image_outputs = vec![lk::ImageOutput {
                    capture_interval: 5,
                    filename_prefix: "img".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "web to AliOSS",
            web_with(|r| {
                r.file_outputs = vec![EncodedFileOutput {
                    output: Some(encoded_file_output::Output::AliOss(lk::AliOssUpload {
                        bucket: "b".into(),
                        ..Default::default()
                    })),
                    ..mp4("alioss.mp4")
                }]
            }),
        ),
    ];
    let calls = cases.into_iter().map(|(name, source)| {
        let req = rpc::StartEgressRequest {
            egress_id: new_id("EG_"),
            request: Some(source),
            ..Default::default()
        };
        let lk = &lk;
        async move { (name, lk.start_egress_with(req, CallOptions::start()).await) }
    });
    for (name, out) in futures::future::join_all(calls).await {
        let err = out.result.unwrap_err();
        assert_eq!(err.code, "unavailable", "{name}: {err}");
        for r in &out.request_ids {
            let rec = lk.call_record(r);
            assert!(rec.claims.is_empty(), "{name}: claimed {:?}", rec.claims);
            assert!(
                rec.responses.is_empty(),
                "{name}: answered {:?}",
                rec.responses
            );
        }
    }
    assert!(lk.all_updates().is_empty(), "{:?}", lk.all_updates());
    // The worker is there and listening all the same.
    let listed = lk.list_active().await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].1, Ok(vec![]));
    assert!(w.is_running());
    let procs = processes_with_tag(&w.rec.tag);
    assert!(
        !procs.iter().any(|p| p.contains("chrom")),
        "no browser was launched: {procs:?}"
    );
    w.stop()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8: two workers on one Redis: every egress claimed and answered exactly once.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_take_each_egress_exactly_once() -> Result<()> {
    let web = WebServer::start(&[("/never.html", &never_page())])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    // One web egress fits each worker (cost 1 of 2 x 0.8).
    let a = start_worker(&redis, &Setup::default())?;
    let b = start_worker(&redis, &Setup::default())?;
    let mut runs: Vec<(String, Outcome<EgressInfo>)> = Vec::new();

    let stop_all = async |ids: &[String]| -> Result<()> {
        for id in ids {
            lk.stop_egress(id).await?;
        }
        for id in ids {
            lk.wait_final(id, END_TIMEOUT).await?;
        }
        // Both workers idle again before the next round.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listed = lk.list_active().await?;
            if listed.len() == 2 && listed.iter().all(|(_, r)| r == &Ok(vec![])) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("workers still busy: {listed:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };

    // Round 1, one after the other: the second goes to the other worker; a third finds both full.
    let (e1, e2) = (new_id("EG_"), new_id("EG_"));
    let r1 = lk
        .start_egress_with(idle_request(&e1, &web), CallOptions::start())
        .await;
    let r2 = lk
        .start_egress_with(idle_request(&e2, &web), CallOptions::start())
        .await;
    let (s1, s2) = (answered_by(&lk, &r1)?, answered_by(&lk, &r2)?);
    assert_ne!(s1, s2, "each worker has room for one");
    let full = lk
        .start_egress_with(
            idle_request(&new_id("EG_"), &web),
            CallOptions::start().once(),
        )
        .await;
    assert_eq!(full.result.as_ref().unwrap_err().code, "unavailable");
    assert!(
        lk.claims(&full.request_ids[0]).is_empty(),
        "full workers do not claim: {:?}",
        lk.claims(&full.request_ids[0])
    );
    runs.push((e1.clone(), r1));
    runs.push((e2.clone(), r2));
    stop_all(&[e1, e2]).await?;

    // Round 2, both at once.
    let (e3, e4) = (new_id("EG_"), new_id("EG_"));
    let (r3, r4) = tokio::join!(
        lk.start_egress_with(idle_request(&e3, &web), CallOptions::start()),
        lk.start_egress_with(idle_request(&e4, &web), CallOptions::start())
    );
    assert_ne!(answered_by(&lk, &r3)?, answered_by(&lk, &r4)?);
    runs.push((e3.clone(), r3));
    runs.push((e4.clone(), r4));
    stop_all(&[e3, e4]).await?;

    // Round 3, one more.
    let e5 = new_id("EG_");
    let r5 = lk
        .start_egress_with(idle_request(&e5, &web), CallOptions::start())
        .await;
    runs.push((e5.clone(), r5));
    stop_all(&[e5]).await?;

    // Late duplicates would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.len(), 5);
    for (id, out) in &runs {
        assert!(out.result.is_ok(), "{id}: {:?}", out.result);
        answered_by(&lk, out)?;
        for r in &out.request_ids {
            let rec = lk.call_record(r);
            assert_eq!(
                rec.claims.len(),
                rec.claimants().len(),
                "{id}: a worker claimed twice: {:?}",
                rec.claims
            );
            assert!(rec.responses.len() <= 1, "{id}: {:?}", rec.responses);
            if let Some(res) = rec.responses.first() {
                assert_eq!(
                    Some(&res.server_id),
                    rec.chosen.as_ref(),
                    "{id}: only the chosen worker answers"
                );
            }
        }
        assert_eq!(lk.creates(id), 1, "{id}: one CreateEgress");
        assert!(
            lk.updates(id).iter().all(|u| u.info.egress_id == *id),
            "{id}"
        );
        let last = lk.last_info(id).unwrap();
        assert_eq!(last.status(), EgressStatus::EgressAborted, "{id}: {last:?}");
    }
    for w in [a, b] {
        let out = w.stop()?;
        assert_no_secrets(&out.stderr, &[API_SECRET]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 9: IOInfo unavailable around the end of a recording; the updates arrive in order later.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_survive_ioinfo_being_away_and_arrive_in_order() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let mut w = start_worker(&redis, &Setup::default())?;
    let id = new_id("EG_");
    lk.start_egress(web_request(
        &id,
        &web.url("/"),
        vec![mp4("web-{time}.mp4")],
        vec![],
        false,
    ))
    .await?;
    lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Down (no claim: unavailable) for 5 s, across the end of the recording.
    lk.set_io_mode(IoMode::Down).await?;
    let before = lk.updates(&id).len();
    let stopped = lk.stop_egress(&id).await?;
    assert_eq!(stopped.status(), EgressStatus::EgressEnding);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Then claiming but never answering (deadline_exceeded) until the worker has tried once,
    // at least 5 s more.
    lk.set_io_mode(IoMode::ClaimOnly).await?;
    let claim_only = Instant::now();
    while lk.io_unanswered().is_empty() || claim_only.elapsed() < Duration::from_secs(5) {
        if claim_only.elapsed() > Duration::from_secs(90) {
            bail!("the worker stopped trying to report");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lk.updates(&id).len(), before, "nothing stored while away");
    lk.set_io_mode(IoMode::Up).await?;

    let done = lk
        .wait_status(&id, EgressStatus::EgressComplete, Duration::from_secs(180))
        .await?;
    let statuses = lk.statuses(&id);
    assert!(
        statuses.windows(2).all(|p| rank(p[0]) <= rank(p[1])),
        "out of order: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&EgressStatus::EgressComplete));
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == EgressStatus::EgressComplete)
            .count(),
        1
    );
    let f = &done.file_results[0];
    let path = local_file(f, w.local_dir());
    assert_eq!(f.size, std::fs::metadata(&path)?.len() as i64);
    assert_eq!(decode_errors(&path)?, "");
    // Still serving.
    assert!(w.is_running());
    wait_unlisted(&lk, &id, Duration::from_secs(10)).await?;
    w.stop()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10: malformed envelopes and garbage on every channel the worker subscribes.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_every_channel_is_ignored() -> Result<()> {
    let web = WebServer::start(&[("/never.html", &never_page())])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    let mut w = start_worker(&redis, &Setup::default())?;

    let stranger = || ClaimResponse {
        request_id: "REQ_nobodyKnowsMe".into(),
        server_id: "SRV_nobodyKnowsMe".into(),
    };
    let spray = async |ch: &str| -> Result<()> {
        assert!(
            lk.publish_raw(ch, b"\xff\xfe\x00 not protobuf").await? >= 1,
            "the worker subscribes {ch}"
        );
        lk.publish_raw(ch, b"").await?;
        lk.publish_raw(ch, &[0x0a, 0x7f, b'x']).await?;
        lk.publish_envelope(ch, "internal.Request", vec![0x0a, 0x10, b's'])
            .await?;
        lk.publish_envelope(ch, "internal.Response", vec![0xff, 0xff, 0xff])
            .await?;
        lk.publish_envelope(ch, "google.protobuf.Empty", vec![])
            .await?;
        lk.publish_envelope(ch, "", vec![]).await?;
        lk.publish_sealed(ch, &stranger()).await?;
        lk.publish_sealed(
            ch,
            &ClaimRequest {
                request_id: "REQ_nobodyKnowsMe".into(),
                server_id: "SRV_nobodyKnowsMe".into(),
                affinity: 1.0,
            },
        )
        .await?;
        lk.publish_sealed(
            ch,
            &Response {
                request_id: "REQ_nobodyKnowsMe".into(),
                server_id: "SRV_nobodyKnowsMe".into(),
                raw_response: vec![0xff],
                ..Response::default()
            },
        )
        .await?;
        lk.publish_sealed(
            ch,
            &Request {
                request_id: new_id("REQ_"),
                client_id: "CLI_nobodyKnowsMe".into(),
                expiry: now_ns() + 1_000_000_000,
                multi: true,
                ..Request::default()
            },
        )
        .await?;
        Ok(())
    };

    for ch in [
        req_channel(EGRESS_INTERNAL, "StartEgress", ""),
        rclaim_channel(EGRESS_INTERNAL, "StartEgress", ""),
        req_channel(EGRESS_INTERNAL, "ListActiveEgress", ""),
    ] {
        spray(&ch).await?;
    }
    // A StartEgress whose payload does not decode is answered malformed_request, unclaimed.
    let bad = lk
        .send_request(
            EGRESS_INTERNAL,
            "StartEgress",
            "",
            vec![0x0a, 0x10, b's', b'h', b'o', b'r', b't'],
            now_ns() + 5_000_000_000,
        )
        .await?;
    // An expired one is dropped: no claim, no answer.
    let expired = lk
        .send_request(
            EGRESS_INTERNAL,
            "StartEgress",
            "",
            idle_request(&new_id("EG_"), &web).encode_to_vec(),
            now_ns() - 1_000_000_000,
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answers = lk.responses(&bad);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].code, "malformed_request");
    assert!(lk.claims(&bad).is_empty());
    assert!(lk.claims(&expired).is_empty() && lk.responses(&expired).is_empty());
    assert!(w.is_running(), "{}", w.stderr());

    // An egress, to reach the per-egress channels and the worker's IOInfo client channels.
    let a = new_id("EG_");
    lk.start_egress(idle_request(&a, &web)).await?;
    let worker_cli = lk
        .updates(&a)
        .first()
        .map(|u| u.client_id.clone())
        .context("CreateEgress")?;
    for ch in [
        claim_channel(IO_INFO, &worker_cli),
        res_channel(IO_INFO, &worker_cli),
        req_channel(EGRESS_HANDLER, "StopEgress", &a),
        rclaim_channel(EGRESS_HANDLER, "StopEgress", &a),
        req_channel(EGRESS_HANDLER, "UpdateStream", &a),
        rclaim_channel(EGRESS_HANDLER, "UpdateStream", &a),
    ] {
        spray(&ch).await?;
    }
    let bad_stop = lk
        .send_request(
            EGRESS_HANDLER,
            "StopEgress",
            &a,
            vec![0x0a, 0x10, b's'],
            now_ns() + 3_000_000_000,
        )
        .await?;
    let expired_stop = lk
        .send_request(
            EGRESS_HANDLER,
            "StopEgress",
            &a,
            lk::StopEgressRequest {
                egress_id: a.clone(),
            }
            .encode_to_vec(),
            now_ns() - 1_000_000_000,
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answers = lk.responses(&bad_stop);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].code, "malformed_request");
    assert!(lk.claims(&expired_stop).is_empty() && lk.responses(&expired_stop).is_empty());
    assert!(
        !lk.statuses(&a).iter().any(|s| common::egress::is_final(*s)),
        "an expired StopEgress stopped nothing: {:?}",
        lk.statuses(&a)
    );
    assert!(w.is_running(), "{}", w.stderr());

    // Nobody runs this one.
    let err = lk.stop_egress(&new_id("EG_")).await.unwrap_err();
    assert_eq!(err.code, "unavailable", "{err}");

    // Still serving: lists A, stops it, takes the next egress.
    assert!(lk.active_egress_ids().await?.contains(&a));
    lk.stop_egress(&a).await?;
    assert_eq!(
        lk.wait_final(&a, END_TIMEOUT).await?.status(),
        EgressStatus::EgressAborted
    );
    wait_unlisted(&lk, &a, Duration::from_secs(10)).await?;
    let b = new_id("EG_");
    lk.start_egress(idle_request(&b, &web)).await?;
    lk.stop_egress(&b).await?;
    assert_eq!(
        lk.wait_final(&b, END_TIMEOUT).await?.status(),
        EgressStatus::EgressAborted
    );
    let out = w.stop()?;
    assert_no_secrets(&out.stderr, &[API_SECRET]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 11: SIGTERM drains: the recording completes, nothing new is claimed, exit 0.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_recording_finish_and_claims_nothing_new() -> Result<()> {
    let web = WebServer::start(&[
        ("/timed.html", &timed_page(1500, 9500)),
        ("/never.html", &never_page()),
    ])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start(&redis.url()).await?;
    // Room for two, so only draining explains a refusal.
    let w = start_worker(
        &redis,
        &Setup {
            web_cost: 0.5,
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    lk.start_egress(web_request(
        &id,
        &web.url("/timed.html"),
        vec![mp4("drain-{time}.mp4")],
        vec![],
        true,
    ))
    .await?;
    lk.wait_status(&id, EgressStatus::EgressActive, ACTIVE_TIMEOUT)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.rec.signal(nix::sys::signal::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let refused = lk
        .start_egress_with(
            idle_request(&new_id("EG_"), &web),
            CallOptions::start().once(),
        )
        .await;
    assert_eq!(refused.result.as_ref().unwrap_err().code, "unavailable");
    assert!(
        lk.claims(&refused.request_ids[0]).is_empty(),
        "a draining worker claims nothing: {:?}",
        lk.claims(&refused.request_ids[0])
    );

    let tag = w.rec.tag.clone();
    let local_dir = w.dir;
    let done_run = tokio::task::block_in_place(|| w.rec.wait(Duration::from_secs(90)))?;
    assert_eq!(done_run.code, Some(0), "{}", done_run.stderr);
    // It exited only after the final update was delivered.
    assert_eq!(
        lk.statuses(&id).last(),
        Some(&EgressStatus::EgressComplete),
        "{:?}",
        lk.statuses(&id)
    );
    assert_nothing_left(&tag);
    let done = lk.last_info(&id).unwrap();
    assert!(
        lk.updates(&id)
            .iter()
            .any(|u| u.info.details == "End reason: Source closed"),
        "the page ended it, not the signal"
    );
    let f = &done.file_results[0];
    let path = local_file(f, local_dir.path());
    check_mp4(&path, f, 8.0)?;
    assert_no_secrets(&done_run.stderr, &[API_SECRET]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Session limits: EGRESS_LIMIT_REACHED with error_code 413, the file kept.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_output_limit_ends_the_egress_limit_reached() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let lk = EgressServer::start(&redis.url()).await?;
    let w = start_worker(
        &redis,
        &Setup {
            extra: "session_limits: {file_output_max_duration: 5s}\n".into(),
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    lk.start_egress(web_request(
        &id,
        &web.url("/"),
        vec![mp4("limited.mp4")],
        vec![],
        false,
    ))
    .await?;
    let done = lk.wait_final(&id, ACTIVE_TIMEOUT + END_TIMEOUT).await?;
    assert_eq!(done.status(), EgressStatus::EgressLimitReached, "{done:?}");
    assert_eq!(done.error_code, 413);
    let f = &done.file_results[0];
    let path = local_file(f, w.local_dir());
    check_mp4(&path, f, 5.0)?;
    w.stop()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// livekit-server v1.4.2 - v1.5.0: every update through IOInfo.UpdateEgressInfo.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_egress_info_for_older_servers() -> Result<()> {
    let web = WebServer::start(&[("/never.html", &never_page())])?;
    let redis = RedisServer::start()?;
    let lk = EgressServer::start_with(&redis.url(), Flavor::Legacy).await?;
    let w = start_worker(
        &redis,
        &Setup {
            extra: "io_update_egress_info: true\n".into(),
            ..Setup::default()
        },
    )?;
    let id = new_id("EG_");
    lk.start_egress(idle_request(&id, &web)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lk.stop_egress(&id).await?;
    let done = lk.wait_final(&id, END_TIMEOUT).await?;
    assert_eq!(done.status(), EgressStatus::EgressAborted);
    let updates = lk.updates(&id);
    assert!(
        updates.iter().all(|u| u.method == "UpdateEgressInfo"),
        "{:?}",
        updates.iter().map(|u| &u.method).collect::<Vec<_>>()
    );
    let statuses = lk.statuses(&id);
    assert!(
        statuses.windows(2).all(|p| rank(p[0]) <= rank(p[1])),
        "{statuses:?}"
    );
    w.stop()?;
    Ok(())
}
