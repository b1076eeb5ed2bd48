//! The recorder's YAML configuration: keys, built-in defaults, presets and validation.
//!
//! Loaded and validated once at start. The keys are those of the original recorder
//! (`api_key`, `redis`, `file_output`, `defaults`, ...) plus a few of ours, each documented in
//! `config.example.yaml`. Unknown keys are reported as warnings, never dropped silently.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::options::{Options, Profile};
use crate::proto::livekit::RecordingPreset;

/// The template host the original recorder defaulted to. Ours defaults to its own built-in
/// templates (an empty `template_address`); this address still works when configured.
pub const ORIGINAL_TEMPLATE_ADDRESS: &str = "https://recorder.livekit.io/#";

/// Errors while reading the configuration. The texts match the original where it had one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing config")]
    Missing,
    #[error("could not read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not parse config: {0}")]
    Parse(String),
    #[error("invalid profile {0}")]
    InvalidProfile(String),
    #[error("invalid config: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The whole configuration, as read from YAML, with defaults filled in. Its `Debug` prints no
/// secret (api secret, Redis password, storage keys).
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// LiveKit API key, signs the template token.
    pub api_key: String,
    /// LiveKit API secret, signs the template token. Never logged.
    pub api_secret: String,
    /// LiveKit server websocket address, passed to templates as `?url=`.
    pub ws_url: String,
    /// Port of the status server in service mode; 0 = none.
    pub health_port: u16,
    /// debug, info, warn, error, fatal or panic.
    pub log_level: String,
    /// Base address of the layout templates; empty = the recorder's built-in templates.
    pub template_address: String,
    /// Lets Chromium load insecure content (local testing only).
    pub insecure: bool,
    pub redis: RedisConfig,
    pub file_output: FileOutputConfig,
    /// Recording options for requests that leave them out.
    #[serde(deserialize_with = "deserialize_defaults")]
    pub defaults: Options,
    /// Seconds a reservation waits for its Start request before the recorder is available again.
    pub reservation_timeout: u64,
    /// Seconds a template page has to log START_RECORDING; 0 = wait until the recording is
    /// ended (the original waited for START until End).
    pub start_timeout: u64,
    /// The Chromium binary; empty = the first of the usual Debian/Google locations that exists.
    pub chromium_path: String,
    /// Seconds after which any recording ends by itself (cleanly, "limit reached"); 0 = none.
    pub max_duration: u64,
    /// What ends a recording whose browser or display stopped working.
    pub watchdog: WatchdogConfig,
    /// Networks (CIDRs) that pages may not reach, besides link-local and cloud-metadata
    /// addresses, which are always refused (see `crate::policy`).
    pub deny_networks: Vec<crate::policy::Network>,
    /// Run Chromium with its sandbox (user namespaces); needs a recorder that is not root.
    pub chromium_sandbox: bool,
    // ---- Egress worker mode (livekit egress's own keys, same meaning) ----
    /// Room composite page base; empty = the recorder's built-in templates.
    pub template_base: String,
    /// The StartEgress topic this worker serves (egress's `cluster_id`); empty as livekit-server sends.
    pub cluster_id: String,
    /// What each kind of recording costs, and how much of the machine may be used.
    pub cpu_cost: CpuCostConfig,
    /// Storage for egress requests that name none (egress's `s3`).
    pub s3: Option<S3Config>,
    /// Storage for egress requests that name none (egress's `azure`).
    pub azure: Option<AzureConfig>,
    /// Storage for egress requests that name none (egress's `gcp`).
    pub gcp: Option<GcpConfig>,
    /// Per-output limits on a recording's length (egress's `session_limits`).
    pub session_limits: SessionLimits,
    /// livekit egress's name for `chromium_sandbox` (either turns the sandbox on).
    pub enable_chrome_sandbox: bool,
    /// Report with `IOInfo.UpdateEgressInfo` (livekit-server v1.4.2 - v1.5.0) instead of
    /// CreateEgress/UpdateEgress (v1.5.1 and later).
    pub io_update_egress_info: bool,
}

/// `cpu_cost:` as livekit egress reads it. A request is taken when the machine's cores x
/// `max_cpu_utilization` cover its cost plus the costs of the recordings already running.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct CpuCostConfig {
    pub max_cpu_utilization: f64,
    pub room_composite_cpu_cost: f64,
    pub audio_room_composite_cpu_cost: f64,
    pub web_cpu_cost: f64,
    pub audio_web_cpu_cost: f64,
}

impl Default for CpuCostConfig {
    fn default() -> Self {
        Self {
            max_cpu_utilization: 0.8,
            room_composite_cpu_cost: 2.0,
            audio_room_composite_cpu_cost: 1.0,
            web_cpu_cost: 2.0,
            audio_web_cpu_cost: 1.0,
        }
    }
}

/// `session_limits:` as livekit egress reads it: Go durations (`"6h"`, `"90m"`, `"30s"`) or
/// seconds; absent or 0 = no limit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SessionLimits {
    #[serde(deserialize_with = "deserialize_duration")]
    pub file_output_max_duration: Option<Duration>,
    #[serde(deserialize_with = "deserialize_duration")]
    pub stream_output_max_duration: Option<Duration>,
}

/// `watchdog:` when a recording that no longer records ends (with a finished file and an error
/// naming the cause). Seconds; 0 turns that check off.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct WatchdogConfig {
    /// How often the page is asked to evaluate `1` over DevTools.
    pub page_check_interval: u64,
    /// How many checks in a row may go unanswered before the page counts as hung.
    pub page_check_misses: u32,
    /// How long the screen may deliver no video frame.
    pub video_stall: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            page_check_interval: 10,
            page_check_misses: 3,
            video_stall: 10,
        }
    }
}

impl WatchdogConfig {
    /// The page check's interval and allowed misses; `None` when it is off.
    pub fn page_check(&self) -> Option<(Duration, u32)> {
        (self.page_check_interval > 0 && self.page_check_misses > 0).then(|| {
            (
                Duration::from_secs(self.page_check_interval),
                self.page_check_misses,
            )
        })
    }

    /// How long without a video frame ends the recording; `None` when it is off.
    pub fn video_stall(&self) -> Option<Duration> {
        (self.video_stall > 0).then(|| Duration::from_secs(self.video_stall))
    }
}

/// A Go duration string (`1h30m`, `45s`, `500ms`) or a number of seconds; 0 = none.
fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }
    let d = match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) if n >= 0.0 && n.is_finite() => Duration::from_secs_f64(n),
        NumberOrText::Number(n) => {
            return Err(serde::de::Error::custom(format!("invalid duration {n}")))
        }
        NumberOrText::Text(t) => parse_go_duration(&t).map_err(serde::de::Error::custom)?,
    };
    Ok((!d.is_zero()).then_some(d))
}

/// Parses Go's `time.ParseDuration` forms without sign: `1h30m`, `2.5s`, `300ms`, `0`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || format!("invalid duration {text:?} (like \"6h\", \"90m\", \"30s\")");
    let mut rest = t;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let value: f64 = rest[..n].parse().map_err(|_| invalid())?;
        rest = &rest[n..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            api_secret: String::new(),
            ws_url: String::new(),
            health_port: 0,
            log_level: "info".into(),
            template_address: String::new(),
            insecure: false,
            redis: RedisConfig::default(),
            file_output: FileOutputConfig::default(),
            defaults: Options::default(),
            reservation_timeout: 10,
            start_timeout: 0,
            chromium_path: String::new(),
            max_duration: 0,
            watchdog: WatchdogConfig::default(),
            deny_networks: Vec::new(),
            chromium_sandbox: false,
            template_base: String::new(),
            cluster_id: String::new(),
            cpu_cost: CpuCostConfig::default(),
            s3: None,
            azure: None,
            gcp: None,
            session_limits: SessionLimits::default(),
            enable_chrome_sandbox: false,
            io_update_egress_info: false,
        }
    }
}

/// `redis:`; `address` may also be a `redis://` or `rediss://` URL.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub address: String,
    pub username: String,
    pub password: String,
    pub db: i64,
}

/// `file_output:` where finished files go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileOutputConfig {
    /// Keep files on this machine at the request's `filepath` (forced when no upload is set).
    pub local: bool,
    /// Where files bound for an upload are written first; empty = the system temp dir.
    pub work_dir: String,
    /// Service and egress modes: where local files go (request file paths resolve under it,
    /// absolute ones must lie in it); empty = the working directory. Standalone writes where its
    /// request says.
    pub local_dir: String,
    /// Put in front of every object key (`recordings/` -> `recordings/<filepath>`).
    pub key_prefix: String,
    pub s3: Option<S3Config>,
    pub azblob: Option<AzureConfig>,
    pub gcp: Option<GcpConfig>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct S3Config {
    pub access_key: String,
    pub secret: String,
    /// Temporary credentials' session token (egress's key).
    pub session_token: String,
    /// Path-style addressing (egress's key); always used with a custom `endpoint`.
    pub force_path_style: bool,
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct AzureConfig {
    pub account_name: String,
    /// The storage account's access key. Empty (and no `sas_token`) = Entra ID: the pod's
    /// workload identity or managed identity.
    pub account_key: String,
    /// A SAS token (the query string a SAS URL carries) instead of the account key.
    pub sas_token: String,
    pub container_name: String,
    pub endpoint: String,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct GcpConfig {
    pub bucket: String,
    /// A service account key (JSON); empty = Application Default Credentials.
    pub credentials_json: String,
    /// Another endpoint (a private one); empty = Google's. `STORAGE_EMULATOR_HOST` wins.
    pub endpoint: String,
}

impl std::fmt::Debug for GcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpConfig")
            .field("bucket", &self.bucket)
            .field("credentials_json", &secret(&self.credentials_json))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// `defaults:` as written in YAML: every field optional, `preset` a name or a number.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDefaults {
    #[serde(deserialize_with = "deserialize_preset")]
    preset: RecordingPreset,
    width: Option<u32>,
    height: Option<u32>,
    depth: Option<u32>,
    framerate: Option<u32>,
    audio_bitrate: Option<u32>,
    audio_frequency: Option<u32>,
    video_bitrate: Option<u32>,
    profile: Option<String>,
}

fn deserialize_defaults<'de, D: Deserializer<'de>>(d: D) -> Result<Options, D::Error> {
    let raw = RawDefaults::deserialize(d)?;
    if raw.preset != RecordingPreset::None {
        // A preset replaces all defaults, as in the original.
        return Ok(Options::from_preset(raw.preset));
    }
    let base = Options::default();
    let profile = match raw.profile {
        None => base.profile,
        Some(p) => Profile::parse(&p)
            .ok_or_else(|| serde::de::Error::custom(ConfigError::InvalidProfile(p)))?,
    };
    Ok(Options {
        width: raw.width.unwrap_or(base.width),
        height: raw.height.unwrap_or(base.height),
        depth: raw.depth.unwrap_or(base.depth),
        framerate: raw.framerate.unwrap_or(base.framerate),
        audio_bitrate: raw.audio_bitrate.unwrap_or(base.audio_bitrate),
        audio_frequency: raw.audio_frequency.unwrap_or(base.audio_frequency),
        video_bitrate: raw.video_bitrate.unwrap_or(base.video_bitrate),
        profile,
    })
}

/// A preset given as its name (`HD_60`, any case) or its number (`2`).
fn deserialize_preset<'de, D: Deserializer<'de>>(d: D) -> Result<RecordingPreset, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Number(i64),
        Name(String),
    }
    let preset = match NameOrNumber::deserialize(d)? {
        NameOrNumber::Number(n) => i32::try_from(n)
            .ok()
            .and_then(|n| RecordingPreset::try_from(n).ok()),
        NameOrNumber::Name(s) => RecordingPreset::from_str_name(&s.trim().to_ascii_uppercase()),
    };
    preset.ok_or_else(|| {
        serde::de::Error::custom(
            "unknown preset (NONE, HD_30, HD_60, FULL_HD_30, FULL_HD_60 or 0-4)",
        )
    })
}

/// A loaded configuration and what was noticed while reading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Unknown keys, to be logged once logging is up.
    pub warnings: Vec<String>,
}

/// Where the configuration comes from: the YAML body wins over a file, as in the original.
pub fn load(body: Option<&str>, file: Option<&std::path::Path>) -> Result<Loaded, ConfigError> {
    match (body.filter(|b| !b.trim().is_empty()), file) {
        (Some(body), _) => parse(body),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            parse(&text)
        }
        (None, None) => Err(ConfigError::Missing),
    }
}

/// Parses and validates a YAML configuration.
pub fn parse(yaml: &str) -> Result<Loaded, ConfigError> {
    let mut unknown = Vec::new();
    let config: Config = if yaml.trim().is_empty() {
        Config::default()
    } else {
        let de = serde_norway::Deserializer::from_str(yaml);
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(de, &mut record);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_norway names the outer key itself; the full path says it better.
            let inner = match inner.split_once(": ") {
                Some((p, rest)) if !p.contains(' ') => rest.to_owned(),
                _ => inner,
            };
            if path == "." || path.is_empty() {
                ConfigError::Parse(inner)
            } else {
                ConfigError::Parse(format!("{path}: {inner}"))
            }
        })?
    };
    let mut config = config;
    // The original writes locally when no upload is configured.
    if config.file_output.s3.is_none()
        && config.file_output.azblob.is_none()
        && config.file_output.gcp.is_none()
    {
        config.file_output.local = true;
    }
    config.validate()?;
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|k| format!("unknown config key `{k}` ignored"))
        .collect();
    if log_level(&config.log_level).is_none() {
        warnings.push(format!(
            "unknown log_level `{}`: using info (one of debug, info, warn, error, dpanic, panic, fatal)",
            config.log_level
        ));
    }
    Ok(Loaded { config, warnings })
}

/// `log_level` as the original's logger read it (zap's level names, any case; empty = info),
/// plus `warning` and `trace`: the level's canonical name, or `None` for an unknown level.
fn log_level(level: &str) -> Option<&'static str> {
    Some(match level.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "" | "info" => "info",
        "warn" | "warning" => "warn",
        "error" => "error",
        "dpanic" => "dpanic",
        "panic" => "panic",
        "fatal" => "fatal",
        _ => return None,
    })
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.defaults
            .check()
            .map_err(|problem| ConfigError::Invalid {
                key: "defaults",
                problem,
            })?;
        if let Some(s3) = &self.file_output.s3 {
            if s3.bucket.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "file_output.s3.bucket",
                    problem: "required when file_output.s3 is set".into(),
                });
            }
        }
        if let Some(az) = &self.file_output.azblob {
            for (key, value) in [
                ("file_output.azblob.account_name", &az.account_name),
                ("file_output.azblob.account_key", &az.account_key),
                ("file_output.azblob.container_name", &az.container_name),
            ] {
                if value.is_empty() {
                    return Err(ConfigError::Invalid {
                        key,
                        problem: "required when file_output.azblob is set".into(),
                    });
                }
            }
        }
        if !self.file_output.key_prefix.is_empty() {
            crate::policy::object_key(&self.file_output.key_prefix, "x").map_err(|e| {
                ConfigError::Invalid {
                    key: "file_output.key_prefix",
                    problem: e.to_string(),
                }
            })?;
        }
        Ok(())
    }

    /// Whether Chromium runs with its sandbox (`chromium_sandbox`, or egress's
    /// `enable_chrome_sandbox`).
    pub fn chromium_sandbox(&self) -> bool {
        self.chromium_sandbox || self.enable_chrome_sandbox
    }

    /// The addresses pages may not reach: the defaults and `deny_networks`.
    pub fn network_policy(&self) -> crate::policy::NetworkPolicy {
        crate::policy::NetworkPolicy::new(&self.deny_networks)
    }

    /// How long any recording may last; `None` = until it is ended.
    pub fn max_duration(&self) -> Option<Duration> {
        (self.max_duration > 0).then(|| Duration::from_secs(self.max_duration))
    }

    /// Service and egress modes: where local files go.
    pub fn local_dir(&self) -> PathBuf {
        if self.file_output.local_dir.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(&self.file_output.local_dir)
        }
    }

    /// How long a reservation may wait for Start.
    pub fn reservation_timeout(&self) -> Duration {
        Duration::from_secs(self.reservation_timeout.max(1))
    }

    /// How long a template page has to log START_RECORDING; `None` = no limit.
    pub fn start_timeout(&self) -> Option<Duration> {
        (self.start_timeout > 0).then(|| Duration::from_secs(self.start_timeout))
    }

    /// Where files bound for an upload are written first.
    pub fn work_dir(&self) -> PathBuf {
        if self.file_output.work_dir.is_empty() {
            std::env::temp_dir()
        } else {
            PathBuf::from(&self.file_output.work_dir)
        }
    }

    /// The `GST_DEBUG` level the original derived from `log_level`.
    pub fn gst_debug_level(&self) -> &'static str {
        match log_level(&self.log_level).unwrap_or("info") {
            "trace" | "debug" => "2",
            "info" | "warn" | "error" => "1",
            _ => "0",
        }
    }

    /// The `tracing` filter directive for `log_level` (an unknown level is info).
    pub fn tracing_level(&self) -> &'static str {
        match log_level(&self.log_level).unwrap_or("info") {
            "trace" => "trace",
            "debug" => "debug",
            "info" => "info",
            "warn" => "warn",
            _ => "error",
        }
    }
}

/// What a secret prints as: nothing when unset, a placeholder when set.
fn secret(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        "{redacted}"
    }
}

/// A Redis address without the `user:password@` a URL form may carry.
fn address(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}{{redacted}}@{}", &value[..s + 3], &value[at + 1..])
        }
        _ => value.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key)
            .field("api_secret", &secret(&self.api_secret))
            .field("ws_url", &self.ws_url)
            .field("health_port", &self.health_port)
            .field("log_level", &self.log_level)
            .field("template_address", &self.template_address)
            .field("insecure", &self.insecure)
            .field("redis", &self.redis)
            .field("file_output", &self.file_output)
            .field("defaults", &self.defaults)
            .field("reservation_timeout", &self.reservation_timeout)
            .field("start_timeout", &self.start_timeout)
            .field("chromium_path", &self.chromium_path)
            .field("max_duration", &self.max_duration)
            .field("watchdog", &self.watchdog)
            .field("deny_networks", &self.deny_networks)
            .field("chromium_sandbox", &self.chromium_sandbox)
            .field("template_base", &self.template_base)
            .field("cluster_id", &self.cluster_id)
            .field("cpu_cost", &self.cpu_cost)
            .field("s3", &self.s3)
            .field("azure", &self.azure)
            .field("gcp", &self.gcp)
            .field("session_limits", &self.session_limits)
            .field("enable_chrome_sandbox", &self.enable_chrome_sandbox)
            .field("io_update_egress_info", &self.io_update_egress_info)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &address(&self.address))
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("db", &self.db)
            .finish()
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("access_key", &secret(&self.access_key))
            .field("secret", &secret(&self.secret))
            .field("session_token", &secret(&self.session_token))
            .field("force_path_style", &self.force_path_style)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account_name", &self.account_name)
            .field("account_key", &secret(&self.account_key))
            .field("sas_token", &secret(&self.sas_token))
            .field("container_name", &self.container_name)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_print_without_their_secrets() {
        let yaml = r#"
api_key: key
api_secret: api-secret-value
redis: {address: "redis://user:redis-url-pass@r:6379", password: redis-pass-value}
file_output:
  s3: {access_key: AKIA-ACCESS-VALUE, secret: s3-secret-value, session_token: s3-token-value, bucket: b}
  key_prefix: recordings/
azure: {account_name: n, account_key: azure-key-value, container_name: c}
deny_networks: [10.0.0.0/8, "fd00::/8"]
chromium_sandbox: true
"#;
        let c = parse(yaml).unwrap().config;
        let shown = format!("{c:?} {c:#?} {:?}", c.file_output);
        for secret in [
            "api-secret-value",
            "redis-url-pass",
            "redis-pass-value",
            "AKIA-ACCESS-VALUE",
            "s3-secret-value",
            "s3-token-value",
            "azure-key-value",
        ] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
        }
        assert!(
            shown.contains("{redacted}") && shown.contains("api_key: \"key\""),
            "{shown}"
        );
        assert!(shown.contains("redis://{redacted}@r:6379"), "{shown}");
        assert_eq!(c.deny_networks.len(), 2);
        assert!(c.chromium_sandbox());
        assert_eq!(c.file_output.key_prefix, "recordings/");
    }

    #[test]
    fn policy_keys_are_checked_and_sandbox_has_egress_s_alias() {
        let e = parse("deny_networks: [10.0.0.0/33]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deny_networks") && e.contains("invalid network"),
            "{e}"
        );
        let e = parse("file_output: {key_prefix: ../up}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("file_output.key_prefix"), "{e}");
        assert!(parse("enable_chrome_sandbox: true")
            .unwrap()
            .config
            .chromium_sandbox());
        assert!(!parse("").unwrap().config.chromium_sandbox());
        let policy = parse("deny_networks: [127.0.0.2]")
            .unwrap()
            .config
            .network_policy();
        assert!(policy.check_ip("127.0.0.2".parse().unwrap()).is_err());
        assert!(policy.check_ip("169.254.169.254".parse().unwrap()).is_err());
        assert!(policy.check_ip("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn empty_config_has_the_original_defaults() {
        let c = parse("").unwrap().config;
        assert_eq!(c.log_level, "info");
        assert_eq!(c.template_address, "", "built-in templates by default");
        assert!(
            c.file_output.local,
            "local is forced when nothing else is set"
        );
        assert_eq!(c.defaults, Options::default());
        assert_eq!(
            (c.defaults.width, c.defaults.height, c.defaults.framerate),
            (1920, 1080, 30)
        );
        assert_eq!(c.defaults.video_bitrate, 4500);
        assert_eq!(c.defaults.audio_frequency, 44100);
        assert_eq!(c.health_port, 0);
        assert_eq!(c.reservation_timeout(), Duration::from_secs(10));
        assert_eq!(
            c.start_timeout(),
            None,
            "waits for START until End, as the original"
        );
    }

    #[test]
    fn every_key_is_read() {
        let yaml = r#"
api_key: key
api_secret: secret
ws_url: wss://example.livekit.io
health_port: 8080
log_level: debug
template_address: http://127.0.0.1:1234/#
insecure: true
redis: {address: "127.0.0.1:6379", username: u, password: p, db: 3}
file_output:
  local: false
  work_dir: /tmp/work
  s3: {access_key: a, secret: s, endpoint: "http://127.0.0.1:5000", region: us-east-1, bucket: b}
defaults:
  width: 1280
  height: 720
  depth: 24
  framerate: 25
  audio_bitrate: 96
  audio_frequency: 48000
  video_bitrate: 2000
  profile: high
reservation_timeout: 7
start_timeout: 30
chromium_path: /usr/bin/chromium
"#;
        let l = parse(yaml).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = l.config;
        assert_eq!(c.api_key, "key");
        assert_eq!(c.api_secret, "secret");
        assert_eq!(c.ws_url, "wss://example.livekit.io");
        assert_eq!(c.health_port, 8080);
        assert_eq!(c.gst_debug_level(), "2");
        assert_eq!(c.template_address, "http://127.0.0.1:1234/#");
        assert!(c.insecure);
        assert_eq!(c.redis.address, "127.0.0.1:6379");
        assert_eq!(c.redis.db, 3);
        assert!(!c.file_output.local, "s3 set: not forced local");
        assert_eq!(c.work_dir(), PathBuf::from("/tmp/work"));
        let s3 = c.file_output.s3.clone().unwrap();
        assert_eq!(
            (s3.endpoint.as_str(), s3.bucket.as_str()),
            ("http://127.0.0.1:5000", "b")
        );
        assert_eq!(
            c.defaults,
            Options {
                width: 1280,
                height: 720,
                depth: 24,
                framerate: 25,
                audio_bitrate: 96,
                audio_frequency: 48000,
                video_bitrate: 2000,
                profile: Profile::High,
            }
        );
        assert_eq!(c.reservation_timeout(), Duration::from_secs(7));
        assert_eq!(c.chromium_path, "/usr/bin/chromium");
    }

    #[test]
    fn preset_by_name_or_number_replaces_all_defaults() {
        for yaml in [
            "defaults: {preset: HD_60, width: 640}",
            "defaults: {preset: hd_60}",
            "defaults: {preset: 2, video_bitrate: 1}",
        ] {
            let c = parse(yaml).unwrap().config;
            assert_eq!(
                c.defaults,
                Options::from_preset(RecordingPreset::Hd60),
                "{yaml}"
            );
            assert_eq!((c.defaults.width, c.defaults.framerate), (1280, 60));
        }
        let c = parse("defaults: {preset: NONE, width: 640, height: 480}")
            .unwrap()
            .config;
        assert_eq!((c.defaults.width, c.defaults.height), (640, 480));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("defaults: {preset: ULTRA_HD}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("could not parse config: "), "{e}");
        assert!(e.contains("defaults.preset"), "{e}");
        assert!(e.contains("unknown preset"), "{e}");

        let e = parse("health_port: lots").unwrap_err().to_string();
        assert!(e.contains("health_port"), "{e}");

        let e = parse("defaults: {width: -5}").unwrap_err().to_string();
        assert!(e.contains("defaults.width"), "{e}");

        let e = parse("defaults: {profile: extreme}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid profile extreme"), "{e}");

        let e = parse("defaults: {width: 1281, height: 720}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("defaults") && e.contains("even"), "{e}");

        let e = parse("file_output: {azblob: {account_name: a}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("file_output.azblob.account_key"), "{e}");

        let e = parse("api_key: [1, 2").unwrap_err().to_string();
        assert!(e.starts_with("could not parse config: "), "{e}");
    }

    #[test]
    fn unknown_keys_are_warned_about() {
        let l = parse("api_kee: x\nredis: {adress: y}\nfile_output: {local: true}").unwrap();
        assert_eq!(
            l.warnings,
            vec![
                "unknown config key `api_kee` ignored".to_string(),
                "unknown config key `redis.adress` ignored".to_string()
            ]
        );
    }

    #[test]
    fn body_wins_over_file_and_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "api_key: from-file").unwrap();
        assert_eq!(
            load(Some("api_key: from-body"), Some(&path))
                .unwrap()
                .config
                .api_key,
            "from-body"
        );
        assert_eq!(load(None, Some(&path)).unwrap().config.api_key, "from-file");
        assert_eq!(load(None, None).unwrap_err().to_string(), "missing config");
        let e = load(None, Some(&dir.path().join("nope.yaml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.yaml"), "{e}");
    }

    #[test]
    fn the_example_config_is_complete_and_clean() {
        let l = parse(include_str!("../config.example.yaml")).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.defaults, Options::default());
        assert_eq!(l.config.template_address, "");
    }

    #[test]
    fn log_levels_are_read_as_the_original_and_unknown_ones_warn() {
        let read = |l: &str| {
            let loaded = parse(&format!("log_level: \"{l}\"")).unwrap();
            (loaded.config.tracing_level(), loaded.warnings)
        };
        assert_eq!(read("warning"), ("warn", vec![]));
        assert_eq!(read("WARN"), ("warn", vec![]));
        assert_eq!(read("Debug"), ("debug", vec![]));
        assert_eq!(read("fatal"), ("error", vec![]));
        assert_eq!(read("dpanic"), ("error", vec![]));
        assert_eq!(read(""), ("info", vec![]));
        let (level, warnings) = read("loud");
        assert_eq!(level, "info", "an unknown level is info");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("unknown log_level `loud`"),
            "{warnings:?}"
        );
    }

    #[test]
    fn watchdog_settings_are_read_and_zero_turns_a_check_off() {
        let c = parse("").unwrap().config;
        assert_eq!(
            c.watchdog.page_check(),
            Some((Duration::from_secs(10), 3)),
            "3 misses over 30 s by default"
        );
        assert_eq!(c.watchdog.video_stall(), Some(Duration::from_secs(10)));
        let c = parse("watchdog: {page_check_interval: 2, page_check_misses: 4, video_stall: 0}")
            .unwrap()
            .config;
        assert_eq!(c.watchdog.page_check(), Some((Duration::from_secs(2), 4)));
        assert_eq!(c.watchdog.video_stall(), None);
        let c = parse("watchdog: {page_check_interval: 0}").unwrap().config;
        assert_eq!(c.watchdog.page_check(), None);
    }

    #[test]
    fn log_levels_map_to_gst_debug_as_the_original() {
        let level = |l: &str| {
            parse(&format!("log_level: {l}"))
                .unwrap()
                .config
                .gst_debug_level()
        };
        assert_eq!(level("debug"), "2");
        assert_eq!(level("info"), "1");
        assert_eq!(level("error"), "1");
        assert_eq!(level("panic"), "0");
    }

    #[test]
    fn egress_keys_are_read_with_egress_meanings() {
        let yaml = r#"
api_key: key
api_secret: secret
template_base: http://templates.local/egress.html
cluster_id: eu-1
max_duration: 21600
cpu_cost: {max_cpu_utilization: 0.9, room_composite_cpu_cost: 3, web_cpu_cost: 1.5}
s3: {access_key: a, secret: s, session_token: t, region: eu-west-1, bucket: b, force_path_style: true}
azure: {account_name: n, account_key: k, container_name: c}
gcp: {bucket: g, credentials_json: "{}"}
session_limits: {file_output_max_duration: 1h30m, stream_output_max_duration: 600}
enable_chrome_sandbox: true
io_update_egress_info: true
file_output: {local_dir: /out}
"#;
        let l = parse(yaml).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = l.config;
        assert_eq!(c.template_base, "http://templates.local/egress.html");
        assert_eq!(c.cluster_id, "eu-1");
        assert_eq!(c.max_duration(), Some(Duration::from_secs(6 * 3600)));
        assert_eq!(c.cpu_cost.max_cpu_utilization, 0.9);
        assert_eq!(c.cpu_cost.room_composite_cpu_cost, 3.0);
        assert_eq!(c.cpu_cost.web_cpu_cost, 1.5);
        assert_eq!(
            c.cpu_cost.audio_web_cpu_cost, 1.0,
            "unset costs keep defaults"
        );
        let s3 = c.s3.as_ref().unwrap();
        assert_eq!(
            (s3.session_token.as_str(), s3.force_path_style),
            ("t", true)
        );
        assert_eq!(c.azure.as_ref().unwrap().container_name, "c");
        assert_eq!(c.gcp.as_ref().unwrap().bucket, "g");
        assert_eq!(
            c.session_limits.file_output_max_duration,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            c.session_limits.stream_output_max_duration,
            Some(Duration::from_secs(600))
        );
        assert!(c.io_update_egress_info);
        assert_eq!(c.local_dir(), PathBuf::from("/out"));
        assert_eq!(parse("").unwrap().config.max_duration(), None);
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        assert_eq!(parse_go_duration("6h").unwrap(), Duration::from_secs(21600));
        assert_eq!(
            parse_go_duration("1h30m15s").unwrap(),
            Duration::from_secs(5415)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "h", "5", "5x", "-5s", "1h 2m"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
        let e = parse("session_limits: {file_output_max_duration: soon}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("session_limits.file_output_max_duration"), "{e}");
    }
}
