//! nginx with the RTMP module on a free loopback port, recording every stream it receives to
//! `<dir>/<stream>.flv`. One process (no master, no workers), so it writes as the test's user.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct NginxRtmp {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl NginxRtmp {
    pub fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec)?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    application live {{
      live on;
      record all;
      record_path {rec};
      record_unique off;
    }}
  }}
}}
",
                dir = dir.path().display(),
                rec = rec.display()
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { port, child, dir });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nginx-rtmp did not listen on {port}")
    }

    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    /// The file nginx recorded for `stream`.
    pub fn recording(&self, stream: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{stream}.flv"))
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
