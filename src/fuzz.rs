//! Fuzzing on stable Rust (proptest): everything the recorder reads from outside, as it reads
//! it. The request JSON (standalone mode), the config YAML, and every protobuf a daemon decodes
//! from Redis: the recorder protocol's reservations and requests, psrpc's envelopes, and the
//! egress worker's StartEgress, StopEgress and UpdateStream requests, each fed on to the code
//! that handles it (validation, file names, pages). Inputs are random bytes and strings, and
//! valid messages mutated (bytes flipped, cut, inserted), and JSON/YAML documents built from the
//! keys the recorder knows.
//!
//! Each case must: not panic; end in a value or an error that says something; and allocate at
//! most [`memory_bound`] for its input (measured per thread by the allocator below).
//!
//! `FUZZ_CASES` cases per target (default 1000, so 5000 in `make test`); `make fuzz`
//! runs 200 000 per target. A failure prints the shrunk input it was reduced to.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use prost::Message as _;

use crate::config::Config;
use crate::proto::livekit::{
    recording_request, start_recording_request, EndRecordingRequest, RecordingInfo,
    RecordingOptions, RecordingRequest, RecordingReservation, RecordingTemplate,
    StartRecordingRequest,
};
use crate::psrpc::envelope;
use crate::psrpc::proto::internal::{ClaimRequest, ClaimResponse, Request, Response};
use crate::psrpc::proto::rpc::{start_egress_request, StartEgressRequest};

// ---- bounded memory: a per-thread allocation meter ------------------------------------------

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's live bytes and their peak.
struct Meter;

fn account(delta: isize) {
    // try_with: a thread tearing down its locals still frees memory.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is passed on to `System` unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(size(layout));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(size(layout));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        account(-size(layout));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout));
        }
        p
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result and the most memory it held at once on this thread.
fn metered<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - start).unwrap_or(0))
}

/// What handling an input of `len` bytes may hold at once: proportional to the input, plus a
/// fixed allowance (a config's defaults, a validated request, error texts).
fn memory_bound(len: usize) -> usize {
    len * 64 + (2 << 20)
}

// ---- the runner --------------------------------------------------------------------------------

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Runs `check` on `cases()` inputs from `strategy`, each metered.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<(), String>,
    len: impl Fn(&S::Value) -> usize,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&strategy, |input| {
        let (verdict, peak) = metered(|| check(&input));
        verdict.map_err(TestCaseError::fail)?;
        let bound = memory_bound(len(&input));
        if peak > bound {
            return Err(TestCaseError::fail(format!(
                "held {peak} bytes for a {}-byte input (bound {bound})",
                len(&input)
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// An error must say something.
fn said(e: &dyn std::fmt::Display) -> Result<(), String> {
    if e.to_string().trim().is_empty() {
        Err("an error without a message".into())
    } else {
        Ok(())
    }
}

// ---- inputs ------------------------------------------------------------------------------------

/// Strings the recorder gives meaning to, and some that break naive code.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "http://127.0.0.1:9/", "https://example.com/#/x?y=1", "rtmp://h/live/key",
            "rtmps://h:1935/a/b", "live.twitch.tv", "a.mp4", "/abs/b.mp4", "../../etc/x.mp4",
            "rec/{room_name}-{time}.mp4", "x.avi", "HD_30", "FULL_HD_60", "hd_60", "NONE", "7",
            "-1", "1e309", "main", "high", "speaker-dark", "room", "RR_abc", "EG_abc", "\u{0}",
            "é✓🎥", "%00", "file:///etc/passwd", "javascript:alert(1)", "169.254.169.254",
            "6h", "90m", "1h30m", "-5s", "warning", "debug", "loud", "true", "null", "~",
        ]).prop_map(str::to_owned),
        2 => "\\PC{0,24}",
        1 => ".{0,64}",
    ]
}

/// JSON values made of `keys` (and stray ones), the shape a request or config takes.
fn document(keys: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        prop::sample::select(vec![
            0i64, 1, 2, 4, 30, 60, 640, 1280, 1919, 1920, 4500, 65536
        ])
        .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const REQUEST_KEYS: &[&str] = &[
    "url",
    "template",
    "layout",
    "room_name",
    "roomName",
    "base_url",
    "baseUrl",
    "filepath",
    "rtmp",
    "urls",
    "options",
    "preset",
    "width",
    "height",
    "depth",
    "framerate",
    "audio_bitrate",
    "audioBitrate",
    "audio_frequency",
    "video_bitrate",
    "videoBitrate",
    "profile",
    "token",
];

const CONFIG_KEYS: &[&str] = &[
    "api_key",
    "api_secret",
    "ws_url",
    "health_port",
    "log_level",
    "template_address",
    "insecure",
    "redis",
    "address",
    "username",
    "password",
    "db",
    "file_output",
    "local",
    "work_dir",
    "local_dir",
    "s3",
    "azblob",
    "gcp",
    "access_key",
    "secret",
    "endpoint",
    "region",
    "bucket",
    "account_name",
    "account_key",
    "container_name",
    "defaults",
    "preset",
    "width",
    "height",
    "framerate",
    "video_bitrate",
    "profile",
    "reservation_timeout",
    "start_timeout",
    "chromium_path",
    "max_duration",
    "watchdog",
    "page_check_interval",
    "page_check_misses",
    "video_stall",
    "template_base",
    "cluster_id",
    "cpu_cost",
    "max_cpu_utilization",
    "web_cpu_cost",
    "session_limits",
    "file_output_max_duration",
    "azure",
    "io_update_egress_info",
    "enable_chrome_sandbox",
];

/// `valid` (one of several encodings), damaged: bytes flipped, cut, inserted; or random bytes.
fn mutated(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let damaged = (
        prop::sample::select(valid),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..6),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, byte),
                    _ => bytes[i] ^= 0x80,
                }
            }
            bytes
        });
    prop_oneof![
        3 => damaged,
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

// ---- what the inputs are fed to ----------------------------------------------------------------

/// A config under which validation touches nothing but a temporary work directory.
struct Fixture {
    config: Config,
    _work: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let work = tempfile::tempdir().expect("a temp dir");
    let yaml = format!(
        "api_key: k\napi_secret: s\nws_url: ws://127.0.0.1:7880\nfile_output: {{work_dir: {w}, local_dir: {w}, s3: {{bucket: b}}}}",
        w = work.path().display()
    );
    let config = crate::config::parse(&yaml)
        .expect("the fixture config")
        .config;
    Fixture {
        config,
        _work: work,
    }
}

/// A recorder-protocol Start, as livekit-server would send it: validated as the daemon does.
fn handle_start(start: &StartRecordingRequest, config: &Config) -> Result<(), String> {
    match crate::request::validate("RR_fuzz", start, config) {
        Ok(spec) => {
            if let Some(f) = &spec.output.file {
                if !f.local_path.starts_with(config.work_dir()) {
                    return Err(format!(
                        "an upload's file outside the work dir: {}",
                        f.local_path.display()
                    ));
                }
            }
            Ok(())
        }
        Err(e) => said(&e),
    }
}

fn handle_start_egress(req: &StartEgressRequest, config: &Config) -> Result<(), String> {
    let ctx = crate::egress::request::Context {
        config,
        builtin_template_base: "http://127.0.0.1:9/egress.html",
        now_ns: 1_709_214_307_089_000_000,
    };
    match crate::egress::request::validate(req, &ctx) {
        Ok(_) => Ok(()),
        Err(e) => said(&e),
    }
}

fn seed_start() -> StartRecordingRequest {
    StartRecordingRequest {
        input: Some(start_recording_request::Input::Template(
            RecordingTemplate {
                layout: "speaker-dark".into(),
                room_name: "room".into(),
                base_url: String::new(),
            },
        )),
        output: Some(start_recording_request::Output::Filepath(
            "rooms/room.mp4".into(),
        )),
        options: Some(RecordingOptions {
            preset: 1,
            width: 1280,
            height: 720,
            ..Default::default()
        }),
    }
}

fn seed_start_egress() -> Vec<StartEgressRequest> {
    use livekit_protocol::{
        EncodedFileOutput, RoomCompositeEgressRequest, StreamOutput, WebEgressRequest,
    };
    let file = EncodedFileOutput {
        filepath: "{room_name}/{time}.mp4".into(),
        ..Default::default()
    };
    let stream = StreamOutput {
        protocol: 0,
        urls: vec!["rtmp://127.0.0.1/live/key".into()],
    };
    vec![
        StartEgressRequest {
            egress_id: "EG_web".into(),
            request: Some(start_egress_request::Request::Web(WebEgressRequest {
                url: "http://127.0.0.1:9/".into(),
                file_outputs: vec![file.clone()],
                stream_outputs: vec![stream.clone()],
                ..Default::default()
            })),
            ..Default::default()
        },
        StartEgressRequest {
            egress_id: "EG_room".into(),
            room_name: "room".into(),
            request: Some(start_egress_request::Request::RoomComposite(
                RoomCompositeEgressRequest {
                    room_name: "room".into(),
                    layout: "grid".into(),
                    file_outputs: vec![file],
                    stream_outputs: vec![stream],
                    ..Default::default()
                },
            )),
            ..Default::default()
        },
    ]
}

// ---- the targets -------------------------------------------------------------------------------

#[test]
fn fuzz_request_json() {
    let fx = fixture();
    let input = prop_oneof![
        3 => document(REQUEST_KEYS).prop_map(|v| v.to_string()),
        1 => ".{0,200}",
    ];
    fuzz(
        "request JSON",
        input,
        |json| match crate::request::parse_json(json) {
            Ok(req) => handle_start(&req, &fx.config),
            Err(e) => said(&e),
        },
        String::len,
    );
}

#[test]
fn fuzz_config_yaml() {
    let input = prop_oneof![
        2 => document(CONFIG_KEYS).prop_map(|v| v.to_string()),
        2 => document(CONFIG_KEYS)
            .prop_map(|v| serde_norway::to_string(&v).unwrap_or_default()),
        1 => ".{0,200}",
    ];
    fuzz(
        "config YAML",
        input,
        |yaml| match crate::config::parse(yaml) {
            Ok(loaded) => {
                // What is derived from a loaded config must hold up too.
                let c = &loaded.config;
                let _ = (c.tracing_level(), c.gst_debug_level(), c.max_duration());
                let _ = (c.watchdog.page_check(), c.start_timeout(), c.work_dir());
                let _ = crate::bus::connection_info(&c.redis).map_err(|e| said(&e));
                Ok(())
            }
            Err(e) => said(&e),
        },
        String::len,
    );
}

#[test]
fn fuzz_recorder_protocol_messages() {
    let fx = fixture();
    let reservation = RecordingReservation {
        id: "RR_abc".into(),
        submitted_at: 1_700_000_000_000,
    }
    .encode_to_vec();
    let start = RecordingRequest {
        request_id: "RPC_1".into(),
        request: Some(recording_request::Request::Start(seed_start())),
    }
    .encode_to_vec();
    let end = RecordingRequest {
        request_id: "RPC_2".into(),
        request: Some(recording_request::Request::End(EndRecordingRequest {
            recording_id: "RR_abc".into(),
        })),
    }
    .encode_to_vec();
    let info = RecordingInfo {
        id: "RR_abc".into(),
        error: "max duration reached".into(),
        ..Default::default()
    }
    .encode_to_vec();
    fuzz(
        "recorder protocol",
        mutated(vec![reservation, start, end, info]),
        |bytes| {
            let _ = RecordingReservation::decode(bytes.as_slice()).map_err(|e| said(&e));
            // Results are read back from disk at start (service::results).
            let _ = RecordingInfo::decode(bytes.as_slice()).map_err(|e| said(&e));
            match RecordingRequest::decode(bytes.as_slice()) {
                Ok(RecordingRequest {
                    request: Some(recording_request::Request::Start(s)),
                    ..
                }) => handle_start(&s, &fx.config),
                Ok(_) => Ok(()),
                Err(e) => said(&e),
            }
        },
        Vec::len,
    );
}

#[test]
fn fuzz_psrpc_envelopes() {
    let start = seed_start_egress()[0].encode_to_vec();
    let request = envelope::wrap(&Request {
        request_id: "REQ_1".into(),
        client_id: "CLI_1".into(),
        sent_at: 1,
        expiry: 2,
        raw_request: start,
        ..Default::default()
    });
    let claim = envelope::wrap(&ClaimRequest {
        request_id: "REQ_1".into(),
        server_id: "SRV_1".into(),
        affinity: 0.5,
    });
    let claim_response = envelope::wrap(&ClaimResponse {
        request_id: "REQ_1".into(),
        server_id: "SRV_1".into(),
    });
    let response = envelope::wrap(&Response {
        request_id: "REQ_1".into(),
        error: "boom".into(),
        ..Default::default()
    });
    let fx = fixture();
    fuzz(
        "psrpc envelopes",
        mutated(vec![request, claim, claim_response, response]),
        |bytes| {
            let _ = envelope::unwrap::<ClaimRequest>(bytes).map_err(|e| said(&e));
            let _ = envelope::unwrap::<ClaimResponse>(bytes).map_err(|e| said(&e));
            let _ = envelope::unwrap::<Response>(bytes).map_err(|e| said(&e));
            match envelope::unwrap::<Request>(bytes) {
                // The payload goes on to the worker as a StartEgress.
                Ok(r) => match StartEgressRequest::decode(r.raw_request.as_slice()) {
                    Ok(req) => handle_start_egress(&req, &fx.config),
                    Err(e) => said(&e),
                },
                Err(e) => said(&e),
            }
        },
        Vec::len,
    );
}

#[test]
fn fuzz_egress_requests() {
    use livekit_protocol::{StopEgressRequest, UpdateStreamRequest};
    let fx = fixture();
    let mut seeds: Vec<Vec<u8>> = seed_start_egress()
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect();
    seeds.push(
        StopEgressRequest {
            egress_id: "EG_web".into(),
        }
        .encode_to_vec(),
    );
    seeds.push(
        UpdateStreamRequest {
            egress_id: "EG_web".into(),
            add_output_urls: vec!["rtmp://127.0.0.1/live/b".into()],
            remove_output_urls: vec!["rtmp://127.0.0.1/live/key".into()],
        }
        .encode_to_vec(),
    );
    fuzz(
        "egress requests",
        mutated(seeds),
        |bytes| {
            let _ = StopEgressRequest::decode(bytes.as_slice()).map_err(|e| said(&e));
            if let Ok(u) = UpdateStreamRequest::decode(bytes.as_slice()) {
                for url in u.add_output_urls.iter() {
                    if let Err(e) = crate::egress::request::check_rtmp_url(url, &fx.config) {
                        said(&e)?;
                    }
                }
            }
            match StartEgressRequest::decode(bytes.as_slice()) {
                Ok(req) => handle_start_egress(&req, &fx.config),
                Err(e) => said(&e),
            }
        },
        Vec::len,
    );
}

/// Not random: YAML's alias bomb ("billion laughs") must be refused, not expanded.
#[test]
fn a_yaml_alias_bomb_is_refused_in_bounded_memory() {
    let mut yaml = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        yaml.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let (parsed, peak) = metered(|| crate::config::parse(&yaml));
    assert!(peak < memory_bound(yaml.len()), "held {peak} bytes");
    // Unknown keys are warned about, or the repetition refused; either way, nothing exploded.
    if let Err(e) = parsed {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn the_meter_sees_allocations() {
    let (v, peak) = metered(|| vec![0u8; 1 << 20]);
    assert!(peak >= 1 << 20, "{peak}");
    drop(v);
}
