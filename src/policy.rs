//! What a request may make the recorder do: the one set of URL, address, path and object-key
//! rules that every front-end (standalone, the legacy service, the egress worker) applies before
//! anything reaches Chromium or GStreamer, and the redaction of what may not be logged.
//!
//! - **Pages** (`url`, `template.base_url`, egress URLs and template bases): `http` or `https`
//!   only (`url scheme not allowed: <scheme>`), no control characters, and a host outside the
//!   denied networks: link-local and cloud-metadata addresses by default ([`DEFAULT_DENY`],
//!   [`METADATA_NAMES`]), plus the config's `deny_networks`. Private ranges stay allowed
//!   (in-cluster template servers live there). The browser applies the same [`NetworkPolicy`] to
//!   every request the page makes (redirects, subresources), see [`crate::browser`].
//! - **RTMP URLs**: `rtmp` or `rtmps` with a host, at most [`MAX_RTMP_OUTPUTS`] per recording.
//! - **Local files** (service and egress modes): under `file_output.local_dir`, no `..`, never
//!   overwritten ([`reserve_file`] creates them with `O_EXCL`). Standalone writes where its
//!   operator says.
//! - **Object keys**: no leading `/`, no `.` or `..` segments, no backslash or control
//!   characters; `file_output.key_prefix` in front.
//! - **Redaction**: [`redact_page_url`] and [`redact_stream_url`] are the only ways URLs reach a
//!   log line, stdout or a result.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// At most this many RTMP URLs per recording (at start and added while it runs).
pub const MAX_RTMP_OUTPUTS: usize = 10;
/// Error texts that come from pages and child processes are cut to this many bytes.
pub const MAX_ERROR_TEXT: usize = 1024;
/// What a stream key is replaced with (livekit egress's form).
pub const STREAM_KEY_REDACTED: &str = "{stream_key}";

/// Networks refused by default, whatever the config says: link-local (where every cloud's
/// metadata service answers) and the cloud-metadata addresses outside it.
pub const DEFAULT_DENY: [(&str, &str); 4] = [
    ("169.254.0.0/16", "link-local and cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
];

/// Host names of cloud-metadata services (they resolve into [`DEFAULT_DENY`]).
pub const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why a request (or one of its strings) is refused. The texts go back to the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} contains control characters")]
    ControlCharacters(&'static str),
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("url scheme not allowed: {0}")]
    SchemeNotAllowed(String),
    #[error("url has no host")]
    NoHost,
    #[error("address not allowed: {0}")]
    AddressNotAllowed(String),
    /// The original recorder's text.
    #[error("invalid rtmp url")]
    InvalidRtmpUrl,
    #[error("at most {MAX_RTMP_OUTPUTS} rtmp outputs per recording")]
    TooManyRtmpOutputs,
    #[error("filepath may not hold .. components")]
    ParentDir,
    #[error("filepath must lie under the output directory {0}")]
    OutsideOutputDir(String),
    #[error("file already exists")]
    FileExists,
    #[error("could not create {path}: {message}")]
    Create { path: String, message: String },
    #[error("object key {0}")]
    ObjectKey(&'static str),
    #[error("invalid network {0:?}: expected an address or CIDR like 10.0.0.0/8 or fd00::/8")]
    InvalidNetwork(String),
}

// ---- networks -------------------------------------------------------------------------------------

/// An IP network in CIDR form (`10.0.0.0/8`, `fd00:ec2::254/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Chromium `--host-resolver-rules` patterns that match the addresses of this network as a
    /// URL host: `169.254.*.*`, one pattern per value of a partial octet (`172.16.0.0/12` ->
    /// `172.16.*.*` .. `172.31.*.*`), `fe8?:*`. IPv6 networks that no pattern expresses are
    /// left to the in-browser request check.
    fn host_patterns(&self) -> Vec<String> {
        match self.addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                let full = usize::from(self.prefix / 8);
                let rest = self.prefix % 8;
                let head: Vec<String> = o[..full].iter().map(u8::to_string).collect();
                let mut out = Vec::new();
                if rest == 0 {
                    out.push(v4_pattern(&head, full));
                } else {
                    let span = 1u16 << (8 - rest);
                    let first = u16::from(o[full]) & !(span - 1);
                    for v in first..first + span {
                        let mut h = head.clone();
                        h.push(v.to_string());
                        out.push(v4_pattern(&h, full + 1));
                    }
                }
                out
            }
            IpAddr::V6(a) => {
                if self.prefix == 128 {
                    return vec![a.to_string()];
                }
                let s = a.segments();
                if self.prefix < 16 {
                    // Leading hex digits of the first group: `fe80::/10` -> fe8?, fe9?, fea?,
                    // feb?, each followed by `:` (host names hold no `:`).
                    let hex = format!("{:04x}", s[0]);
                    let digits = usize::from(self.prefix / 4);
                    let rest = self.prefix % 4;
                    let prefixes = if rest == 0 {
                        vec![hex[..digits].to_owned()]
                    } else {
                        let span = 1u8 << (4 - rest);
                        let d = u8::from_str_radix(&hex[digits..=digits], 16).unwrap_or(0)
                            & !(span - 1);
                        (d..d + span)
                            .map(|v| format!("{}{v:x}", &hex[..digits]))
                            .collect()
                    };
                    return prefixes
                        .into_iter()
                        .filter_map(|p| v6_pattern(&p))
                        .collect();
                }
                // Whole groups, none of them zero (a zero group may print as `::`).
                let groups = usize::from(self.prefix / 16);
                if self.prefix.is_multiple_of(16) && s[..groups].iter().all(|g| *g != 0) {
                    let head: Vec<String> = s[..groups].iter().map(|g| format!("{g:x}")).collect();
                    return vec![format!("{}:*", head.join(":"))];
                }
                // Not expressible as a pattern: left to the in-browser request check.
                Vec::new()
            }
        }
    }
}

/// `a.b.*.*` for a prefix of `known` whole octets (the address itself when all 4 are known).
fn v4_pattern(head: &[String], known: usize) -> String {
    let mut parts: Vec<&str> = head.iter().map(String::as_str).collect();
    parts.extend(std::iter::repeat_n("*", 4usize.saturating_sub(known)));
    parts.join(".")
}

/// A pattern for the IPv6 addresses whose first group starts with the hex `digits`, as Chromium
/// prints them (without leading zeros): only a non-zero leading digit gives a pattern.
fn v6_pattern(digits: &str) -> Option<String> {
    if digits.is_empty() || digits.len() > 4 || digits.starts_with('0') {
        return None;
    }
    let wild = "?".repeat(4 - digits.len());
    Some(format!("{digits}{wild}:*"))
}

impl FromStr for Network {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::InvalidNetwork(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        // Normalised to the network address, so that patterns and Display are exact.
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One denied network and why it is denied (named in errors).
#[derive(Debug, Clone)]
struct Denied {
    net: Network,
    why: &'static str,
}

/// The addresses pages may not reach: [`DEFAULT_DENY`], [`METADATA_NAMES`] and the config's
/// `deny_networks`; `exempt` addresses (the built-in template server) stay reachable.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    deny: Vec<Denied>,
    exempt: Vec<SocketAddr>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl NetworkPolicy {
    /// The defaults plus `deny_networks`.
    pub fn new(deny_networks: &[Network]) -> Self {
        let mut deny: Vec<Denied> = DEFAULT_DENY
            .iter()
            .filter_map(|(n, why)| n.parse().ok().map(|net| Denied { net, why }))
            .collect();
        deny.extend(deny_networks.iter().map(|net| Denied {
            net: *net,
            why: "deny_networks",
        }));
        Self {
            deny,
            exempt: Vec::new(),
        }
    }

    /// The same policy with `addr` reachable whatever the networks say.
    pub fn exempting(mut self, addr: SocketAddr) -> Self {
        self.exempt.push(addr);
        self
    }

    /// Refuses an address in a denied network.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), PolicyError> {
        let ip = ip.to_canonical();
        match self.deny.iter().find(|d| d.net.contains(ip)) {
            Some(d) => Err(PolicyError::AddressNotAllowed(format!(
                "{ip} is in {} ({})",
                d.net, d.why
            ))),
            None => Ok(()),
        }
    }

    /// Refuses a host that is a denied address or a cloud-metadata name.
    pub fn check_host(&self, host: &url::Host<&str>) -> Result<(), PolicyError> {
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip)),
            url::Host::Domain(name) => {
                // Schemes other than http(s) (rtmp://) keep an address as a name: read it as
                // a browser (and getaddrinfo) would, `2852039166` and `0xA9FEA9FE` included.
                let as_http = url::Url::parse(&format!("http://{name}/"));
                match as_http.as_ref().ok().and_then(url::Url::host) {
                    Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
                    _ => check_name(name),
                }
            }
        }
    }

    /// Refuses `ip:port` unless it is exempt.
    pub fn check_socket(&self, addr: SocketAddr) -> Result<(), PolicyError> {
        if self
            .exempt
            .iter()
            .any(|e| e.ip() == addr.ip().to_canonical() && e.port() == addr.port())
        {
            return Ok(());
        }
        self.check_ip(addr.ip())
    }

    /// What Chromium may fetch: the URL's host, and for a name every address it resolves to.
    /// Schemes that touch no network (`data:`, `blob:`, ...) pass; so does a name that does not
    /// resolve (Chromium fails it itself).
    pub async fn check_request(&self, raw: &str) -> Result<(), PolicyError> {
        let Ok(url) = url::Url::parse(raw) else {
            return Ok(());
        };
        if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            None => Ok(()),
            Some(url::Host::Ipv4(ip)) => self.check_socket(SocketAddr::new(IpAddr::V4(ip), port)),
            Some(url::Host::Ipv6(ip)) => self.check_socket(SocketAddr::new(IpAddr::V6(ip), port)),
            Some(url::Host::Domain(name)) => {
                check_name(name)?;
                let lookup = tokio::net::lookup_host((name, port));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => addrs.into_iter().try_for_each(|a| {
                        self.check_socket(a).map_err(|e| match e {
                            PolicyError::AddressNotAllowed(why) => {
                                PolicyError::AddressNotAllowed(format!("{name} resolves to {why}"))
                            }
                            e => e,
                        })
                    }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Chromium's `--host-resolver-rules`: every denied network's addresses and the metadata
    /// names resolve to nothing, inside the browser, for every kind of request (WebSockets and
    /// workers included); the exempt hosts are excluded.
    pub fn resolver_rules(&self) -> String {
        let mut rules: Vec<String> = METADATA_NAMES
            .iter()
            .map(|n| format!("MAP {n} ~NOTFOUND"))
            .collect();
        for d in &self.deny {
            rules.extend(
                d.net
                    .host_patterns()
                    .into_iter()
                    .map(|p| format!("MAP {p} ~NOTFOUND")),
            );
        }
        for e in &self.exempt {
            let host = e.ip().to_string();
            if self.check_ip(e.ip()).is_err() && !rules.iter().any(|r| r.ends_with(&host)) {
                rules.push(format!("EXCLUDE {host}"));
            }
        }
        rules.join(", ")
    }
}

/// How long a name may take to resolve for the in-browser check.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn check_name(name: &str) -> Result<(), PolicyError> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if METADATA_NAMES.contains(&n.as_str()) {
        return Err(PolicyError::AddressNotAllowed(format!(
            "{n} is a cloud metadata service"
        )));
    }
    Ok(())
}

// ---- request strings and URLs ------------------------------------------------------------------

/// Refuses NUL and every other control character (they would end or alter the string once it
/// reaches C: GStreamer, Chromium's command line, the file system).
pub fn check_text(field: &'static str, value: &str) -> Result<(), PolicyError> {
    if value.chars().any(char::is_control) {
        return Err(PolicyError::ControlCharacters(field));
    }
    Ok(())
}

/// A page the browser may open: `http` or `https`, a host, not in a denied network.
pub fn check_page_url(
    field: &'static str,
    raw: &str,
    net: &NetworkPolicy,
) -> Result<url::Url, PolicyError> {
    let url = check_page_syntax(field, raw)?;
    let host = url.host().ok_or(PolicyError::NoHost)?;
    net.check_host(&host)?;
    Ok(url)
}

/// The address-free part of [`check_page_url`]: no control characters, `http` or `https`, a
/// host.
pub fn check_page_syntax(field: &'static str, raw: &str) -> Result<url::Url, PolicyError> {
    check_text(field, raw)?;
    let url = url::Url::parse(raw.trim()).map_err(|e| PolicyError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PolicyError::SchemeNotAllowed(url.scheme().to_owned()));
    }
    if url.host().is_none() {
        return Err(PolicyError::NoHost);
    }
    Ok(url)
}

/// An RTMP output: `rtmp://` or `rtmps://` with a host, not in a denied network.
pub fn check_rtmp_url(raw: &str, net: &NetworkPolicy) -> Result<(), PolicyError> {
    check_text("rtmp url", raw)?;
    let url = url::Url::parse(raw).map_err(|_| PolicyError::InvalidRtmpUrl)?;
    if !matches!(url.scheme(), "rtmp" | "rtmps") {
        return Err(PolicyError::InvalidRtmpUrl);
    }
    match url.host() {
        Some(url::Host::Domain("")) | None => Err(PolicyError::InvalidRtmpUrl),
        Some(host) => net.check_host(&host),
    }
}

/// The RTMP outputs of a request: each checked, at most [`MAX_RTMP_OUTPUTS`].
pub fn check_rtmp_urls(urls: &[String], net: &NetworkPolicy) -> Result<(), PolicyError> {
    if urls.len() > MAX_RTMP_OUTPUTS {
        return Err(PolicyError::TooManyRtmpOutputs);
    }
    urls.iter().try_for_each(|u| check_rtmp_url(u, net))
}

/// A storage endpoint named by a request (egress's `s3.endpoint`): http(s), not in a denied
/// network.
pub fn check_endpoint(raw: &str, net: &NetworkPolicy) -> Result<(), PolicyError> {
    if raw.is_empty() {
        return Ok(());
    }
    check_page_url("endpoint", raw, net).map(|_| ())
}

// ---- files and object keys -----------------------------------------------------------------------

/// A local output path under `dir`: relative paths resolve under it, absolute ones must lie in
/// it; `..` is refused anywhere.
pub fn local_output_path(dir: &Path, path: &str) -> Result<PathBuf, PolicyError> {
    check_text("filepath", path)?;
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PolicyError::ParentDir);
    }
    let dir_abs = std::path::absolute(dir).map_err(|e| PolicyError::Create {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    if p.is_absolute() {
        if p.starts_with(&dir_abs) {
            Ok(p.to_path_buf())
        } else {
            Err(PolicyError::OutsideOutputDir(dir_abs.display().to_string()))
        }
    } else {
        Ok(dir_abs.join(p))
    }
}

/// Creates `path` (and its directories, 0755) as a new, empty file: never an existing one, and
/// never through a symbolic link (`O_EXCL`). The recording is then written into it.
pub fn reserve_file(path: &Path) -> Result<(), PolicyError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let create = |p: &Path, e: std::io::Error| PolicyError::Create {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| create(dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PolicyError::FileExists),
        Err(e) => Err(create(path, e)),
    }
}

/// The object key (blob name) for `key`: no leading `/`, no empty, `.` or `..` segments, no
/// backslash (Azure reads it as `/`), no control characters; `prefix` (the config's
/// `file_output.key_prefix`) in front. The key returned is exactly the object's name.
pub fn object_key(prefix: &str, key: &str) -> Result<String, PolicyError> {
    check_key(key)?;
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok(key.to_owned());
    }
    check_key(prefix)?;
    Ok(format!("{prefix}/{key}"))
}

fn check_key(key: &str) -> Result<(), PolicyError> {
    check_text("object key", key)?;
    if key.starts_with('/') {
        return Err(PolicyError::ObjectKey("may not start with /"));
    }
    if key.contains('\\') {
        return Err(PolicyError::ObjectKey("may not hold \\"));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(PolicyError::ObjectKey(
            "may not hold empty, . or .. segments",
        ));
    }
    Ok(())
}

// ---- redaction ------------------------------------------------------------------------------------

/// A page address fit for a log line or an error: no `user:password@`, no query (a template's
/// token), no fragment that carries parameters (`#token=`); a legacy template's path in the
/// fragment (`/#/speaker-dark`) is kept.
pub fn redact_page_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "{unparsable url}".to_owned();
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let mut s: String = url.into();
    let cut = |s: &mut String, at: usize, with: &str| {
        s.truncate(at);
        s.push_str(with);
    };
    let hash = s.find('#');
    match s.find('?') {
        // The first `?`, in the query or in a fragment route: everything after it goes.
        Some(q) => cut(&mut s, q, "?…"),
        None => {
            if let Some(h) = hash.filter(|&h| s[h..].contains(['=', '&'])) {
                cut(&mut s, h, "#…");
            }
        }
    }
    s
}

/// An RTMP URL fit for a log line, stdout or a result: `rtmp://host/app/{stream_key}`, without
/// `user:password@`, query or fragment. `rtmp://host` and `rtmp://host/app` have no key.
pub fn redact_stream_url(raw: &str) -> String {
    let base = raw.split(['?', '#']).next().unwrap_or(raw);
    let (scheme, rest) = match base.find("://") {
        Some(i) => (&base[..i + 3], &base[i + 3..]),
        None => ("", base),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let path = match path.rfind('/') {
        Some(i) if i > 0 && i + 1 < path.len() => format!("{}/{STREAM_KEY_REDACTED}", &path[..i]),
        _ => path.to_owned(),
    };
    format!("{scheme}{host}{path}")
}

/// `text` (a page's console line, a child's output) with every JSON web token (a room token:
/// `eyJ...`.`eyJ...`.`...`) replaced by `{token}`.
pub fn scrub_tokens(text: &str) -> String {
    if !text.contains("eyJ") {
        return text.to_owned();
    }
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(start) = text[i..].find("eyJ").map(|s| s + i) {
        // Three base64url parts joined by dots, the first two starting with `eyJ`.
        let mut end = start;
        let mut parts = 0;
        while parts < 3 {
            let from = end;
            while end < b.len() && part(b[end]) {
                end += 1;
            }
            if end == from {
                // A dot with nothing after it ends the sentence, not the token.
                if parts > 0 {
                    end -= 1;
                }
                break;
            }
            parts += 1;
            if parts < 3 && end < b.len() && b[end] == b'.' {
                end += 1;
            } else {
                break;
            }
        }
        if parts >= 2 && text[start..].starts_with("eyJ") && text[start..end].contains(".eyJ") {
            out.push_str(&text[i..start]);
            out.push_str("{token}");
            i = end;
        } else {
            out.push_str(&text[i..start + 3]);
            i = start + 3;
        }
    }
    out.push_str(&text[i..]);
    out
}

/// An error text from a page or a child process, cut to [`MAX_ERROR_TEXT`] bytes.
pub fn bound_error(text: &str) -> String {
    crate::util::truncate(text, MAX_ERROR_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_normalise_and_contain() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("127.0.0.2").to_string(), "127.0.0.2/32");
        assert_eq!(net("fd00:ec2::254").to_string(), "fd00:ec2::254/128");
        assert!(net("10.0.0.0/8").contains("10.200.3.4".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("172.16.0.0/12").contains("172.31.255.255".parse().unwrap()));
        assert!(!net("172.16.0.0/12").contains("172.32.0.0".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(net("169.254.0.0/16").contains("::ffff:169.254.169.254".parse().unwrap()));
        assert!(!net("169.254.0.0/16").contains("fe80::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    /// The cloud-metadata defaults, shown here rather than by reaching for them: nothing in
    /// the test suite sends a packet beyond loopback.
    #[test]
    fn metadata_and_link_local_addresses_are_refused_by_default() {
        let p = NetworkPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://metadata/",
            "http://100.100.100.200/latest/meta-data/",
            // Other spellings of 169.254.169.254 that URL parsing normalises.
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://0251.0376.0251.0376/",
        ] {
            let e = check_page_url("url", url, &p).unwrap_err();
            assert!(matches!(e, PolicyError::AddressNotAllowed(_)), "{url}: {e}");
            assert!(e.to_string().starts_with("address not allowed: "), "{e}");
        }
        let e = check_page_url("url", "http://169.254.169.254/", &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address not allowed: 169.254.169.254 is in 169.254.0.0/16 (link-local and cloud metadata)"
        );
        // Private ranges, loopback and public hosts stay allowed.
        for url in [
            "http://10.0.0.5:8080/templates/#",
            "http://192.168.1.1/",
            "http://172.20.0.1/",
            "http://127.0.0.1:7880/",
            "https://example.com/page?x=1",
            "http://templates.default.svc.cluster.local/",
        ] {
            assert!(check_page_url("url", url, &p).is_ok(), "{url}");
        }
    }

    #[test]
    fn deny_networks_add_to_the_defaults() {
        let p = NetworkPolicy::new(&[net("127.0.0.2/32"), net("10.0.0.0/8")]);
        let e = check_page_url("url", "http://127.0.0.2:9/x", &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address not allowed: 127.0.0.2 is in 127.0.0.2/32 (deny_networks)"
        );
        assert!(check_page_url("url", "http://10.9.9.9/", &p).is_err());
        assert!(check_page_url("url", "http://169.254.169.254/", &p).is_err());
        assert!(check_page_url("url", "http://127.0.0.1/", &p).is_ok());
        // An exempt address (the built-in template server) stays reachable.
        let p =
            NetworkPolicy::new(&[net("127.0.0.0/8")]).exempting("127.0.0.1:4000".parse().unwrap());
        assert!(p.check_socket("127.0.0.1:4000".parse().unwrap()).is_ok());
        assert!(p.check_socket("127.0.0.1:4001".parse().unwrap()).is_err());
    }

    #[test]
    fn only_http_and_https_pages_are_opened() {
        let p = NetworkPolicy::default();
        for (url, scheme) in [
            ("file:///etc/passwd", "file"),
            ("file:///proc/1/environ", "file"),
            ("chrome://version", "chrome"),
            ("view-source:https://example.com", "view-source"),
            ("data:text/html,<script>alert(1)</script>", "data"),
            ("javascript:alert(1)", "javascript"),
            ("about:blank", "about"),
            ("ftp://example.com/", "ftp"),
            ("ws://127.0.0.1/", "ws"),
        ] {
            assert_eq!(
                check_page_url("url", url, &p).unwrap_err().to_string(),
                format!("url scheme not allowed: {scheme}"),
                "{url}"
            );
        }
        assert_eq!(
            check_page_url("url", "http://x/\0", &p).unwrap_err(),
            PolicyError::ControlCharacters("url")
        );
        assert!(matches!(
            check_page_url("url", "example.com", &p),
            Err(PolicyError::InvalidUrl(_))
        ));
    }

    #[test]
    fn rtmp_urls_need_the_scheme_and_a_host() {
        let p = NetworkPolicy::default();
        assert!(check_rtmp_url("rtmp://a.example/live/key", &p).is_ok());
        assert!(check_rtmp_url("rtmps://a.example:443/live/key", &p).is_ok());
        for bad in [
            "http://a/b",
            "live.twitch.tv",
            "rtmp:///live/x",
            "rtmp://",
            "",
        ] {
            assert_eq!(
                check_rtmp_url(bad, &p),
                Err(PolicyError::InvalidRtmpUrl),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_rtmp_url("rtmp://a/b\0c", &p),
            Err(PolicyError::ControlCharacters("rtmp url"))
        );
        for denied in [
            "rtmp://169.254.169.254/live/x",
            "rtmp://2852039166/live/x",
            "rtmps://[fd00:ec2::254]:443/live/x",
            "rtmp://metadata.google.internal/live/x",
        ] {
            assert!(
                matches!(
                    check_rtmp_url(denied, &p),
                    Err(PolicyError::AddressNotAllowed(_))
                ),
                "{denied}"
            );
        }
        let eleven: Vec<String> = (0..11).map(|i| format!("rtmp://h/live/{i}")).collect();
        assert_eq!(
            check_rtmp_urls(&eleven, &p),
            Err(PolicyError::TooManyRtmpOutputs)
        );
        assert!(check_rtmp_urls(&eleven[..10], &p).is_ok());
    }

    #[tokio::test]
    async fn browser_requests_are_checked_after_resolution() {
        let p =
            NetworkPolicy::new(&[net("127.0.0.0/8")]).exempting("127.0.0.1:4000".parse().unwrap());
        // `localhost` resolves into the denied network.
        let e = p
            .check_request("http://localhost:5000/x")
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("localhost resolves to 127.0.0.1"),
            "{e}"
        );
        assert!(p.check_request("ws://127.0.0.1:5/").await.is_err());
        assert!(p
            .check_request("http://127.0.0.1:4000/app.js")
            .await
            .is_ok());
        assert!(p.check_request("data:text/plain,x").await.is_ok());
        assert!(p.check_request("blob:http://127.0.0.1:5/x").await.is_ok());
        assert!(NetworkPolicy::default()
            .check_request("http://metadata.google.internal/")
            .await
            .is_err());
    }

    #[test]
    fn resolver_rules_cover_the_denied_networks() {
        let p = NetworkPolicy::new(&[
            net("127.0.0.2/32"),
            net("172.16.0.0/12"),
            net("fd00::/8"),
            net("2001:db8::/32"),
        ]);
        let rules = p.resolver_rules();
        for want in [
            "MAP metadata.google.internal ~NOTFOUND",
            "MAP 169.254.*.* ~NOTFOUND",
            "MAP 100.100.100.200 ~NOTFOUND",
            "MAP fd00:ec2::254 ~NOTFOUND",
            "MAP fe8?:* ~NOTFOUND",
            "MAP feb?:* ~NOTFOUND",
            "MAP 127.0.0.2 ~NOTFOUND",
            "MAP 172.16.*.* ~NOTFOUND",
            "MAP 172.31.*.* ~NOTFOUND",
            "MAP fd??:* ~NOTFOUND",
            "MAP 2001:db8:* ~NOTFOUND",
        ] {
            assert!(rules.contains(want), "{want} missing from {rules}");
        }
        assert!(
            !rules.contains("MAP 172.32.*") && !rules.contains("MAP 172.15.*"),
            "{rules}"
        );
        assert!(!rules.contains("fec?"), "{rules}");
        let exempt = NetworkPolicy::new(&[net("127.0.0.0/8")])
            .exempting("127.0.0.1:4000".parse().unwrap())
            .resolver_rules();
        assert!(
            exempt.contains("MAP 127.*.*.* ~NOTFOUND") && exempt.ends_with("EXCLUDE 127.0.0.1"),
            "{exempt}"
        );
    }

    #[test]
    fn local_paths_stay_under_the_output_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(local_output_path(d, "a/b.mp4").unwrap(), d.join("a/b.mp4"));
        let inside = d.join("x.mp4");
        assert_eq!(
            local_output_path(d, inside.to_str().unwrap()).unwrap(),
            inside
        );
        assert_eq!(
            local_output_path(d, "../x.mp4"),
            Err(PolicyError::ParentDir)
        );
        assert_eq!(
            local_output_path(d, &format!("{}/../x.mp4", d.display())),
            Err(PolicyError::ParentDir)
        );
        assert!(matches!(
            local_output_path(d, "/etc/x.mp4"),
            Err(PolicyError::OutsideOutputDir(_))
        ));
        assert_eq!(
            local_output_path(d, "/etc/passwd\0.mp4"),
            Err(PolicyError::ControlCharacters("filepath"))
        );
    }

    #[test]
    fn reserved_files_are_new_and_never_follow_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/a.mp4");
        reserve_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(reserve_file(&path), Err(PolicyError::FileExists));
        // A planted link is an existing file, not a way out.
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.path().join("link.mp4");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(reserve_file(&link), Err(PolicyError::FileExists));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn object_keys_name_exactly_what_is_written() {
        assert_eq!(object_key("", "a/b.mp4").unwrap(), "a/b.mp4");
        assert_eq!(object_key("rec/", "a/b.mp4").unwrap(), "rec/a/b.mp4");
        assert_eq!(object_key("rec", "b.mp4").unwrap(), "rec/b.mp4");
        for bad in [
            "/abs.mp4",
            "a/../b.mp4",
            "../b.mp4",
            "a/./b.mp4",
            "a//b.mp4",
            "a\\..\\b.mp4",
            "a/b\0.mp4",
            "a/\nb.mp4",
        ] {
            assert!(
                matches!(
                    object_key("", bad),
                    Err(PolicyError::ObjectKey(_) | PolicyError::ControlCharacters(_))
                ),
                "{bad:?}"
            );
        }
        assert!(object_key("../x", "b.mp4").is_err());
    }

    #[test]
    fn urls_print_without_secrets() {
        assert_eq!(
            redact_page_url("http://t/#/speaker-dark?url=wss%3A%2F%2Fx&token=eyJsecret"),
            "http://t/#/speaker-dark?…"
        );
        assert_eq!(
            redact_page_url("https://user:pa55@h.example/p?token=x"),
            "https://h.example/p?…"
        );
        assert_eq!(
            redact_page_url("https://h.example/p#token=secret"),
            "https://h.example/p#…"
        );
        assert_eq!(redact_page_url("http://a/b#top"), "http://a/b#top");
        assert_eq!(redact_page_url("http://a/b"), "http://a/b");
        assert_eq!(redact_page_url("not a url token=x"), "{unparsable url}");

        assert_eq!(
            redact_stream_url("rtmp://a.example/live/sk_123?x=y"),
            "rtmp://a.example/live/{stream_key}"
        );
        assert_eq!(
            redact_stream_url("rtmp://user:pw@a.example:1935/app/sk#f"),
            "rtmp://a.example:1935/app/{stream_key}"
        );
        assert_eq!(redact_stream_url("rtmp://host"), "rtmp://host");
        assert_eq!(redact_stream_url("rtmp://host/app"), "rtmp://host/app");
        assert_eq!(
            redact_stream_url("rtmps://h/a/b/key"),
            "rtmps://h/a/b/{stream_key}"
        );
    }

    #[test]
    fn tokens_are_scrubbed_from_free_text() {
        let t = "connecting to wss://h/rtc?access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl&x=1 now";
        assert_eq!(
            scrub_tokens(t),
            "connecting to wss://h/rtc?access_token={token}&x=1 now"
        );
        assert_eq!(scrub_tokens("eyJust a word"), "eyJust a word");
        assert_eq!(scrub_tokens("no token"), "no token");
        assert_eq!(scrub_tokens("a eyJx.eyJy. b"), "a {token}. b");
    }

    #[test]
    fn error_texts_are_bounded() {
        let long = "x".repeat(10_000);
        assert!(bound_error(&long).len() <= MAX_ERROR_TEXT);
        assert_eq!(bound_error("short"), "short");
    }
}
