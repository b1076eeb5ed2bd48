//! A `StartRecordingRequest` (protojson or protobuf) made into a validated [`RecordingSpec`]:
//! defaults and presets merged, input and output checked with the original's error messages.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::options::Options;
use crate::proto::livekit::{start_recording_request, StartRecordingRequest};

/// Validation errors; the texts are the original recorder's, which livekit-server passes on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("missing request")]
    Missing,
    #[error("could not read request file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("could not parse request: {0}")]
    Parse(String),
    #[error("room name required for template input")]
    RoomNameRequired,
    #[error("input url or template required")]
    InputRequired,
    #[error("output file, s3 path, or rtmp urls required")]
    OutputRequired,
    #[error("invalid rtmp url")]
    InvalidRtmpUrl,
    #[error("file output must be {{path/}}filename.mp4")]
    NotMp4,
    #[error("missing API key or secret key")]
    MissingApiKey,
    #[error("invalid options: {0}")]
    Options(String),
    #[error("could not create output directory {path}: {message}")]
    CreateDir { path: PathBuf, message: String },
    /// A URL, path or key the rules refuse (see [`crate::policy`]).
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// Who the request comes from, which decides where its files may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Standalone mode: the operator, who may name any local path.
    Operator,
    /// Service mode: whoever can call livekit-server's recording API. Local files go under
    /// `file_output.local_dir` and never replace an existing file.
    Requester,
}

/// What the page to record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Any address Chromium can open; recording starts at once.
    Url(String),
    /// A page whose address the front-end has built (egress: a room composite page, or a web
    /// page). With `markers`, recording spans START_RECORDING..END_RECORDING and the page's
    /// `div.error` is watched, as for a template.
    Page { url: String, markers: bool },
    /// A LiveKit room through a layout page; recording spans START_RECORDING..END_RECORDING.
    Template {
        layout: String,
        room_name: String,
        /// The template host: the request's `base_url` or the config's `template_address`;
        /// empty = the recorder's built-in templates.
        base_url: String,
    },
}

/// An MP4 file output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    /// Where the recorder writes it.
    pub local_path: PathBuf,
    /// The object key / blob name for an upload. `None` when the file stays local.
    pub upload_key: Option<String>,
    /// The file stays at `local_path` after a confirmed upload (`file_output.local` with a
    /// storage configured); otherwise an uploaded file is removed.
    pub keep: bool,
}

/// Where the recording goes: an MP4 file, FLV streamed to RTMP URLs, or both at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    pub file: Option<FileOutput>,
    /// `Some` when the recording streams (URLs can be added while it runs), even if empty.
    pub rtmp: Option<Vec<String>>,
}

impl Outputs {
    /// A file output only.
    pub fn file(local_path: PathBuf, upload_key: Option<String>) -> Self {
        Self {
            file: Some(FileOutput {
                local_path,
                upload_key,
                keep: false,
            }),
            rtmp: None,
        }
    }

    /// RTMP outputs only.
    pub fn rtmp(urls: Vec<String>) -> Self {
        Self {
            file: None,
            rtmp: Some(urls),
        }
    }
}

/// A validated recording: everything a session needs to know about what to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSpec {
    /// The recording id (`RR_...` from livekit-server, `standalone` in standalone mode).
    pub id: String,
    pub input: Input,
    pub output: Outputs,
    pub options: Options,
    /// The recording ends by itself (cleanly, "limit reached") after this long.
    pub max_duration: Option<std::time::Duration>,
}

impl RecordingSpec {
    /// The room for template input (goes into the result), empty for URL input.
    pub fn room_name(&self) -> &str {
        match &self.input {
            Input::Template { room_name, .. } => room_name,
            Input::Url(_) | Input::Page { .. } => "",
        }
    }
}

/// Reads a request given as protojson: `snake_case` or `camelCase` keys, enums by name or
/// number, numbers as JSON numbers or strings.
pub fn parse_json(json: &str) -> Result<StartRecordingRequest, RequestError> {
    serde_json::from_str(json).map_err(|e| RequestError::Parse(e.to_string()))
}

/// The request for standalone mode: the JSON body wins over a file, as in the original.
pub fn load(
    body: Option<&str>,
    file: Option<&Path>,
) -> Result<StartRecordingRequest, RequestError> {
    match (body.filter(|b| !b.trim().is_empty()), file) {
        (Some(body), _) => parse_json(body),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| RequestError::Read {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            parse_json(&text)
        }
        (None, None) => Err(RequestError::Missing),
    }
}

/// Validates a standalone request (see [`validate_as`]).
pub fn validate(
    id: &str,
    req: &StartRecordingRequest,
    config: &Config,
) -> Result<RecordingSpec, RequestError> {
    validate_as(id, req, config, Origin::Operator)
}

/// Validates a request against the configuration, in the original's order (input, then output),
/// and prepares its output: the local directory is created (0755), and an upload's file gets a
/// unique name in the work directory. The URL, path and key rules of [`crate::policy`] apply:
/// every string is free of control characters before it goes anywhere, pages are `http(s)`
/// outside the denied networks, RTMP URLs are `rtmp(s)` with a host (at most 10); a
/// [`Origin::Requester`]'s local file lies under `file_output.local_dir` and is created new.
pub fn validate_as(
    id: &str,
    req: &StartRecordingRequest,
    config: &Config,
    origin: Origin,
) -> Result<RecordingSpec, RequestError> {
    use crate::policy::{check_page_url, check_text};
    let net = config.network_policy();
    let input = match &req.input {
        Some(start_recording_request::Input::Url(url)) if !url.trim().is_empty() => {
            check_page_url("url", url, &net)?;
            Input::Url(url.clone())
        }
        Some(start_recording_request::Input::Template(t)) => {
            check_text("room_name", &t.room_name)?;
            check_text("layout", &t.layout)?;
            if t.room_name.is_empty() {
                return Err(RequestError::RoomNameRequired);
            }
            if config.api_key.is_empty() || config.api_secret.is_empty() {
                return Err(RequestError::MissingApiKey);
            }
            let base_url = if t.base_url.is_empty() {
                config.template_address.clone()
            } else {
                check_page_url("base_url", &t.base_url, &net)?;
                t.base_url.clone()
            };
            Input::Template {
                layout: t.layout.clone(),
                room_name: t.room_name.clone(),
                base_url,
            }
        }
        _ => return Err(RequestError::InputRequired),
    };

    let options = config.defaults.merge(req.options.as_ref());
    options.check().map_err(RequestError::Options)?;

    let output = match &req.output {
        Some(start_recording_request::Output::Rtmp(rtmp)) => {
            if rtmp.urls.is_empty() {
                return Err(RequestError::OutputRequired);
            }
            if rtmp.urls.len() > crate::policy::MAX_RTMP_OUTPUTS {
                return Err(crate::policy::PolicyError::TooManyRtmpOutputs.into());
            }
            for url in &rtmp.urls {
                check_rtmp_url(url, config)?;
            }
            Outputs::rtmp(rtmp.urls.clone())
        }
        Some(start_recording_request::Output::Filepath(filepath)) => {
            check_text("filepath", filepath)?;
            file_output(id, filepath, config, origin)?
        }
        None => return Err(RequestError::OutputRequired),
    };

    Ok(RecordingSpec {
        id: id.to_owned(),
        input,
        output,
        options,
        max_duration: config.max_duration(),
    })
}

fn file_output(
    id: &str,
    filepath: &str,
    config: &Config,
    origin: Origin,
) -> Result<Outputs, RequestError> {
    let name = Path::new(filepath)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if !filepath.ends_with(".mp4") || name.len() <= ".mp4".len() {
        return Err(RequestError::NotMp4);
    }
    // As the original: `local` only decides where the file is written (the request's filepath,
    // kept; else a work file, removed once uploaded); any configured storage gets the upload.
    let fo = &config.file_output;
    let upload = fo.s3.is_some() || fo.azblob.is_some() || fo.gcp.is_some();
    // The object key: the filepath without a leading `/` (the original's S3 client dropped it),
    // then the key rules, behind `file_output.key_prefix`.
    let key = || crate::policy::object_key(&fo.key_prefix, filepath.trim_start_matches('/'));
    if fo.local {
        let upload_key = if upload { Some(key()?) } else { None };
        let local_path = match origin {
            Origin::Operator => {
                let local_path = PathBuf::from(filepath);
                if let Some(dir) = local_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_dir(dir)?;
                }
                local_path
            }
            Origin::Requester => {
                let path = crate::policy::local_output_path(&config.local_dir(), filepath)?;
                crate::policy::reserve_file(&path)?;
                path
            }
        };
        return Ok(Outputs {
            file: Some(FileOutput {
                local_path,
                upload_key,
                keep: true,
            }),
            rtmp: None,
        });
    }
    let upload_key = key()?;
    // Files bound for an upload get a name of their own in the work directory: two recordings
    // with the same basename never collide.
    let dir = config.work_dir();
    create_dir(&dir)?;
    let safe_id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let unique = format!(
        "{safe_id}-{}-{}",
        std::process::id(),
        crate::util::random_token(8)
    );
    Ok(Outputs::file(
        dir.join(format!("{unique}-{name}")),
        Some(upload_key),
    ))
}

/// An RTMP URL added to a running recording, checked as Start checks its URLs.
pub fn check_rtmp_url(url: &str, config: &Config) -> Result<(), RequestError> {
    crate::policy::check_rtmp_url(url, &config.network_policy()).map_err(|e| match e {
        crate::policy::PolicyError::InvalidRtmpUrl => RequestError::InvalidRtmpUrl,
        e => RequestError::Policy(e),
    })
}

/// Creates `dir` and its parents with mode 0755.
pub(crate) fn create_dir(dir: &Path) -> Result<(), RequestError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| RequestError::CreateDir {
            path: dir.to_owned(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Profile;
    use crate::proto::livekit::RecordingPreset;

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml).unwrap().config
    }

    fn check(json: &str, cfg: &Config) -> Result<RecordingSpec, RequestError> {
        validate("RR_test", &parse_json(json)?, cfg)
    }

    #[test]
    fn protojson_forms_are_all_read() {
        let a = parse_json(
            r#"{"template": {"layout": "speaker-dark", "room_name": "r"}, "filepath": "a.mp4",
                "options": {"preset": "HD_60", "width": "1280", "video_bitrate": 2048}}"#,
        )
        .unwrap();
        let b = parse_json(
            r#"{"template": {"layout": "speaker-dark", "roomName": "r"}, "filepath": "a.mp4",
                "options": {"preset": 2, "width": 1280, "videoBitrate": "2048"}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        let o = a.options.unwrap();
        assert_eq!(o.preset, RecordingPreset::Hd60 as i32);
        assert_eq!((o.width, o.video_bitrate), (1280, 2048));
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        let e = parse_json(r#"{"url": 5}"#).unwrap_err().to_string();
        assert!(e.starts_with("could not parse request: "), "{e}");
        let e = parse_json(r#"{"options": {"preset": "HD_90"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("could not parse request: "), "{e}");
        assert_eq!(load(None, None).unwrap_err(), RequestError::Missing);
    }

    #[test]
    fn url_to_a_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.mp4");
        let json = format!(
            r#"{{"url": "http://127.0.0.1/", "filepath": "{}", "options": {{"preset": "HD_30"}}}}"#,
            path.display()
        );
        let spec = check(&json, &config("")).unwrap();
        assert_eq!(spec.input, Input::Url("http://127.0.0.1/".into()));
        assert_eq!(
            spec.output.file,
            Some(FileOutput {
                local_path: path.clone(),
                upload_key: None,
                keep: true
            })
        );
        assert_eq!(spec.options, Options::from_preset(RecordingPreset::Hd30));
        assert_eq!(spec.room_name(), "");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn validation_messages_are_the_originals() {
        let cfg = config("");
        let cases = [
            (r#"{"filepath": "a.mp4"}"#, "input url or template required"),
            (
                r#"{"url": "", "filepath": "a.mp4"}"#,
                "input url or template required",
            ),
            (
                r#"{"template": {"layout": "grid-dark"}, "filepath": "a.mp4"}"#,
                "room name required for template input",
            ),
            (
                r#"{"template": {"layout": "grid-dark", "room_name": "r"}, "filepath": "a.mp4"}"#,
                "missing API key or secret key",
            ),
            (
                r#"{"url": "http://x"}"#,
                "output file, s3 path, or rtmp urls required",
            ),
            (
                r#"{"url": "http://x", "rtmp": {"urls": []}}"#,
                "output file, s3 path, or rtmp urls required",
            ),
            (
                r#"{"url": "http://x", "rtmp": {"urls": ["rtmp://a/b", "live.twitch.tv"]}}"#,
                "invalid rtmp url",
            ),
            (
                r#"{"url": "http://x", "filepath": "out/x.avi"}"#,
                "file output must be {path/}filename.mp4",
            ),
            (
                r#"{"url": "http://x", "filepath": "out/.mp4"}"#,
                "file output must be {path/}filename.mp4",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(check(json, &cfg).unwrap_err().to_string(), want, "{json}");
        }
        let e = check(
            r#"{"url": "http://x", "filepath": "/tmp/x.mp4", "options": {"width": 1279, "height": 720}}"#,
            &cfg,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("invalid options: ") && e.contains("even"),
            "{e}"
        );
    }

    #[test]
    fn input_is_checked_before_output() {
        let e = check(r#"{"filepath": "x.avi"}"#, &config("")).unwrap_err();
        assert_eq!(e, RequestError::InputRequired);
    }

    #[test]
    fn template_takes_base_url_or_the_configured_address() {
        let cfg = config("api_key: k\napi_secret: s\ntemplate_address: http://t/#");
        let spec = check(
            r#"{"template": {"layout": "grid-dark", "room_name": "r"}, "rtmp": {"urls": ["rtmp://a/b"]}}"#,
            &cfg,
        )
        .unwrap();
        assert_eq!(
            spec.input,
            Input::Template {
                layout: "grid-dark".into(),
                room_name: "r".into(),
                base_url: "http://t/#".into()
            }
        );
        assert_eq!(spec.room_name(), "r");
        assert_eq!(spec.output, Outputs::rtmp(vec!["rtmp://a/b".into()]));
        let spec = check(
            r#"{"template": {"layout": "l", "room_name": "r", "base_url": "http://mine"}, "rtmp": {"urls": ["rtmp://a/b"]}}"#,
            &cfg,
        )
        .unwrap();
        assert!(
            matches!(spec.input, Input::Template { base_url, .. } if base_url == "http://mine")
        );
    }

    #[test]
    fn uploads_are_written_to_unique_files_in_the_work_dir() {
        let work = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{work_dir: {}, s3: {{bucket: b}}}}",
            work.path().display()
        ));
        let json = r#"{"url": "http://x", "filepath": "/rec/room.mp4"}"#;
        let a = check(json, &cfg).unwrap();
        let b = check(json, &cfg).unwrap();
        let (
            Some(FileOutput {
                local_path: pa,
                upload_key: ka,
                ..
            }),
            Some(FileOutput { local_path: pb, .. }),
        ) = (&a.output.file, &b.output.file)
        else {
            panic!("file outputs expected");
        };
        assert_eq!(
            ka.as_deref(),
            Some("rec/room.mp4"),
            "key is the filepath without its leading / (as the original's S3 client)"
        );
        assert_ne!(pa, pb, "two recordings never share a work file");
        assert!(pa.starts_with(work.path()));
        assert!(pa.to_str().unwrap().ends_with("room.mp4"));
    }

    #[test]
    fn local_with_a_storage_writes_the_filepath_uploads_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec/room.mp4");
        let cfg = config(&format!(
            "file_output: {{local: true, work_dir: {}, s3: {{bucket: b}}}}",
            work.path().display()
        ));
        let json = format!(r#"{{"url": "http://x", "filepath": "{}"}}"#, path.display());
        let spec = check(&json, &cfg).unwrap();
        assert_eq!(
            spec.output.file,
            Some(FileOutput {
                local_path: path.clone(),
                upload_key: Some(path.display().to_string()[1..].to_owned()),
                keep: true
            }),
            "written at the filepath, uploaded under it, kept"
        );
        assert!(path.parent().unwrap().is_dir());
        // Not local: a work file, removed once uploaded.
        let cfg = config(&format!(
            "file_output: {{work_dir: {}, azblob: {{account_name: a, account_key: k, container_name: c}}}}",
            work.path().display()
        ));
        let spec = check(&json, &cfg).unwrap();
        let file = spec.output.file.unwrap();
        assert!(file.local_path.starts_with(work.path()));
        assert!(!file.keep);
        assert_eq!(
            file.upload_key,
            Some(path.display().to_string()[1..].to_owned())
        );
    }

    #[test]
    fn config_defaults_apply_to_requests_without_options() {
        let cfg = config("defaults: {width: 1280, height: 720, profile: high}");
        let spec = check(
            r#"{"url": "http://x", "filepath": "/tmp/lkr-test/x.mp4"}"#,
            &cfg,
        )
        .unwrap();
        assert_eq!((spec.options.width, spec.options.height), (1280, 720));
        assert_eq!(spec.options.profile, Profile::High);
    }

    fn service(json: &str, cfg: &Config) -> Result<RecordingSpec, RequestError> {
        validate_as("RR_test", &parse_json(json)?, cfg, Origin::Requester)
    }

    #[test]
    fn only_http_pages_outside_denied_networks_are_recorded_in_both_modes() {
        let cfg = config("api_key: k\napi_secret: s\ndeny_networks: [127.0.0.2]");
        for (url, want) in [
            ("file:///etc/", "url scheme not allowed: file"),
            ("chrome://version", "url scheme not allowed: chrome"),
            ("view-source:http://127.0.0.1/", "url scheme not allowed: view-source"),
            ("data:text/html,hi", "url scheme not allowed: data"),
            ("javascript:alert(1)", "url scheme not allowed: javascript"),
            (
                "http://127.0.0.2:8/",
                "address not allowed: 127.0.0.2 is in 127.0.0.2/32 (deny_networks)",
            ),
            (
                "http://169.254.169.254/latest/meta-data/",
                "address not allowed: 169.254.169.254 is in 169.254.0.0/16 (link-local and cloud metadata)",
            ),
        ] {
            let json = format!(r#"{{"url": "{url}", "filepath": "a.mp4"}}"#);
            assert_eq!(check(&json, &cfg).unwrap_err().to_string(), want, "{url}");
            assert_eq!(service(&json, &cfg).unwrap_err().to_string(), want, "{url}");
            let json = format!(
                r#"{{"template": {{"room_name": "r", "base_url": "{url}"}}, "filepath": "a.mp4"}}"#
            );
            assert_eq!(check(&json, &cfg).unwrap_err().to_string(), want, "base_url {url}");
        }
    }

    #[test]
    fn nul_and_control_characters_are_refused_in_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "api_key: k\napi_secret: s\nfile_output: {{local_dir: {}}}",
            dir.path().display()
        ));
        for (json, field) in [
            (r#"{"url": "http://x/\u0000", "filepath": "a.mp4"}"#, "url"),
            (
                r#"{"template": {"room_name": "r\u0000", "layout": "l"}, "filepath": "a.mp4"}"#,
                "room_name",
            ),
            (
                r#"{"template": {"room_name": "r", "layout": "l\n"}, "filepath": "a.mp4"}"#,
                "layout",
            ),
            (
                r#"{"template": {"room_name": "r", "base_url": "http://t/\u0000#"}, "filepath": "a.mp4"}"#,
                "base_url",
            ),
            (
                r#"{"url": "http://x", "filepath": "/etc/passwd\u0000.mp4"}"#,
                "filepath",
            ),
            (
                r#"{"url": "http://x", "filepath": "a\u001b.mp4"}"#,
                "filepath",
            ),
            (
                r#"{"url": "http://x", "rtmp": {"urls": ["rtmp://h/app/k\u0000"]}}"#,
                "rtmp url",
            ),
        ] {
            let want = format!("{field} contains control characters");
            assert_eq!(check(json, &cfg).unwrap_err().to_string(), want, "{json}");
            assert_eq!(service(json, &cfg).unwrap_err().to_string(), want, "{json}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing was created"
        );
    }

    #[test]
    fn service_mode_files_stay_under_local_dir_and_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{local_dir: {}}}",
            dir.path().display()
        ));
        let spec = service(r#"{"url": "http://x", "filepath": "rec/a.mp4"}"#, &cfg).unwrap();
        let path = dir.path().join("rec/a.mp4");
        assert_eq!(spec.output.file.as_ref().unwrap().local_path, path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "reserved, empty"
        );
        // The original's users send absolute paths inside the directory.
        let abs = format!(
            r#"{{"url": "http://x", "filepath": "{}/b.mp4"}}"#,
            dir.path().display()
        );
        assert_eq!(
            service(&abs, &cfg).unwrap().output.file.unwrap().local_path,
            dir.path().join("b.mp4")
        );
        assert_eq!(
            service(&abs, &cfg).unwrap_err().to_string(),
            "file already exists"
        );
        assert_eq!(
            service(r#"{"url": "http://x", "filepath": "rec/a.mp4"}"#, &cfg)
                .unwrap_err()
                .to_string(),
            "file already exists"
        );
        for (filepath, want) in [
            ("../x.mp4", "filepath may not hold .. components"),
            ("rec/../../x.mp4", "filepath may not hold .. components"),
            (
                "/etc/cron.d/x.mp4",
                "filepath must lie under the output directory",
            ),
            ("/tmp/x.mp4", "filepath must lie under the output directory"),
        ] {
            let json = format!(r#"{{"url": "http://x", "filepath": "{filepath}"}}"#);
            let e = service(&json, &cfg).unwrap_err().to_string();
            assert!(e.starts_with(want), "{filepath}: {e}");
        }
        assert!(!Path::new("/etc/cron.d/x.mp4").exists());
        // Standalone: the operator's path, anywhere.
        let elsewhere = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"url": "http://x", "filepath": "{}/x.mp4"}}"#,
            elsewhere.path().display()
        );
        assert!(check(&json, &cfg).is_ok());
    }

    #[test]
    fn object_keys_follow_the_rules_and_the_prefix() {
        let work = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "file_output: {{work_dir: {}, key_prefix: recordings/, s3: {{bucket: b}}}}",
            work.path().display()
        ));
        let key = |filepath: &str| {
            let json = format!(r#"{{"url": "http://x", "filepath": "{filepath}"}}"#);
            service(&json, &cfg).map(|s| s.output.file.unwrap().upload_key.unwrap())
        };
        assert_eq!(key("room/a.mp4").unwrap(), "recordings/room/a.mp4");
        assert_eq!(key("/out/a.mp4").unwrap(), "recordings/out/a.mp4");
        for bad in [
            "a/../b.mp4",
            "../b.mp4",
            "a/./b.mp4",
            "a//b.mp4",
            "a\\\\b.mp4",
        ] {
            let e = key(bad).unwrap_err().to_string();
            assert!(e.starts_with("object key may not"), "{bad}: {e}");
        }
    }

    #[test]
    fn at_most_ten_rtmp_urls_each_rtmp_with_a_host() {
        let cfg = config("");
        let urls = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"rtmp://h/live/{i}\"")).collect();
            format!(
                r#"{{"url": "http://x", "rtmp": {{"urls": [{}]}}}}"#,
                list.join(",")
            )
        };
        assert!(check(&urls(10), &cfg).is_ok());
        assert_eq!(
            check(&urls(11), &cfg).unwrap_err().to_string(),
            "at most 10 rtmp outputs per recording"
        );
        for bad in ["http://h/live/x", "rtmp:///live/x", "rtmp//h/x"] {
            let json = format!(r#"{{"url": "http://x", "rtmp": {{"urls": ["{bad}"]}}}}"#);
            assert_eq!(
                check(&json, &cfg).unwrap_err().to_string(),
                "invalid rtmp url",
                "{bad}"
            );
        }
    }
}
