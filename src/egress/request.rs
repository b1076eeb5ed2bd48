//! A StartEgress request made into a recording: which requests this worker takes at all
//! ([`support`]), and the validated [`EgressJob`] for one it takes ([`validate`]): the page to
//! open (a web URL, or the room composite page with its own token), the outputs, the encoding,
//! the storage, and the first `EgressInfo` with the request copied in, secrets redacted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol::{
    egress_info, encoded_file_output, room_composite_egress_request, web_egress_request,
    EgressInfo, EgressSourceType, EgressStatus, EncodedFileOutput, EncodedFileType,
    EncodingOptions, EncodingOptionsPreset, RoomCompositeEgressRequest, StreamOutput,
    StreamProtocol, VideoCodec, WebEgressRequest,
};

use crate::config::{AzureConfig, Config, FileOutputConfig, GcpConfig, S3Config};
use crate::options::{Options, Profile};
use crate::policy::{self, NetworkPolicy, PolicyError};
use crate::psrpc::proto::rpc::{start_egress_request, StartEgressRequest};
use crate::request::{FileOutput, Input, Outputs, RecordingSpec};
use crate::upload::Uploader;

/// The kinds of request this worker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Web,
    RoomComposite,
}

/// Why a request is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another worker should take it: no claim at all.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request itself is wrong: answered `invalid_argument`.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal::Invalid(msg.into())
}

fn unsupported(msg: impl Into<String>) -> Refusal {
    Refusal::Unsupported(msg.into())
}

impl From<PolicyError> for Refusal {
    fn from(e: PolicyError) -> Self {
        Refusal::Invalid(e.to_string())
    }
}

/// A request this worker will record, ready to start.
pub struct EgressJob {
    pub kind: Kind,
    /// The first info: STARTING, the request copied in with its secrets redacted.
    pub info: EgressInfo,
    pub spec: RecordingSpec,
    /// Where the file is uploaded, when the request or the config names a storage.
    pub uploader: Option<Arc<Uploader>>,
}

/// The outputs as the request states them (new repeated fields or the deprecated oneof).
struct RequestedOutputs<'a> {
    files: Vec<&'a EncodedFileOutput>,
    streams: Vec<&'a StreamOutput>,
    /// Segments or images: not recorded by this worker.
    other: bool,
}

// The deprecated `output` oneof is still what older clients send.
#[allow(deprecated)]
fn web_outputs(w: &WebEgressRequest) -> RequestedOutputs<'_> {
    let mut o = RequestedOutputs {
        files: w.file_outputs.iter().collect(),
        streams: w.stream_outputs.iter().collect(),
        other: !w.segment_outputs.is_empty() || !w.image_outputs.is_empty(),
    };
    match &w.output {
        Some(web_egress_request::Output::File(f)) => o.files.push(f),
        Some(web_egress_request::Output::Stream(s)) => o.streams.push(s),
        Some(web_egress_request::Output::Segments(_)) => o.other = true,
        None => {}
    }
    o
}

#[allow(deprecated)]
fn room_outputs(r: &RoomCompositeEgressRequest) -> RequestedOutputs<'_> {
    let mut o = RequestedOutputs {
        files: r.file_outputs.iter().collect(),
        streams: r.stream_outputs.iter().collect(),
        other: !r.segment_outputs.is_empty() || !r.image_outputs.is_empty(),
    };
    match &r.output {
        Some(room_composite_egress_request::Output::File(f)) => o.files.push(f),
        Some(room_composite_egress_request::Output::Stream(s)) => o.streams.push(s),
        Some(room_composite_egress_request::Output::Segments(_)) => o.other = true,
        None => {}
    }
    o
}

/// Whether this worker can record the request at all (the affinity step): web and room
/// composite requests with video and audio, to one MP4 file and/or RTMP URLs, with storage it
/// can write to. Anything else is left to another worker.
pub fn support(req: &StartEgressRequest) -> Result<Kind, Refusal> {
    let (kind, outputs, audio_only, video_only) = match &req.request {
        Some(start_egress_request::Request::Web(w)) => {
            (Kind::Web, web_outputs(w), w.audio_only, w.video_only)
        }
        Some(start_egress_request::Request::RoomComposite(r)) => (
            Kind::RoomComposite,
            room_outputs(r),
            r.audio_only,
            r.video_only,
        ),
        _ => return Err(unsupported("only web and room composite egress")),
    };
    if audio_only || video_only {
        return Err(unsupported("audio-only and video-only recordings"));
    }
    if outputs.other {
        return Err(unsupported("segment and image outputs"));
    }
    for f in &outputs.files {
        let t = EncodedFileType::try_from(f.file_type).unwrap_or(EncodedFileType::Ogg);
        if !matches!(t, EncodedFileType::DefaultFiletype | EncodedFileType::Mp4) {
            return Err(unsupported("file types other than MP4"));
        }
        match &f.output {
            Some(encoded_file_output::Output::AliOss(_)) => {
                return Err(unsupported("AliOSS storage"))
            }
            Some(encoded_file_output::Output::Gcp(g)) if g.proxy.is_some() => {
                return Err(unsupported("a proxy for GCP storage"))
            }
            _ => {}
        }
    }
    for s in &outputs.streams {
        let p = StreamProtocol::try_from(s.protocol).unwrap_or(StreamProtocol::Srt);
        if !matches!(p, StreamProtocol::DefaultProtocol | StreamProtocol::Rtmp) {
            return Err(unsupported("stream protocols other than RTMP"));
        }
    }
    Ok(kind)
}

/// What [`validate`] needs besides the request.
pub struct Context<'a> {
    pub config: &'a Config,
    /// The room composite page base when the config names none (the built-in templates);
    /// empty when there is none.
    pub builtin_template_base: &'a str,
    /// Unix time in nanoseconds, for the info and `{time}`-style file names.
    pub now_ns: i64,
}

/// Validates a supported request into a job.
pub fn validate(req: &StartEgressRequest, ctx: &Context<'_>) -> Result<EgressJob, Refusal> {
    let kind = support(req)?;
    if req.egress_id.is_empty() {
        return Err(invalid("egress_id is required"));
    }
    let config = ctx.config;
    let net = config.network_policy();
    policy::check_text("room_name", &req.room_name)?;
    let (input, room_name, outputs, options, info_request) = match &req.request {
        Some(start_egress_request::Request::Web(w)) => {
            policy::check_page_url("url", &w.url, &net)?;
            let input = Input::Page {
                url: w.url.clone(),
                markers: w.await_start_signal,
            };
            let options = match &w.options {
                None => encoding(None, None)?,
                Some(web_egress_request::Options::Preset(p)) => encoding(Some(*p), None)?,
                Some(web_egress_request::Options::Advanced(a)) => encoding(None, Some(a))?,
            };
            let mut copy = w.clone();
            redact_web(&mut copy);
            (
                input,
                req.room_name.clone(),
                web_outputs(w),
                options,
                egress_info::Request::Web(copy),
            )
        }
        Some(start_egress_request::Request::RoomComposite(r)) => {
            policy::check_text("room_name", &r.room_name)?;
            policy::check_text("layout", &r.layout)?;
            if r.room_name.is_empty() {
                return Err(invalid("room_name is required"));
            }
            let base = [r.custom_base_url.as_str(), &config.template_base]
                .into_iter()
                .find(|b| !b.is_empty())
                .unwrap_or(ctx.builtin_template_base);
            if base.is_empty() {
                return Err(invalid(
                    "no template page: set template_base or build the built-in templates",
                ));
            }
            // The request's own base is held to the rules; the config's and the built-in one are
            // the operator's (the browser still guards every request the page makes).
            if r.custom_base_url.is_empty() {
                policy::check_page_syntax("template_base", base)?;
            } else {
                policy::check_page_url("custom_base_url", base, &net)?;
            }
            let ws_url = if req.ws_url.is_empty() {
                &config.ws_url
            } else {
                &req.ws_url
            };
            let token = if req.token.is_empty() {
                crate::template::token(
                    &config.api_key,
                    &config.api_secret,
                    &r.room_name,
                    &req.egress_id,
                )
                .map_err(|e| invalid(e.to_string()))?
            } else {
                req.token.clone()
            };
            let layout = if r.layout.is_empty() {
                "grid"
            } else {
                &r.layout
            };
            let url = page_url(base, layout, ws_url, &token)?;
            let options = match &r.options {
                None => encoding(None, None)?,
                Some(room_composite_egress_request::Options::Preset(p)) => {
                    encoding(Some(*p), None)?
                }
                Some(room_composite_egress_request::Options::Advanced(a)) => {
                    encoding(None, Some(a))?
                }
            };
            let mut copy = r.clone();
            redact_room(&mut copy);
            (
                Input::Page { url, markers: true },
                r.room_name.clone(),
                room_outputs(r),
                options,
                egress_info::Request::RoomComposite(copy),
            )
        }
        _ => return Err(unsupported("only web and room composite egress")),
    };

    let (file_req, stream_req) = match (&outputs.files[..], &outputs.streams[..]) {
        ([], []) => return Err(invalid("no output: a file or stream output is required")),
        (files, streams) if files.len() > 1 || streams.len() > 1 => {
            return Err(invalid("at most one file output and one stream output"))
        }
        (files, streams) => (files.first().copied(), streams.first().copied()),
    };
    let rtmp = match stream_req {
        Some(s) => {
            if s.urls.is_empty() {
                return Err(invalid("stream output without urls"));
            }
            policy::check_rtmp_urls(&s.urls, &net)?;
            Some(s.urls.clone())
        }
        None => None,
    };
    let name_info = NameInfo {
        room_name: &room_name,
        room_id: &req.room_id,
        now_ns: ctx.now_ns,
    };
    let (file, uploader) = match file_req {
        Some(f) => {
            let (file, uploader) = file_target(&req.egress_id, f, &name_info, config, &net)?;
            (Some(file), uploader)
        }
        None => (None, None),
    };
    let max_duration = [
        config.max_duration(),
        if rtmp.is_some() && file.is_none() {
            config.session_limits.stream_output_max_duration
        } else {
            config.session_limits.file_output_max_duration
        },
    ]
    .into_iter()
    .flatten()
    .min();

    let info = EgressInfo {
        egress_id: req.egress_id.clone(),
        room_id: req.room_id.clone(),
        room_name: room_name.clone(),
        source_type: EgressSourceType::Web as i32,
        status: EgressStatus::EgressStarting as i32,
        started_at: ctx.now_ns,
        updated_at: ctx.now_ns,
        request: Some(info_request),
        ..Default::default()
    };
    Ok(EgressJob {
        kind,
        info,
        spec: RecordingSpec {
            id: req.egress_id.clone(),
            input,
            output: Outputs { file, rtmp },
            options,
            max_duration,
        },
        uploader,
    })
}

/// `rtmp://` or `rtmps://` with a host, outside the denied networks (UpdateStream's URLs).
pub fn check_rtmp_url(url: &str, config: &Config) -> Result<(), Refusal> {
    Ok(policy::check_rtmp_url(url, &config.network_policy())?)
}

/// The room composite page as egress builds it: the base with `layout`, `token` and `url` set
/// in its query, every key sorted (Go's `url.Values.Encode`).
pub fn page_url(base: &str, layout: &str, ws_url: &str, token: &str) -> Result<String, Refusal> {
    let mut url = url::Url::parse(base).map_err(|e| invalid(format!("invalid base url: {e}")))?;
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !matches!(k.as_ref(), "layout" | "token" | "url"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.extend([
        ("layout".to_owned(), layout.to_owned()),
        ("token".to_owned(), token.to_owned()),
        ("url".to_owned(), ws_url.to_owned()),
    ]);
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    url.set_query(Some(&query));
    Ok(url.into())
}

/// The encoding: egress's default (H264_720P_30), a preset, or advanced options. What the
/// engine cannot do is refused, never silently changed.
fn encoding(preset: Option<i32>, advanced: Option<&EncodingOptions>) -> Result<Options, Refusal> {
    let preset = match preset {
        None => EncodingOptionsPreset::H264720p30,
        Some(p) => EncodingOptionsPreset::try_from(p)
            .map_err(|_| invalid(format!("unknown encoding preset {p}")))?,
    };
    use EncodingOptionsPreset as P;
    let (width, height, framerate, video_bitrate) = match preset {
        P::H264720p30 => (1280, 720, 30, 3000),
        P::H264720p60 => (1280, 720, 60, 4500),
        P::H2641080p30 => (1920, 1080, 30, 4500),
        P::H2641080p60 => (1920, 1080, 60, 6000),
        P::PortraitH264720p30 => (720, 1280, 30, 3000),
        P::PortraitH264720p60 => (720, 1280, 60, 4500),
        P::PortraitH2641080p30 => (1080, 1920, 30, 4500),
        P::PortraitH2641080p60 => (1080, 1920, 60, 6000),
        P::Passthrough => return Err(invalid("passthrough encoding is not supported")),
    };
    let mut o = Options {
        width,
        height,
        depth: 24,
        framerate,
        audio_bitrate: 128,
        audio_frequency: 44100,
        video_bitrate,
        profile: Profile::Main,
    };
    if let Some(a) = advanced {
        use livekit_protocol::AudioCodec;
        match AudioCodec::try_from(a.audio_codec) {
            Ok(AudioCodec::DefaultAc | AudioCodec::Aac) => {}
            _ => return Err(invalid("only AAC audio is supported")),
        }
        o.profile = match VideoCodec::try_from(a.video_codec) {
            Ok(VideoCodec::DefaultVc | VideoCodec::H264Main) => Profile::Main,
            Ok(VideoCodec::H264Baseline) => Profile::Baseline,
            Ok(VideoCodec::H264High) => Profile::High,
            _ => return Err(invalid("only H.264 video is supported")),
        };
        let set = |v: i32, into: &mut u32, name: &str| -> Result<(), Refusal> {
            match v {
                0 => Ok(()),
                v if v > 0 => {
                    *into = v.unsigned_abs();
                    Ok(())
                }
                v => Err(invalid(format!("{name} {v} must not be negative"))),
            }
        };
        set(a.width, &mut o.width, "width")?;
        set(a.height, &mut o.height, "height")?;
        set(a.depth, &mut o.depth, "depth")?;
        set(a.framerate, &mut o.framerate, "framerate")?;
        set(a.audio_bitrate, &mut o.audio_bitrate, "audio_bitrate")?;
        set(a.audio_frequency, &mut o.audio_frequency, "audio_frequency")?;
        set(a.video_bitrate, &mut o.video_bitrate, "video_bitrate")?;
        // The engine puts a keyframe every 2 s.
        if a.key_frame_interval != 0.0 && (a.key_frame_interval - 2.0).abs() > f64::EPSILON {
            return Err(invalid(
                "key_frame_interval other than 2 s is not supported",
            ));
        }
    }
    o.check()
        .map_err(|e| invalid(format!("invalid options: {e}")))?;
    Ok(o)
}

/// What `{room_name}`-style placeholders are replaced with.
struct NameInfo<'a> {
    room_name: &'a str,
    room_id: &'a str,
    now_ns: i64,
}

/// The file's storage path as egress names it: placeholders replaced; empty or a directory gets
/// `<room_name or "web">-<time>.mp4`; `.mp4` appended when missing.
fn storage_path(filepath: &str, n: &NameInfo<'_>) -> String {
    let time = chrono_like(n.now_ns);
    let utc = utc_stamp(n.now_ns);
    let mut path = filepath
        .replace("{room_name}", n.room_name)
        .replace("{room_id}", n.room_id)
        .replace("{time}", &time)
        .replace("{utc}", &utc);
    if path.is_empty() || path.ends_with('/') {
        let who = if n.room_name.is_empty() {
            "web"
        } else {
            n.room_name
        };
        path.push_str(&format!("{who}-{time}.mp4"));
    } else if !path.ends_with(".mp4") {
        if let Some(i) = path.rfind('.') {
            if [".ogg", ".mp3", ".m3u8", ".ts", ".webm"].contains(&&path[i..]) {
                path.truncate(i);
            }
        }
        path.push_str(".mp4");
    }
    path
}

/// Go's `2006-01-02T150405` in UTC.
fn chrono_like(now_ns: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(now_ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}{s:02}")
}

/// Egress's `{utc}`: `20060102150405` plus milliseconds.
fn utc_stamp(now_ns: i64) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(now_ns);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}{ms:03}")
}

/// Unix nanoseconds to UTC calendar fields (Howard Hinnant's days-to-civil).
fn civil(now_ns: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let ms_total = now_ns.div_euclid(1_000_000);
    let secs = ms_total.div_euclid(1000);
    let ms = ms_total.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, ms)
}

/// Where the file is written and where it goes: uploaded under its storage path when the
/// request (or else the config) names a storage; else kept under `file_output.local_dir`.
fn file_target(
    egress_id: &str,
    f: &EncodedFileOutput,
    names: &NameInfo<'_>,
    config: &Config,
    net: &NetworkPolicy,
) -> Result<(FileOutput, Option<Arc<Uploader>>), Refusal> {
    policy::check_text("filepath", &f.filepath)?;
    // A storage endpoint named by the request is an address the recorder itself reaches.
    if let Some(encoded_file_output::Output::S3(s3)) = &f.output {
        policy::check_endpoint(&s3.endpoint, net)?;
    }
    let path = storage_path(&f.filepath, names);
    let storage = match &f.output {
        Some(encoded_file_output::Output::S3(s3)) => Some(FileOutputConfig {
            s3: Some(S3Config {
                access_key: s3.access_key.clone(),
                secret: s3.secret.clone(),
                session_token: s3.session_token.clone(),
                force_path_style: s3.force_path_style,
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
            }),
            ..Default::default()
        }),
        Some(encoded_file_output::Output::Azure(az)) => Some(FileOutputConfig {
            azblob: Some(AzureConfig {
                account_name: az.account_name.clone(),
                account_key: az.account_key.clone(),
                container_name: az.container_name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Some(encoded_file_output::Output::Gcp(g)) => Some(FileOutputConfig {
            gcp: Some(GcpConfig {
                bucket: g.bucket.clone(),
                credentials_json: g.credentials.clone(),
                endpoint: String::new(),
            }),
            ..Default::default()
        }),
        Some(encoded_file_output::Output::AliOss(_)) => return Err(unsupported("AliOSS storage")),
        None => config_storage(config),
    };
    let uploader = match storage {
        Some(s) => Uploader::from_config(&s)
            .map_err(|e| invalid(e.to_string()))?
            .map(Arc::new),
        None => None,
    };
    if uploader.is_some() {
        let path = policy::object_key(&config.file_output.key_prefix, &path)?;
        let dir = config.work_dir();
        create_dir(&dir)?;
        let base = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("recording.mp4");
        let local = dir.join(format!(
            "{egress_id}-{}-{base}",
            crate::util::random_token(8)
        ));
        return Ok((
            FileOutput {
                local_path: local,
                upload_key: Some(path),
                keep: false,
            },
            uploader,
        ));
    }
    let local = policy::local_output_path(&config.local_dir(), &path)?;
    policy::reserve_file(&local)?;
    Ok((
        FileOutput {
            local_path: local,
            upload_key: None,
            keep: true,
        },
        None,
    ))
}

/// The config's storage for egress requests that name none: egress's own `s3` / `azure` /
/// `gcp` keys, else `file_output`'s.
fn config_storage(config: &Config) -> Option<FileOutputConfig> {
    if config.s3.is_some() || config.azure.is_some() || config.gcp.is_some() {
        return Some(FileOutputConfig {
            s3: config.s3.clone(),
            azblob: config.azure.clone(),
            gcp: config.gcp.clone(),
            ..Default::default()
        });
    }
    let f = &config.file_output;
    (f.s3.is_some() || f.azblob.is_some() || f.gcp.is_some()).then(|| f.clone())
}

fn create_dir(dir: &Path) -> Result<(), Refusal> {
    crate::request::create_dir(dir).map_err(|e| invalid(e.to_string()))
}

fn redact(s: &mut String, name: &str) {
    if !s.is_empty() {
        *s = name.to_owned();
    }
}

fn redact_file(f: &mut EncodedFileOutput) {
    match &mut f.output {
        Some(encoded_file_output::Output::S3(s3)) => {
            redact(&mut s3.access_key, "{access_key}");
            redact(&mut s3.secret, "{secret}");
            redact(&mut s3.session_token, "{session_token}");
            redact(&mut s3.assume_role_external_id, "{external_id}");
        }
        Some(encoded_file_output::Output::Azure(az)) => {
            redact(&mut az.account_name, "{account_name}");
            redact(&mut az.account_key, "{account_key}");
        }
        Some(encoded_file_output::Output::Gcp(g)) => redact(&mut g.credentials, "{credentials}"),
        Some(encoded_file_output::Output::AliOss(a)) => {
            redact(&mut a.access_key, "{access_key}");
            redact(&mut a.secret, "{secret}");
        }
        None => {}
    }
}

fn redact_stream(s: &mut StreamOutput) {
    for u in &mut s.urls {
        *u = policy::redact_stream_url(u);
    }
}

#[allow(deprecated)]
fn redact_web(w: &mut WebEgressRequest) {
    w.file_outputs.iter_mut().for_each(redact_file);
    w.stream_outputs.iter_mut().for_each(redact_stream);
    match &mut w.output {
        Some(web_egress_request::Output::File(f)) => redact_file(f),
        Some(web_egress_request::Output::Stream(s)) => redact_stream(s),
        _ => {}
    }
}

#[allow(deprecated)]
fn redact_room(r: &mut RoomCompositeEgressRequest) {
    r.file_outputs.iter_mut().for_each(redact_file);
    r.stream_outputs.iter_mut().for_each(redact_stream);
    match &mut r.output {
        Some(room_composite_egress_request::Output::File(f)) => redact_file(f),
        Some(room_composite_egress_request::Output::Stream(s)) => redact_stream(s),
        _ => {}
    }
}

/// Whole nanoseconds of a duration, for EgressInfo fields.
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::{S3Upload, TrackEgressRequest};

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml).unwrap().config
    }

    fn web(url: &str, file: Option<EncodedFileOutput>, urls: &[&str]) -> StartEgressRequest {
        StartEgressRequest {
            egress_id: "EG_test".into(),
            request: Some(start_egress_request::Request::Web(WebEgressRequest {
                url: url.into(),
                file_outputs: file.into_iter().collect(),
                stream_outputs: if urls.is_empty() {
                    vec![]
                } else {
                    vec![StreamOutput {
                        protocol: StreamProtocol::Rtmp as i32,
                        urls: urls.iter().map(|u| u.to_string()).collect(),
                    }]
                },
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn ctx(config: &Config) -> Context<'_> {
        Context {
            config,
            builtin_template_base: "http://127.0.0.1:9/egress.html",
            // 2024-02-29T13:45:07.089Z
            now_ns: 1_709_214_307_089_000_000,
        }
    }

    #[test]
    fn only_web_and_room_composite_to_mp4_and_rtmp_are_taken() {
        let track = StartEgressRequest {
            egress_id: "EG_x".into(),
            request: Some(start_egress_request::Request::Track(
                TrackEgressRequest::default(),
            )),
            ..Default::default()
        };
        assert!(matches!(support(&track), Err(Refusal::Unsupported(_))));
        let none = StartEgressRequest::default();
        assert!(matches!(support(&none), Err(Refusal::Unsupported(_))));
        let mut ogg = EncodedFileOutput {
            file_type: EncodedFileType::Ogg as i32,
            ..Default::default()
        };
        assert!(matches!(
            support(&web("http://x", Some(ogg.clone()), &[])),
            Err(Refusal::Unsupported(_))
        ));
        ogg.file_type = EncodedFileType::Mp4 as i32;
        assert_eq!(support(&web("http://x", Some(ogg), &[])), Ok(Kind::Web));
        let mut srt = web("http://x", None, &["srt://h:1"]);
        if let Some(start_egress_request::Request::Web(w)) = &mut srt.request {
            w.stream_outputs[0].protocol = StreamProtocol::Srt as i32;
        }
        assert!(matches!(support(&srt), Err(Refusal::Unsupported(_))));
    }

    #[test]
    fn a_web_request_becomes_a_local_recording_under_local_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{local_dir: {}}}",
            dir.path().display()
        ));
        let file = EncodedFileOutput {
            filepath: "rec/{time}".into(),
            ..Default::default()
        };
        let job = validate(
            &web("https://example.test/page", Some(file), &[]),
            &ctx(&cfg),
        )
        .unwrap();
        assert_eq!(job.kind, Kind::Web);
        assert_eq!(
            job.spec.output.file.as_ref().unwrap().local_path,
            dir.path().join("rec/2024-02-29T134507.mp4")
        );
        assert!(job.uploader.is_none());
        assert_eq!(
            job.spec.input,
            Input::Page {
                url: "https://example.test/page".into(),
                markers: false
            }
        );
        assert_eq!(job.spec.options.width, 1280, "egress's default is 720p30");
        assert_eq!(job.spec.options.video_bitrate, 3000);
        assert_eq!(job.info.status, EgressStatus::EgressStarting as i32);
        assert_eq!(job.info.egress_id, "EG_test");
    }

    #[test]
    fn hostile_paths_and_urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{local_dir: {}}}",
            dir.path().display()
        ));
        let f = |p: &str| EncodedFileOutput {
            filepath: p.into(),
            ..Default::default()
        };
        for p in ["../x.mp4", "/etc/x.mp4", "a/\0b.mp4"] {
            let e = validate(&web("http://x", Some(f(p)), &[]), &ctx(&cfg));
            assert!(matches!(e, Err(Refusal::Invalid(_))), "{p}");
        }
        for u in [
            "file:///etc/passwd",
            "chrome://version",
            "javascript:alert(1)",
        ] {
            let e = validate(&web(u, Some(f("a.mp4")), &[]), &ctx(&cfg));
            assert!(
                matches!(&e, Err(Refusal::Invalid(m)) if m.starts_with("url scheme not allowed") || m.starts_with("invalid url")),
                "{u}: {:?}",
                e.err()
            );
        }
        let e = validate(&web("http://x", None, &["http://not-rtmp/a/b"]), &ctx(&cfg));
        assert_eq!(e.err(), Some(Refusal::Invalid("invalid rtmp url".into())));
        let e = validate(&web("http://x", None, &[]), &ctx(&cfg));
        assert!(matches!(e, Err(Refusal::Invalid(_))), "no output");
        std::fs::write(dir.path().join("taken.mp4"), b"x").unwrap();
        let e = validate(&web("http://x", Some(f("taken.mp4")), &[]), &ctx(&cfg));
        assert_eq!(
            e.err(),
            Some(Refusal::Invalid("file already exists".into()))
        );
    }

    #[test]
    fn room_composite_pages_are_egress_shaped_with_the_egress_id_as_identity() {
        let cfg = config(
            "api_key: key\napi_secret: secret-secret-secret-secret\nws_url: ws://127.0.0.1:7880",
        );
        let req = StartEgressRequest {
            egress_id: "EG_room".into(),
            room_id: "RM_1".into(),
            request: Some(start_egress_request::Request::RoomComposite(
                RoomCompositeEgressRequest {
                    room_name: "my room".into(),
                    layout: "speaker-light".into(),
                    stream_outputs: vec![StreamOutput {
                        protocol: 0,
                        urls: vec!["rtmp://127.0.0.1/live/secretkey".into()],
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let job = validate(&req, &ctx(&cfg)).unwrap();
        let Input::Page { url, markers } = &job.spec.input else {
            panic!("a page");
        };
        assert!(markers);
        let parsed = url::Url::parse(url).unwrap();
        let keys: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(keys, ["layout", "token", "url"], "sorted as Go encodes");
        assert!(url.starts_with("http://127.0.0.1:9/egress.html?layout=speaker-light&token="));
        assert!(url.ends_with("&url=ws%3A%2F%2F127.0.0.1%3A7880"), "{url}");
        let token = parsed
            .query_pairs()
            .find(|(k, _)| k == "token")
            .unwrap()
            .1
            .into_owned();
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(
            "key",
            "secret-secret-secret-secret",
        )
        .verify(&token)
        .unwrap();
        assert_eq!(claims.sub, "EG_room");
        assert_eq!(claims.video.room, "my room");
        // The request copy carries no stream key.
        let Some(egress_info::Request::RoomComposite(copy)) = &job.info.request else {
            panic!("room composite copy");
        };
        assert_eq!(
            copy.stream_outputs[0].urls,
            ["rtmp://127.0.0.1/live/{stream_key}"]
        );
        assert_eq!(job.info.room_name, "my room");
        assert_eq!(job.info.room_id, "RM_1");
    }

    #[test]
    fn base_urls_keep_their_own_query() {
        assert_eq!(
            page_url(
                "https://t.example/p?z=1&a=2&layout=old",
                "grid",
                "wss://x",
                "T"
            )
            .unwrap(),
            "https://t.example/p?a=2&layout=grid&token=T&url=wss%3A%2F%2Fx&z=1"
        );
    }

    #[test]
    fn storage_keys_are_redacted_and_uploads_use_the_work_dir() {
        let work = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{work_dir: {}}}",
            work.path().display()
        ));
        let file = EncodedFileOutput {
            filepath: "{room_name}/".into(),
            output: Some(encoded_file_output::Output::S3(S3Upload {
                access_key: "AKIA_SECRET".into(),
                secret: "very-secret".into(),
                bucket: "b".into(),
                endpoint: "http://127.0.0.1:9".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut req = web("http://x", Some(file), &[]);
        req.room_name = "r".into();
        let job = validate(&req, &ctx(&cfg)).unwrap();
        let out = job.spec.output.file.unwrap();
        assert_eq!(out.upload_key.as_deref(), Some("r/r-2024-02-29T134507.mp4"));
        assert!(out.local_path.starts_with(work.path()));
        assert!(job.uploader.is_some());
        let bytes = prost::Message::encode_to_vec(&job.info);
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("AKIA_SECRET") && !text.contains("very-secret"));
        assert!(text.contains("{access_key}") && text.contains("{secret}"));
    }

    #[test]
    fn requests_without_storage_use_the_configs_gcp() {
        // (Not through validate: a GCS client would start fetching Application Default
        // Credentials, which a test must not.)
        let cfg = config("gcp: {bucket: recordings}\nfile_output: {local_dir: /out}");
        let storage = config_storage(&cfg).expect("the config's storage");
        assert_eq!(
            storage.gcp.as_ref().map(|g| g.bucket.as_str()),
            Some("recordings")
        );
        assert!(storage.s3.is_none() && storage.azblob.is_none());
        let cfg = config("file_output: {gcp: {bucket: fo}}");
        let storage = config_storage(&cfg).expect("file_output's storage");
        assert_eq!(storage.gcp.as_ref().map(|g| g.bucket.as_str()), Some("fo"));
        assert!(config_storage(&config("file_output: {local_dir: /out}")).is_none());
    }

    #[test]
    fn file_names_follow_egress() {
        let n = NameInfo {
            room_name: "room",
            room_id: "RM_9",
            now_ns: 1_709_214_307_089_000_000,
        };
        assert_eq!(storage_path("", &n), "room-2024-02-29T134507.mp4");
        assert_eq!(
            storage_path("a/{room_id}-{utc}", &n),
            "a/RM_9-20240229134507089.mp4"
        );
        assert_eq!(storage_path("x.ogg", &n), "x.mp4");
        assert_eq!(storage_path("x.mp4", &n), "x.mp4");
        let web = NameInfo { room_name: "", ..n };
        assert_eq!(storage_path("out/", &web), "out/web-2024-02-29T134507.mp4");
    }

    #[test]
    fn encoding_options_map_or_are_refused() {
        let o = encoding(Some(EncodingOptionsPreset::H2641080p60 as i32), None).unwrap();
        assert_eq!(
            (o.width, o.height, o.framerate, o.video_bitrate),
            (1920, 1080, 60, 6000)
        );
        assert!(encoding(Some(EncodingOptionsPreset::Passthrough as i32), None).is_err());
        let adv = EncodingOptions {
            width: 640,
            height: 360,
            video_codec: VideoCodec::H264High as i32,
            ..Default::default()
        };
        let o = encoding(None, Some(&adv)).unwrap();
        assert_eq!((o.width, o.height, o.profile), (640, 360, Profile::High));
        let vp8 = EncodingOptions {
            video_codec: VideoCodec::Vp8 as i32,
            ..Default::default()
        };
        assert!(matches!(
            encoding(None, Some(&vp8)),
            Err(Refusal::Invalid(_))
        ));
        let odd = EncodingOptions {
            width: 641,
            ..Default::default()
        };
        assert!(matches!(
            encoding(None, Some(&odd)),
            Err(Refusal::Invalid(_))
        ));
    }
}
