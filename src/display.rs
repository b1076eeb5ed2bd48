//! The session's virtual X display, on a free display number: Xorg with the dummy video driver
//! where it is installed, Xvfb otherwise.
//!
//! Chromium paints at the display's refresh rate. Xvfb has none (Chromium assumes 60 Hz), so a
//! 30 fps recording made Chromium paint twice as many frames as were captured. Xorg with the dummy
//! driver (the "Xdummy" of Xpra) runs a mode of the recording's size at its frame rate, a VESA CVT
//! modeline computed here ([`cvt`]), and Chromium paints only the frames that are captured: about
//! half its CPU at 1080p30. It runs as any user, from a config file and a log of its own in a
//! per-display temp dir, straight from `/usr/lib/xorg/Xorg` (no setuid wrapper, no
//! `Xwrapper.config`); with the dummy driver it never opens a console or a VT.
//!
//! `LIVEKIT_RECORDER_X_SERVER` picks the server: `auto` (the default: Xorg, else Xvfb with a
//! warning), `xorg` (no fallback) or `xvfb`.
//!
//! Both servers pick the display number themselves (`-displayfd`): they take the first display
//! with no lock file and write its number once they accept connections, which is also our
//! readiness signal. Two recorders on one machine therefore never race for a number, and nothing
//! is fixed at `:99`.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

use crate::process::{Child, ProcessError};

/// The environment variable that picks the X server.
pub const X_SERVER_ENV: &str = "LIVEKIT_RECORDER_X_SERVER";
/// The X server itself, not `/usr/bin/Xorg`: that script runs the setuid `Xorg.wrap` where
/// `xserver-xorg-legacy` is installed, which lets only console users start a server.
const XORG_BINARY: &str = "/usr/lib/xorg/Xorg";
/// The dummy video driver (`xserver-xorg-video-dummy`).
const DUMMY_DRIVER: &str = "/usr/lib/xorg/modules/drivers/dummy_drv.so";
/// The depths the dummy driver supports (Xvfb takes the others).
const DUMMY_DEPTHS: [u32; 3] = [16, 24, 30];
/// The dummy driver's lowest pixel clock (kHz): it drops slower modes.
const DUMMY_MIN_CLOCK_KHZ: u32 = 11_000;
/// The largest horizontal or vertical total an X mode can have (RandR's CARD16).
const MAX_MODE_TOTAL: u32 = 65_535;
/// How long the X server has to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an X server that closed its output has to exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long the X server has to go after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How much of the end of Xorg's log an error carries, at most.
const LOG_TAIL_LINES: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{server} did not become ready within {after:?}")]
    Timeout { server: ServerKind, after: Duration },
    #[error("{server} failed to start: {reason}")]
    Failed { server: ServerKind, reason: String },
    #[error("{X_SERVER_ENV}={0:?} is not one of auto, xorg, xvfb")]
    Choice(String),
    #[error("Xorg with the dummy driver cannot run here: {0}")]
    Unavailable(String),
    #[error("the X server's temp dir: {0}")]
    Dir(std::io::Error),
}

/// Which X server to run ([`X_SERVER_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XServer {
    /// Xorg with the dummy driver if it is installed and comes up, else Xvfb.
    #[default]
    Auto,
    /// Xorg with the dummy driver, or an error.
    Xorg,
    /// Xvfb.
    Xvfb,
}

impl XServer {
    /// The choice in [`X_SERVER_ENV`]; [`XServer::Auto`] when it is not set.
    pub fn from_env() -> Result<Self, DisplayError> {
        match std::env::var(X_SERVER_ENV) {
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(DisplayError::Choice(v.to_string_lossy().into_owned()))
            }
        }
    }
}

impl FromStr for XServer {
    type Err = DisplayError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "xorg" => Ok(Self::Xorg),
            "xvfb" => Ok(Self::Xvfb),
            _ => Err(DisplayError::Choice(s.to_owned())),
        }
    }
}

/// The X server a [`Display`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Xorg,
    Xvfb,
}

impl ServerKind {
    /// The program's name, as logs and errors give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xorg => "Xorg",
            Self::Xvfb => "Xvfb",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running X server.
#[derive(Debug)]
pub struct Display {
    child: Child,
    name: String,
    kind: ServerKind,
    /// The mode's refresh rate (Xorg); Xvfb has none.
    refresh: Option<f64>,
    /// Xorg's config and log. Declared after the child: removed once the server is killed.
    dir: Option<tempfile::TempDir>,
}

impl Display {
    /// Starts an X server with one screen of `width`x`height`x`depth`, refreshed `fps` times a
    /// second where the server can ([`ServerKind::Xorg`]), the one [`X_SERVER_ENV`] picks, and
    /// waits until it accepts clients.
    pub async fn start(
        width: u32,
        height: u32,
        depth: u32,
        fps: u32,
    ) -> Result<Self, DisplayError> {
        Self::start_with(XServer::from_env()?, width, height, depth, fps).await
    }

    /// [`Self::start`] with the server given.
    pub async fn start_with(
        choice: XServer,
        width: u32,
        height: u32,
        depth: u32,
        fps: u32,
    ) -> Result<Self, DisplayError> {
        let started = match choice {
            XServer::Xvfb => start_xvfb(width, height, depth).await?,
            XServer::Xorg => {
                xorg_installed().map_err(DisplayError::Unavailable)?;
                if !DUMMY_DEPTHS.contains(&depth) {
                    return Err(DisplayError::Unavailable(format!(
                        "the dummy driver has no depth {depth}"
                    )));
                }
                start_xorg(width, height, depth, fps).await?
            }
            XServer::Auto => {
                let usable = match xorg_installed() {
                    Err(reason) => {
                        // A missing package stays missing: said once.
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        let mut first = false;
                        WARNED.call_once(|| first = true);
                        if first {
                            tracing::warn!(%reason, "Xorg with the dummy driver cannot run: using Xvfb, where Chromium paints at 60 fps whatever the frame rate");
                        } else {
                            tracing::debug!(%reason, "Xorg with the dummy driver cannot run: using Xvfb");
                        }
                        false
                    }
                    Ok(()) if !DUMMY_DEPTHS.contains(&depth) => {
                        tracing::warn!(depth, "the dummy driver has no such depth: using Xvfb, where Chromium paints at 60 fps whatever the frame rate");
                        false
                    }
                    Ok(()) => true,
                };
                if usable {
                    match start_xorg(width, height, depth, fps).await {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(error = %e, "Xorg with the dummy driver did not start: using Xvfb");
                            start_xvfb(width, height, depth).await?
                        }
                    }
                } else {
                    start_xvfb(width, height, depth).await?
                }
            }
        };
        match started.refresh {
            Some(refresh_hz) => tracing::debug!(
                display = %started.name, server = %started.kind, width, height, depth, fps,
                refresh_hz, "X server ready"
            ),
            None => tracing::debug!(
                display = %started.name, server = %started.kind, width, height, depth, fps,
                "X server ready, with no refresh rate (Chromium paints at 60 fps)"
            ),
        }
        Ok(started)
    }

    /// The X display name, e.g. `:12`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The X server that runs the display.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The screen's refresh rate in Hz: Xorg's mode's, near the frame rate asked for; `None`
    /// for Xvfb.
    pub fn refresh_hz(&self) -> Option<f64> {
        self.refresh
    }

    pub(crate) fn child(&self) -> &Child {
        &self.child
    }

    /// Stops the X server, waits until it is gone, and removes its temp dir.
    pub async fn stop(&mut self) -> Result<(), DisplayError> {
        self.child.stop(STOP_GRACE).await?;
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                tracing::debug!(dir = %path.display(), error = %e, "X server temp dir not removed");
            }
        }
        Ok(())
    }
}

/// Why Xorg with the dummy driver cannot run here, if it cannot.
fn xorg_installed() -> Result<(), String> {
    for file in [XORG_BINARY, DUMMY_DRIVER] {
        if !Path::new(file).is_file() {
            return Err(format!(
                "{file} is missing (packages xserver-xorg-core, xserver-xorg-video-dummy)"
            ));
        }
    }
    Ok(())
}

async fn start_xvfb(width: u32, height: u32, depth: u32) -> Result<Display, DisplayError> {
    let server = ServerKind::Xvfb;
    let mut cmd = tokio::process::Command::new("Xvfb");
    cmd.args(["-displayfd", "1", "-screen", "0"])
        .arg(format!("{width}x{height}x{depth}"))
        .args([
            "-ac",
            "-nolisten",
            "tcp",
            "-noreset",
            "+extension",
            "MIT-SHM",
        ]);
    let (mut child, ready) = spawn_and_wait(server, cmd).await?;
    let error = match ready {
        Ready::Number(number) => {
            return Ok(Display {
                child,
                name: format!(":{number}"),
                kind: server,
                refresh: None,
                dir: None,
            })
        }
        Ready::Exited(status) => DisplayError::Failed {
            server,
            reason: child.death_note(&status),
        },
        Ready::Timeout => DisplayError::Timeout {
            server,
            after: READY_TIMEOUT,
        },
        Ready::Garbled(reason) => DisplayError::Failed { server, reason },
    };
    give_up(&mut child).await;
    Err(error)
}

async fn start_xorg(
    width: u32,
    height: u32,
    depth: u32,
    fps: u32,
) -> Result<Display, DisplayError> {
    let server = ServerKind::Xorg;
    let mode = Modeline::for_screen(width, height, fps).ok_or_else(|| {
        DisplayError::Unavailable(format!(
            "no mode of {width}x{height} at {fps} Hz within the dummy driver's pixel clocks"
        ))
    })?;
    let dir = tempfile::Builder::new()
        .prefix("lkrec-xorg-")
        .tempdir()
        .map_err(DisplayError::Dir)?;
    let config = dir.path().join("xorg.conf");
    let config_dir = dir.path().join("xorg.conf.d");
    let log = dir.path().join("Xorg.log");
    std::fs::write(&config, xorg_config(&mode, width, height, depth)).map_err(DisplayError::Dir)?;
    // An empty config dir: the system's (/usr/share/X11/xorg.conf.d) is for real screens.
    std::fs::create_dir(&config_dir).map_err(DisplayError::Dir)?;

    let mut cmd = tokio::process::Command::new(XORG_BINARY);
    cmd.args(["-displayfd", "1", "-config"])
        .arg(&config)
        .arg("-configdir")
        .arg(&config_dir)
        .arg("-logfile")
        .arg(&log)
        .args([
            "-ac",
            "-nolisten",
            "tcp",
            "-noreset",
            // Never take a VT or switch to one, whatever the driver (the dummy opens none).
            "-sharevts",
            "-novtswitch",
            // No screen saver and no DPMS: nobody types during a recording.
            "-s",
            "0",
            "-dpms",
        ]);
    let (mut child, ready) = spawn_and_wait(server, cmd).await?;
    let failure = match ready {
        Ready::Number(number) => {
            // The driver drops a mode it cannot run, and starts with one of its own sizes.
            let text = tokio::fs::read_to_string(&log).await.unwrap_or_default();
            let dropped = format!("Not using mode \"{}\"", mode.name);
            match text.lines().find(|l| l.contains(&dropped)) {
                None => {
                    return Ok(Display {
                        child,
                        name: format!(":{number}"),
                        kind: server,
                        refresh: Some(mode.refresh_hz()),
                        dir: Some(dir),
                    })
                }
                Some(line) => {
                    let reason = crate::policy::bound_error(&format!(
                        "it refused the mode ({}): {}",
                        mode.line(),
                        strip_stamp(line)
                    ));
                    give_up(&mut child).await;
                    return Err(DisplayError::Failed { server, reason });
                }
            }
        }
        Ready::Exited(status) => format!("exited ({status})"),
        Ready::Timeout => format!("not ready within {READY_TIMEOUT:?}"),
        Ready::Garbled(reason) => reason,
    };
    give_up(&mut child).await;
    let tail = log_tail(&log).await;
    Err(DisplayError::Failed {
        server,
        reason: crate::policy::bound_error(&format!("{failure}; its log ends: {tail}")),
    })
}

/// Stops a server that did not start as it should, so that it removes its socket; the
/// failure to report is the start's, not this.
async fn give_up(child: &mut Child) {
    if let Err(e) = child.stop(STOP_GRACE).await {
        tracing::warn!(error = %e, "X server that failed to start not stopped");
    }
}

/// How a server's start ended.
enum Ready {
    /// It accepts clients on this display number.
    Number(u32),
    /// It exited first, with this status.
    Exited(String),
    Timeout,
    /// It wrote something else than a display number.
    Garbled(String),
}

/// Spawns `cmd` (which must write its display number on standard output, `-displayfd 1`) and
/// waits until it is ready, exits, or [`READY_TIMEOUT`] passes.
async fn spawn_and_wait(
    server: ServerKind,
    mut cmd: tokio::process::Command,
) -> Result<(Child, Ready), DisplayError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let spawned = Child::spawn(server.as_str(), cmd)?;
    let child = spawned.child;
    child.log_output(spawned.stderr.expect("stderr was piped"));
    let mut stdout = BufReader::new(spawned.stdout.expect("stdout was piped"));

    let mut line = String::new();
    let read = tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)) => r,
        status = child.exited() => {
            // Let the stderr reader catch up so the note carries the server's own words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok((child, Ready::Exited(status)));
        }
    };
    let ready = match read {
        Err(_) => Ready::Timeout,
        Ok(Err(e)) => Ready::Garbled(format!("reading its display number: {e}")),
        // Its output closed: it is exiting.
        Ok(Ok(0)) => match tokio::time::timeout(EXIT_WAIT, child.exited()).await {
            Ok(status) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ready::Exited(status)
            }
            Err(_) => Ready::Garbled("it closed its output without a display number".into()),
        },
        Ok(Ok(_)) => match line.trim().parse::<u32>() {
            Ok(n) => Ready::Number(n),
            Err(_) => Ready::Garbled(format!("unexpected display number {line:?}")),
        },
    };
    Ok((child, ready))
}

/// The last meaningful lines of Xorg's log (its errors come last), without their time stamps.
async fn log_tail(path: &Path) -> String {
    /// Enough for the last lines; the log of a start is some 50 KB.
    const READ: u64 = 8192;
    let read = async {
        let mut file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(READ)))
            .await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = match read.await {
        Ok(text) => text,
        Err(e) => return format!("(unreadable: {e})"),
    };
    let lines: Vec<&str> = text
        .lines()
        .map(strip_stamp)
        .filter(|l| {
            // Drop the boilerplate around a fatal error (and the path of a log that is removed).
            let l = l.trim_start_matches("(EE)").trim();
            !l.is_empty()
                && !l.starts_with("Please")
                && !l.starts_with("for help")
                && !l.starts_with("at http")
        })
        .collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" | ")
}

/// A line of Xorg's log without its leading `[ 12345.678] `.
fn strip_stamp(line: &str) -> &str {
    match line.trim_start().strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(line, |(_, l)| l),
        None => line,
    }
    .trim()
}

/// The Xorg config of one display: the dummy driver with one screen, in one mode.
fn xorg_config(mode: &Modeline, width: u32, height: u32, depth: u32) -> String {
    // The framebuffer, with room for a pitch rounded up and a margin, in KiB.
    let pitch = u64::from(width.div_ceil(64) * 64) * 4;
    let framebuffer_kib = (pitch * u64::from(height)).div_ceil(1024);
    let video_ram_kib = framebuffer_kib + framebuffer_kib / 8 + 1024;
    // The driver refuses modes above its maximum pixel clock, 300 MHz unless told.
    let dac_speed_mhz = mode.clock_khz.div_ceil(1000) + 1;
    format!(
        r#"# One display of livekit-recorder: Xorg with the dummy video driver, one screen in one mode.
Section "ServerFlags"
    # No input devices: nothing to probe (old servers also need AllowEmptyInput to start without).
    Option "AutoAddDevices" "false"
    Option "AutoEnableDevices" "false"
    Option "AllowEmptyInput" "true"
    Option "AutoAddGPU" "false"
    Option "DontVTSwitch" "true"
    Option "DontZap" "true"
    Option "BlankTime" "0"
    Option "StandbyTime" "0"
    Option "SuspendTime" "0"
    Option "OffTime" "0"
EndSection

Section "Device"
    Identifier "dummy"
    Driver "dummy"
    VideoRam {video_ram_kib}
    DacSpeed {dac_speed_mhz}
EndSection

Section "Monitor"
    Identifier "monitor"
    HorizSync 0.1-10000.0
    VertRefresh 0.5-1000.0
    {modeline}
EndSection

Section "Screen"
    Identifier "screen"
    Device "dummy"
    Monitor "monitor"
    DefaultDepth {depth}
    SubSection "Display"
        Depth {depth}
        Modes "{name}"
        Virtual {width} {height}
    EndSubSection
EndSection

Section "ServerLayout"
    Identifier "layout"
    Screen "screen"
EndSection
"#,
        modeline = mode.line(),
        name = mode.name,
    )
}

/// An X mode: pixel clock and horizontal and vertical timings.
#[derive(Debug, Clone, PartialEq)]
struct Modeline {
    name: String,
    clock_khz: u32,
    /// Display, sync start, sync end, total.
    h: [u32; 4],
    v: [u32; 4],
}

impl Modeline {
    /// The mode of a screen of exactly `width`x`height` refreshed `fps` times a second: the
    /// CVT timings ([`cvt`], which rounds the width up to a multiple of 8 like the `cvt` tool)
    /// with the exact width, and the pixel clock of the exact rate (to the kHz, where CVT's
    /// 250 kHz steps make 720p60 59.86 Hz: a frame shown twice every 7 s of a 60 fps capture).
    /// Where that clock is below the dummy driver's least (small screens at low rates), its least
    /// clock with longer blanking (horizontal, and vertical where lines would grow too long).
    /// `None` where no mode fits.
    fn for_screen(width: u32, height: u32, fps: u32) -> Option<Self> {
        if width == 0 || height == 0 || fps == 0 {
            return None;
        }
        let t = cvt(width, height, fps as f32);
        let (mut h, mut v) = (t.h, t.v);
        h[0] = width;
        let clock = |h: &[u32; 4], v: &[u32; 4]| {
            (f64::from(h[3]) * f64::from(v[3]) * f64::from(fps) / 1000.0).round() as u32
        };
        if clock(&h, &v) < DUMMY_MIN_CLOCK_KHZ {
            let frame_pixels = f64::from(DUMMY_MIN_CLOCK_KHZ) * 1000.0 / f64::from(fps);
            v[3] = v[3].max((frame_pixels / f64::from(MAX_MODE_TOTAL)).ceil() as u32);
            h[3] = (frame_pixels / f64::from(v[3])).ceil() as u32;
        }
        if v[3] > MAX_MODE_TOTAL || h[3] > MAX_MODE_TOTAL {
            return None;
        }
        Some(Self {
            name: format!("{width}x{height}_{fps}"),
            clock_khz: clock(&h, &v),
            h,
            v,
        })
    }

    /// The refresh rate the mode yields, in Hz.
    fn refresh_hz(&self) -> f64 {
        f64::from(self.clock_khz) * 1000.0 / (f64::from(self.h[3]) * f64::from(self.v[3]))
    }

    /// The config file's line.
    fn line(&self) -> String {
        let [hd, hss, hse, ht] = self.h;
        let [vd, vss, vse, vt] = self.v;
        format!(
            "Modeline \"{}\" {}.{:03} {hd} {hss} {hse} {ht} {vd} {vss} {vse} {vt} -hsync +vsync",
            self.name,
            self.clock_khz / 1000,
            self.clock_khz % 1000
        )
    }
}

const CVT_CLOCK_STEP_KHZ: u32 = 250;

/// VESA CVT timings, normal blanking, as `cvt W H R` prints them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cvt {
    clock_khz: u32,
    /// Display, sync start, sync end, total.
    h: [u32; 4],
    v: [u32; 4],
    /// The refresh rate the timings yield (below the one asked for: the clock is rounded down).
    refresh_hz: f32,
}

/// The VESA Coordinated Video Timings of a `width`x`height` mode at `refresh` Hz with normal
/// blanking (the `cvt` tool's default), computed as the `cvt` tool of libxcvt 0.1.2 (Debian 12)
/// does, in the same float precision: the width rounded up to a multiple of 8, no margins, not
/// interlaced. (Later libxcvt versions changed two roundings: the vertical back porch minimum
/// and the horizontal sync start.)
fn cvt(width: u32, height: u32, refresh: f32) -> Cvt {
    // The standard's constants (CVT 1.1 spreadsheet).
    const H_GRANULARITY: i64 = 8;
    const MIN_V_PORCH: i64 = 3;
    const MIN_VSYNC_BP_US: f64 = 550.0;
    const HSYNC_PERCENTAGE: i64 = 8;
    // C' = (C - J) * K / 256 + J and M' = M * K / 256, with M 600, C 40, K 128, J 20.
    const C_PRIME: f64 = 30.0;
    const M_PRIME: f32 = 300.0;

    let hdisplay = i64::from(width.div_ceil(8) * 8);
    let vdisplay = i64::from(height);
    // The vertical sync width tells the aspect ratio.
    let vsync = if vdisplay % 3 == 0 && vdisplay * 4 / 3 == hdisplay {
        4
    } else if vdisplay % 9 == 0 && vdisplay * 16 / 9 == hdisplay {
        5
    } else if vdisplay % 10 == 0 && vdisplay * 16 / 10 == hdisplay {
        6
    } else if (vdisplay % 4 == 0 && vdisplay * 5 / 4 == hdisplay)
        || (vdisplay % 9 == 0 && vdisplay * 15 / 9 == hdisplay)
    {
        7
    } else {
        10
    };
    // 8. The estimated line period (µs).
    let hperiod = ((1_000_000.0 / f64::from(refresh) - MIN_VSYNC_BP_US) as f32)
        / ((vdisplay + MIN_V_PORCH) as f32);
    // 9. Lines of vertical sync and back porch (libxcvt 0.1.2 compares with the front porch
    // minimum, 3, where the standard has the back porch's, 6).
    let sync_and_back_porch =
        ((MIN_VSYNC_BP_US / f64::from(hperiod)) as i64 + 1).max(vsync + MIN_V_PORCH);
    // 11. Lines in a frame.
    let vtotal = vdisplay + sync_and_back_porch + MIN_V_PORCH;
    // 12-13. The horizontal blanking's share of the line, at least 20%.
    let mut blank_percent = (C_PRIME - f64::from(M_PRIME * hperiod) / 1000.0) as f32;
    if blank_percent < 20.0 {
        blank_percent = 20.0;
    }
    let hblank =
        (f64::from(hdisplay as f32 * blank_percent) / (100.0 - f64::from(blank_percent))) as i64;
    let hblank = hblank - hblank % (2 * H_GRANULARITY);
    // 14. Pixels in a line, and the sync in the middle of the blanking.
    let htotal = hdisplay + hblank;
    let hsync_end = hdisplay + hblank / 2;
    let mut hsync_start = hsync_end - htotal * HSYNC_PERCENTAGE / 100;
    hsync_start += H_GRANULARITY - hsync_start % H_GRANULARITY;
    let vsync_start = vdisplay + MIN_V_PORCH;
    // 15. The pixel clock, rounded down to the step; 17. the refresh rate it yields.
    let clock_khz = (htotal as f64 * 1000.0 / f64::from(hperiod)) as i64;
    let clock_khz = clock_khz - clock_khz % i64::from(CVT_CLOCK_STEP_KHZ);
    let refresh_hz =
        (1000.0 * f64::from(clock_khz as f32) / f64::from((htotal * vtotal) as f32)) as f32;
    let int = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Cvt {
        clock_khz: int(clock_khz),
        h: [int(hdisplay), int(hsync_start), int(hsync_end), int(htotal)],
        v: [
            int(vdisplay),
            int(vsync_start),
            int(vsync_start + vsync),
            int(vtotal),
        ],
        refresh_hz,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cvt W H R` (xcvt 0.1.2, Debian 12) prints, verbatim.
    const CVT_TOOL: &str = r#"
# 1280x720 29.93 Hz (CVT) hsync: 22.03 kHz; pclk: 35.25 MHz
Modeline "1280x720_30.00"   35.25  1280 1320 1440 1600  720 723 728 736 -hsync +vsync
# 1920x1080 29.95 Hz (CVT) hsync: 33.01 kHz; pclk: 79.75 MHz
Modeline "1920x1080_30.00"   79.75  1920 1976 2168 2416  1080 1083 1088 1102 -hsync +vsync
# 1920x1080 59.96 Hz (CVT 2.07M9) hsync: 67.16 kHz; pclk: 173.00 MHz
Modeline "1920x1080_60.00"  173.00  1920 2048 2248 2576  1080 1083 1088 1120 -hsync +vsync
# 1280x720 59.86 Hz (CVT 0.92M9) hsync: 44.77 kHz; pclk: 74.50 MHz
Modeline "1280x720_60.00"   74.50  1280 1344 1472 1664  720 723 728 748 -hsync +vsync
# 640x480 24.87 Hz (CVT) hsync: 12.19 kHz; pclk: 9.75 MHz
Modeline "640x480_25.00"    9.75  640 664 720 800  480 483 487 490 -hsync +vsync
# 1920x1080 24.93 Hz (CVT) hsync: 27.40 kHz; pclk: 65.75 MHz
Modeline "1920x1080_25.00"   65.75  1920 1976 2160 2400  1080 1083 1088 1099 -hsync +vsync
# 3840x2160 29.98 Hz (CVT) hsync: 65.96 kHz; pclk: 338.75 MHz
Modeline "3840x2160_30.00"  338.75  3840 4080 4488 5136  2160 2163 2168 2200 -hsync +vsync
# 1024x768 49.98 Hz (CVT 0.79M3) hsync: 39.63 kHz; pclk: 52.00 MHz
Modeline "1024x768_50.00"   52.00  1024 1072 1168 1312  768 771 775 793 -hsync +vsync
# 1368x768 29.94 Hz (CVT) hsync: 23.47 kHz; pclk: 40.00 MHz
Modeline "1368x768_30.00"   40.00  1368 1408 1536 1704  768 771 781 784 -hsync +vsync
# 320x240 27.50 Hz (CVT) hsync: 6.88 kHz; pclk: 2.75 MHz
Modeline "320x240_30.00"    2.75  320 336 360 400  240 243 247 250 -hsync +vsync
# 1920x1080 119.93 Hz (CVT) hsync: 139.12 kHz; pclk: 369.50 MHz
Modeline "1920x1080_120.00"  369.50  1920 2080 2288 2656  1080 1083 1088 1160 -hsync +vsync
# 7680x4320 29.99 Hz (CVT) hsync: 131.85 kHz; pclk: 1400.75 MHz
Modeline "7680x4320_30.00"  1400.75  7680 8304 9152 10624  4320 4323 4328 4396 -hsync +vsync
"#;

    #[test]
    fn cvt_matches_the_cvt_tool() {
        // (`cvt W H R`, the lines above it printed): 1366 is rounded up to 1368 by the tool.
        let asked = [
            (1280, 720, 30.0),
            (1920, 1080, 30.0),
            (1920, 1080, 60.0),
            (1280, 720, 60.0),
            (640, 480, 25.0),
            (1920, 1080, 25.0),
            (3840, 2160, 30.0),
            (1024, 768, 50.0),
            (1366, 768, 30.0),
            (320, 240, 30.0),
            (1920, 1080, 120.0),
            (7680, 4320, 30.0),
        ];
        let printed: Vec<&str> = CVT_TOOL.trim().lines().collect();
        assert_eq!(printed.len(), 2 * asked.len());
        for ((w, h, r), lines) in asked.into_iter().zip(printed.chunks(2)) {
            let t = cvt(w, h, r);
            let [hd, hss, hse, ht] = t.h;
            let [vd, vss, vse, vt] = t.v;
            // The comment's refresh rate, and the modeline after its name.
            let comment = format!("# {hd}x{vd} {:.2} Hz ", t.refresh_hz);
            let timings = format!(
                "{:.2}  {hd} {hss} {hse} {ht}  {vd} {vss} {vse} {vt} -hsync +vsync",
                f64::from(t.clock_khz) / 1000.0
            );
            assert!(lines[0].starts_with(&comment), "cvt {w} {h} {r}: {comment}");
            let tool = lines[1].split_once("\" ").unwrap().1.trim();
            assert_eq!(timings, tool, "cvt {w} {h} {r}");
        }
    }

    #[test]
    fn a_screens_mode_has_its_exact_size_and_rate() {
        let m = Modeline::for_screen(1920, 1080, 30).unwrap();
        assert_eq!(
            m.line(),
            "Modeline \"1920x1080_30\" 79.873 1920 1976 2168 2416 1080 1083 1088 1102 -hsync +vsync"
        );
        for (w, h, fps) in [
            (1280, 720, 30),
            (1280, 720, 60),
            (1920, 1080, 60),
            (854, 480, 24),
        ] {
            let m = Modeline::for_screen(w, h, fps).unwrap();
            let off = (m.refresh_hz() - f64::from(fps)).abs();
            assert!(off < 0.001, "{w}x{h}@{fps}: {}", m.refresh_hz());
        }
        // Not a multiple of 8: the timings of 1368, the width of 1366.
        let m = Modeline::for_screen(1366, 768, 30).unwrap();
        assert_eq!((m.h, m.v), ([1366, 1408, 1536, 1704], [768, 771, 781, 784]));
    }

    #[test]
    fn slow_modes_get_a_clock_the_driver_takes() {
        for (w, h, fps) in [(640, 480, 25), (320, 240, 30), (640, 360, 15), (16, 16, 1)] {
            let cvt = cvt(w, h, fps as f32);
            let m = Modeline::for_screen(w, h, fps).unwrap();
            assert!(m.clock_khz >= DUMMY_MIN_CLOCK_KHZ, "{w}x{h}@{fps}: {m:?}");
            assert!(
                m.h[3] <= MAX_MODE_TOTAL && m.v[3] <= MAX_MODE_TOTAL,
                "{m:?}"
            );
            assert!(m.h[3] >= cvt.h[3] && m.v[3] >= cvt.v[3], "{m:?}");
            assert_eq!((m.h[0], m.h[1], m.h[2]), (w, cvt.h[1], cvt.h[2]));
            assert_eq!(&m.v[..3], &cvt.v[..3]);
            let off = (m.refresh_hz() - f64::from(fps)).abs();
            assert!(
                off < 0.001 * f64::from(fps),
                "{w}x{h}@{fps}: {}",
                m.refresh_hz()
            );
        }
    }

    #[test]
    fn the_largest_screens_have_a_mode() {
        for fps in [30, 120] {
            let m = Modeline::for_screen(7680, 4320, fps).unwrap();
            assert_eq!((m.h[0], m.v[0]), (7680, 4320));
            assert!((m.refresh_hz() - f64::from(fps)).abs() < 0.001, "{m:?}");
        }
        assert!(Modeline::for_screen(0, 720, 30).is_none());
    }

    #[test]
    fn the_config_names_the_mode_and_holds_the_screen() {
        let m = Modeline::for_screen(1920, 1080, 30).unwrap();
        let c = xorg_config(&m, 1920, 1080, 24);
        assert!(c.contains(&m.line()), "{c}");
        assert!(c.contains("Modes \"1920x1080_30\""), "{c}");
        assert!(c.contains("Virtual 1920 1080"), "{c}");
        assert!(c.contains("Depth 24"), "{c}");
        let ram: u64 = c
            .lines()
            .find_map(|l| l.trim().strip_prefix("VideoRam "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(ram * 1024 >= 1920 * 1080 * 4, "{ram} KiB");
        assert!(ram * 1024 < 1920 * 1080 * 4 * 2, "{ram} KiB");
        assert!(c.contains("DacSpeed 81"), "{c}");
    }

    #[test]
    fn the_server_choice_parses() {
        assert_eq!("auto".parse::<XServer>().unwrap(), XServer::Auto);
        assert_eq!("".parse::<XServer>().unwrap(), XServer::Auto);
        assert_eq!(" Xorg ".parse::<XServer>().unwrap(), XServer::Xorg);
        assert_eq!("xvfb".parse::<XServer>().unwrap(), XServer::Xvfb);
        let e = "xdummy".parse::<XServer>().unwrap_err().to_string();
        assert!(e.contains(X_SERVER_ENV) && e.contains("xdummy"), "{e}");
    }

    #[test]
    fn log_lines_lose_their_stamps() {
        assert_eq!(
            strip_stamp("[ 23379.629] (EE) Failed to load module \"kbd\""),
            "(EE) Failed to load module \"kbd\""
        );
        assert_eq!(
            strip_stamp("(EE) no screens found"),
            "(EE) no screens found"
        );
    }

    #[tokio::test]
    async fn the_log_tail_keeps_the_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Xorg.log");
        std::fs::write(
            &path,
            "[ 1.0] (II) fine\n[ 1.1] (EE) \n[ 1.2] (EE) Fatal server error:\n[ 1.3] (EE) no screens found(EE) \n(EE) \nPlease consult the The X.Org Foundation support \n\t at http://wiki.x.org\n for help. \n(EE) Please also check the log file at \"/tmp/x/Xorg.log\" for additional information.\n",
        )
        .unwrap();
        assert_eq!(
            log_tail(&path).await,
            "(II) fine | (EE) Fatal server error: | (EE) no screens found(EE)"
        );
    }
}
