//! Secrets the tests hand the recorder, and the scans that prove they never come back out: every
//! recorder's stdout and stderr (log lines and the result line) goes through [`scan`] when it
//! ends, and [`assert_children_clean`] reads `/proc/<pid>/environ` of every process a recorder
//! started.

use std::sync::Mutex;

/// Secrets named by a test outside the recorder's environment (egress requests carry storage
/// keys and stream URLs over Redis): scanned for in every recorder's output of this test binary.
static REGISTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Config keys whose values are secrets, at any depth.
const SECRET_KEYS: [&str; 6] = [
    "api_secret",
    "password",
    "secret",
    "access_key",
    "session_token",
    "account_key",
];

/// Values shorter than this are not scanned for: a one-letter test secret would be found in any
/// text. Tests that check redaction use longer ones.
const MIN_LEN: usize = 6;

/// Adds `secret` to what every recorder output is scanned for.
pub fn register(secret: &str) {
    if secret.len() >= MIN_LEN {
        if let Ok(mut r) = REGISTERED.lock() {
            if !r.iter().any(|s| s == secret) {
                r.push(secret.to_owned());
            }
        }
    }
}

/// Registers the secrets a request carries, from its `Debug` text: the values of secret fields
/// (`secret: "..."`, `access_key: "..."`, ...) and every quoted RTMP URL whole.
pub fn register_from_debug(text: &str) {
    for key in SECRET_KEYS.iter().chain(["token"].iter()) {
        let needle = format!("{key}: \"");
        let mut from = 0;
        while let Some(i) = text[from..].find(&needle).map(|i| i + from + needle.len()) {
            if let Some(end) = text[i..].find('"') {
                register(&text[i..i + end]);
            }
            from = i;
        }
    }
    let mut from = 0;
    while let Some(i) = text[from..].find("\"rtmp").map(|i| i + from + 1) {
        if let Some(end) = text[i..].find('"') {
            register(&text[i..i + end]);
        }
        from = i;
    }
}

/// The secrets in a recorder's environment: the config's secret values (and a Redis URL's
/// password), every RTMP URL of the request whole (its stream key is the secret; the redacted
/// form is `rtmp://host/app/{stream_key}`), plus what tests registered.
pub fn from_env(env: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for (k, v) in env {
        match *k {
            "LIVEKIT_RECORDER_CONFIG" => {
                if let Ok(yaml) = serde_norway::from_str::<serde_norway::Value>(v) {
                    yaml_secrets(&yaml, &mut found);
                }
            }
            "RECORDING_REQUEST" => {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(v) {
                    json_rtmp_urls(&json, &mut found);
                }
            }
            _ => {}
        }
    }
    found.retain(|s| s.len() >= MIN_LEN);
    found
}

fn yaml_secrets(v: &serde_norway::Value, out: &mut Vec<String>) {
    use serde_norway::Value;
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or_default();
                match (key, v.as_str()) {
                    (k, Some(s)) if SECRET_KEYS.contains(&k) => out.push(s.to_owned()),
                    ("address", Some(a)) => {
                        // redis://user:password@host
                        if let Some((creds, _)) =
                            a.split_once("://").and_then(|(_, r)| r.rsplit_once('@'))
                        {
                            if let Some((_, pw)) = creds.split_once(':') {
                                out.push(pw.to_owned());
                            }
                        }
                    }
                    _ => yaml_secrets(v, out),
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| yaml_secrets(v, out)),
        _ => {}
    }
}

fn json_rtmp_urls(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.starts_with("rtmp") && s.contains("://") => {
            out.push(s.clone())
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_rtmp_urls(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_rtmp_urls(v, out)),
        _ => {}
    }
}

/// Where `text` holds a secret of `secrets`, a registered one, or a JSON web token (a room
/// token): a description per finding, empty when clean.
pub fn findings(text: &str, secrets: &[String]) -> Vec<String> {
    let registered = REGISTERED.lock().map(|r| r.clone()).unwrap_or_default();
    let mut found: Vec<String> = secrets
        .iter()
        .chain(registered.iter())
        .filter(|s| text.contains(s.as_str()))
        .map(|s| format!("secret {s:?} in: {}", line_with(text, s)))
        .collect();
    if let Some(at) = jwt_at(text) {
        found.push(format!(
            "a token in: {}",
            line_with(text, &text[at..at + 20])
        ));
    }
    found
}

/// Panics when `text` (a recorder's stdout or stderr) holds a secret.
pub fn scan(what: &str, text: &str, secrets: &[String]) {
    let found = findings(text, secrets);
    assert!(
        found.is_empty(),
        "{what} holds secrets:\n{}",
        found.join("\n")
    );
}

/// The offset of a JSON web token (`eyJ...` `.` `eyJ...`) in `text`.
fn jwt_at(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut from = 0;
    while let Some(i) = text[from..].find("eyJ").map(|i| i + from) {
        let mut j = i;
        while j < b.len() && b64(b[j]) {
            j += 1;
        }
        if j - i >= 10 && text[j..].starts_with(".eyJ") {
            return Some(i);
        }
        from = i + 3;
    }
    None
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or("")
}

/// Every process tagged `tag`, with its environment: `(pid and name, NAME=value entries)`.
pub fn environs(tag: &str) -> Vec<(String, Vec<String>)> {
    super::processes_with_tag(tag)
        .into_iter()
        .filter_map(|p| {
            let pid = p.split(' ').next()?.to_owned();
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let vars = env
                .split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            Some((p, vars))
        })
        .collect()
}

/// Asserts that no process the recorder `recorder_pid` started (tagged `tag`) holds `secrets`,
/// the recorder's config or request variables, or anything outside the few variables children
/// get. Returns the processes checked (`pid name`).
pub fn assert_children_clean(tag: &str, recorder_pid: i32, secrets: &[String]) -> Vec<String> {
    const ALLOWED: [&str; 16] = [
        // Set by the programs themselves: PulseAudio re-executes itself with it, Chromium turns
        // D-Bus off for its helpers.
        "LD_BIND_NOW",
        "DBUS_SESSION_BUS_ADDRESS",
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "HOME",
        "DISPLAY",
        "PULSE_SERVER",
        "PULSE_SINK",
        "PULSE_RUNTIME_PATH",
        "PULSE_STATE_PATH",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "LKREC_TEST_TAG",
    ];
    let mut seen = Vec::new();
    for (proc_, vars) in environs(tag) {
        if proc_.split(' ').next() == Some(recorder_pid.to_string().as_str()) {
            continue;
        }
        let whole = vars.join("\n");
        let found = findings(&whole, secrets);
        assert!(
            found.is_empty(),
            "{proc_} environment holds secrets: {found:?}"
        );
        // Chromium's helpers overwrite their environment's memory with their command line:
        // only what carries the tag is an environment to read names from.
        if !vars.iter().any(|v| v.starts_with("LKREC_TEST_TAG=")) {
            seen.push(proc_);
            continue;
        }
        for v in &vars {
            let name = v.split('=').next().unwrap_or_default();
            assert!(
                ALLOWED.contains(&name) || name.starts_with("LC_") || name.starts_with("CHROME_"),
                "{proc_}: unexpected variable {name} in its environment"
            );
        }
        seen.push(proc_);
    }
    seen
}
