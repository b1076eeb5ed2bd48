//! livekit-server's side of the recorder protocol (protocol.md §1.4-1.6), for tests: a real
//! redis-server on a free loopback port, reservations with the 3 s ack wait, RPCs with request
//! ids, and results claimed with SET NX the way every server node claims them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use futures::StreamExt;
use livekit_recorder::proto::livekit::{
    recording_request, start_recording_request, AddOutputRequest, EndRecordingRequest,
    RecordingInfo, RecordingOptions, RecordingRequest, RecordingReservation, RecordingResponse,
    RemoveOutputRequest, StartRecordingRequest,
};
use prost::Message;
use sha2::Digest;

/// livekit's RequestTimeout: how long the server waits for an ack or an RPC response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A redis-server of our own on a free loopback port.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut s = Self {
            port,
            child: None,
            dir: tempfile::tempdir()?,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server did not start on port {}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (connections drop) and starts a new one on the same port after `down`.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        self.stop();
        std::thread::sleep(down);
        self.launch()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn guid(prefix: &str) -> String {
    livekit_recorder::util::new_guid(prefix)
}

/// A livekit-server node as far as recordings go.
pub struct Server {
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
}

impl Server {
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self { client, conn })
    }

    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<i64> {
        Ok(redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.conn)
            .await?)
    }

    /// ReserveRecorder: subscribe to the response channel, publish the reservation, wait up to
    /// 3 s for any message. Ok(id) or the server's error text.
    pub async fn reserve(&mut self) -> Result<std::result::Result<String, String>> {
        let id = guid("RR_");
        let submitted_at = now_ms();
        self.reserve_with(&id, submitted_at).await
    }

    pub async fn reserve_with(
        &mut self,
        id: &str,
        submitted_at: i64,
    ) -> Result<std::result::Result<String, String>> {
        let mut sub = self.client.get_async_pubsub().await?;
        sub.subscribe(format!("RECORDING_RESPONSE_{id}")).await?;
        let msg = RecordingReservation {
            id: id.to_owned(),
            submitted_at,
        };
        self.publish("RESERVE_RECORDER", &msg.encode_to_vec())
            .await?;
        let mut stream = sub.on_message();
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.next()).await {
            Ok(Some(_)) => Ok(Ok(id.to_owned())),
            _ => Ok(Err("no recorders available".into())),
        }
    }

    /// An RPC to recording `id`; Ok(()) or the error text the server would return.
    pub async fn rpc(
        &mut self,
        id: &str,
        request: recording_request::Request,
    ) -> Result<std::result::Result<(), String>> {
        let mut sub = self.client.get_async_pubsub().await?;
        sub.subscribe(format!("RECORDING_RESPONSE_{id}")).await?;
        let request_id = guid("RPC_");
        let req = RecordingRequest {
            request_id: request_id.clone(),
            request: Some(request),
        };
        self.publish(&format!("RECORDING_REQUEST_{id}"), &req.encode_to_vec())
            .await?;
        let mut stream = sub.on_message();
        loop {
            // The timer is re-armed for every message, as in livekit's RPC loop.
            let Ok(Some(msg)) = tokio::time::timeout(REQUEST_TIMEOUT, stream.next()).await else {
                return Ok(Err("request timeout".into()));
            };
            let payload: Vec<u8> = msg.get_payload()?;
            let res = RecordingResponse::decode(payload.as_slice())?;
            if res.request_id != request_id {
                continue;
            }
            return Ok(if res.error.is_empty() {
                Ok(())
            } else {
                Err(res.error)
            });
        }
    }

    pub async fn start(
        &mut self,
        id: &str,
        req: StartRecordingRequest,
    ) -> Result<std::result::Result<(), String>> {
        self.rpc(id, recording_request::Request::Start(req)).await
    }

    pub async fn end(&mut self, id: &str) -> Result<std::result::Result<(), String>> {
        self.rpc(
            id,
            recording_request::Request::End(EndRecordingRequest {
                recording_id: id.to_owned(),
            }),
        )
        .await
    }

    pub async fn add_output(
        &mut self,
        id: &str,
        url: &str,
    ) -> Result<std::result::Result<(), String>> {
        self.output_rpc(id, url, true).await
    }

    pub async fn remove_output(
        &mut self,
        id: &str,
        url: &str,
    ) -> Result<std::result::Result<(), String>> {
        self.output_rpc(id, url, false).await
    }

    async fn output_rpc(
        &mut self,
        id: &str,
        url: &str,
        add: bool,
    ) -> Result<std::result::Result<(), String>> {
        let (recording_id, rtmp_url) = (id.to_owned(), url.to_owned());
        let request = if add {
            recording_request::Request::AddOutput(AddOutputRequest {
                recording_id,
                rtmp_url,
            })
        } else {
            recording_request::Request::RemoveOutput(RemoveOutputRequest {
                recording_id,
                rtmp_url,
            })
        };
        self.rpc(id, request).await
    }

    /// Subscribes to results the way a server node does; results are claimed with SET NX.
    pub async fn results(&self) -> Result<Results> {
        let mut sub = self.client.get_async_pubsub().await?;
        sub.subscribe("RECORDING_RESULT").await?;
        Ok(Results {
            sub,
            conn: self.client.get_multiplexed_async_connection().await?,
        })
    }
}

pub struct Results {
    sub: redis::aio::PubSub,
    conn: redis::aio::MultiplexedConnection,
}

impl Results {
    /// The next result this node wins, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<RecordingInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.on_message().next())
                .await
                .context("no result in time")?
                .context("result stream ended")?;
            let payload: Vec<u8> = msg.get_payload()?;
            let key =
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&payload));
            let won: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("EX")
                .arg(5)
                .arg("NX")
                .query_async(&mut self.conn)
                .await?;
            if won.is_some() {
                return Ok(RecordingInfo::decode(payload.as_slice())?);
            }
        }
    }
}

pub fn now_ms() -> i64 {
    livekit_recorder::util::now_millis()
}

/// GET on the health port; the body (the status).
pub fn health(port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /anything HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("health answered {head}");
    }
    Ok(body.to_owned())
}

/// Polls the health port until it says `want`.
pub fn wait_health(port: u16, want: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(s) = health(port) {
            if s == want {
                return Ok(());
            }
            last = s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("health stayed {last:?}, wanted {want:?}")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// A service-mode recorder with its health port.
pub struct Daemon {
    pub rec: super::Recorder,
    pub health_port: u16,
}

/// Starts a service-mode recorder on `redis` with `extra` appended to its config (Redis, health
/// port and debug logs are set) and waits until it is available.
pub fn start_daemon(redis: &RedisServer, extra: &str) -> Result<Daemon> {
    let health_port = free_port();
    let config = format!(
        "redis: {{address: \"{}\"}}\nhealth_port: {health_port}\nlog_level: debug\n{extra}",
        redis.address()
    );
    let rec = super::Recorder::start(
        &[("SERVICE_MODE", "1"), ("LIVEKIT_RECORDER_CONFIG", &config)],
        &[],
    )?;
    wait_health(health_port, "available", Duration::from_secs(20))?;
    Ok(Daemon { rec, health_port })
}

/// Local files under the system's temp dir, where the tests' temporary directories are
/// (service-mode files must lie under `local_dir`).
pub fn local_files_in_temp() -> String {
    format!(
        "file_output: {{local: true, local_dir: {}}}\n",
        std::env::temp_dir().display()
    )
}

/// A small (640x360) recording of `url` to the file `path`.
pub fn url_request(url: &str, path: &std::path::Path) -> StartRecordingRequest {
    StartRecordingRequest {
        input: Some(start_recording_request::Input::Url(url.to_owned())),
        output: Some(start_recording_request::Output::Filepath(
            path.to_str().expect("UTF-8 test paths").to_owned(),
        )),
        options: Some(RecordingOptions {
            width: 640,
            height: 360,
            ..Default::default()
        }),
    }
}
