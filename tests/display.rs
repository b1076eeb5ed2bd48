//! The session's X display (src/display.rs) with real servers: Xorg with the dummy video driver
//! runs a mode of the recording's size at its frame rate, and Xvfb runs when asked for. Needs
//! xserver-xorg-core, xserver-xorg-video-dummy, xvfb and x11-xserver-utils (xrandr), which
//! `deploy/install-deps.sh` installs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use livekit_recorder::display::{Display, ServerKind, X_SERVER_ENV};

/// The tests set the process's environment, and find their server among the process's children:
/// one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a display of `width`x`height` at `fps` with `X_SERVER_ENV=choice`.
async fn start(choice: &str, width: u32, height: u32, fps: u32) -> Result<Display> {
    std::env::set_var(X_SERVER_ENV, choice);
    let display = Display::start(width, height, 24, fps).await;
    std::env::remove_var(X_SERVER_ENV);
    Ok(display?)
}

/// The current mode's size and refresh rate, as `xrandr --query` prints them.
async fn current_mode(display: &str) -> Result<(u32, u32, f64)> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("xrandr")
            .args(["--display", display, "--query"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("xrandr timed out")?
    .context("running xrandr (x11-xserver-utils)")?;
    ensure!(out.status.success(), "xrandr: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // "Screen 0: minimum 64 x 64, current 1280 x 720, maximum 32767 x 32767"
    let size = text
        .split_once("current ")
        .and_then(|(_, rest)| rest.split_once(','))
        .and_then(|(size, _)| size.split_once(" x "))
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
        .with_context(|| format!("no current size in {text}"))?;
    // "   1280x720_30  30.00*+": the mode's rates, the current one marked with '*'.
    let rate = text
        .lines()
        .flat_map(str::split_whitespace)
        .find(|t| t.contains('*'))
        .and_then(|t| t.trim_end_matches(['*', '+']).parse().ok())
        .with_context(|| format!("no current mode in {text}"))?;
    Ok((size.0, size.1, rate))
}

/// The X server this test process runs: its only child called Xorg or Xvfb.
fn server_pid() -> Result<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && (comm == "Xorg" || comm == "Xvfb") {
            found.push((pid, comm.to_owned()));
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one X server child, found {found:?}"),
    }
}

/// A process's command line.
fn cmdline(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// Whether process `pid` is gone (or a zombie, for an instant before its reaper).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z')),
    }
}

/// Xorg at `fps`: the mode is the screen's size at that rate, the server is Xorg, and after
/// stop neither the server nor its temp dir is left.
async fn xorg_runs_the_rate(fps: u32) -> Result<()> {
    let mut display = start("xorg", 1280, 720, fps).await?;
    assert_eq!(display.kind(), ServerKind::Xorg);
    let refresh = display.refresh_hz().context("Xorg has a refresh rate")?;
    assert!((refresh - f64::from(fps)).abs() < 0.1, "{refresh} Hz");

    let (width, height, rate) = current_mode(display.name()).await?;
    assert_eq!((width, height), (1280, 720));
    let (low, high) = (f64::from(fps) - 0.1, f64::from(fps) + 0.1);
    assert!(
        (low..=high).contains(&rate),
        "{rate} Hz, not {fps}: the mode is not the one asked for"
    );

    let (pid, comm) = server_pid()?;
    assert_eq!(comm, "Xorg");
    let args = cmdline(pid)?;
    let config = args
        .iter()
        .position(|a| a == "-config")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .context("Xorg runs with -config")?;
    let dir = config
        .parent()
        .context("the config is in a dir")?
        .to_owned();
    assert!(
        dir.join("Xorg.log").is_file(),
        "no log in {}",
        dir.display()
    );

    display.stop().await?;
    assert!(gone(pid), "Xorg {pid} outlived stop");
    assert!(!dir.exists(), "{} outlived stop", dir.display());
    Ok(())
}

#[tokio::test]
async fn xorg_runs_the_recordings_frame_rate_30() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    xorg_runs_the_rate(30).await
}

#[tokio::test]
async fn xorg_runs_the_recordings_frame_rate_60() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    xorg_runs_the_rate(60).await
}

#[tokio::test]
async fn odd_widths_and_slow_rates_have_their_mode() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    // 1366 is no multiple of 8 (CVT's cell); the others' clocks are below the dummy driver's least.
    for (w, h, fps) in [(1366, 768, 30), (640, 480, 25), (320, 240, 15)] {
        let mut display = start("xorg", w, h, fps).await?;
        let (width, height, rate) = current_mode(display.name()).await?;
        display.stop().await?;
        assert_eq!((width, height), (w, h));
        assert!(
            (rate - f64::from(fps)).abs() < 0.1,
            "{w}x{h}@{fps}: {rate} Hz"
        );
    }
    Ok(())
}

#[tokio::test]
async fn auto_prefers_xorg() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut display = start("auto", 640, 360, 30).await?;
    assert_eq!(display.kind(), ServerKind::Xorg);
    display.stop().await?;
    Ok(())
}

#[tokio::test]
async fn xvfb_when_asked_for() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut display = start("xvfb", 1280, 720, 30).await?;
    assert_eq!(display.kind(), ServerKind::Xvfb);
    assert_eq!(display.refresh_hz(), None);
    let (width, height, _) = current_mode(display.name()).await?;
    assert_eq!((width, height), (1280, 720));
    let (pid, comm) = server_pid()?;
    assert_eq!(comm, "Xvfb");
    display.stop().await?;
    assert!(gone(pid), "Xvfb {pid} outlived stop");
    Ok(())
}

#[tokio::test]
async fn xorg_without_the_depth_is_an_error() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    std::env::set_var(X_SERVER_ENV, "xorg");
    let started = Display::start(1280, 720, 32, 30).await;
    std::env::remove_var(X_SERVER_ENV);
    let e = started.expect_err("the dummy driver has no depth 32");
    assert!(e.to_string().contains("depth 32"), "{e}");
    Ok(())
}

#[tokio::test]
async fn a_wrong_choice_is_an_error() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let e = start("xdummy", 1280, 720, 30)
        .await
        .expect_err("xdummy is no choice");
    assert!(e.to_string().contains(X_SERVER_ENV), "{e}");
    assert!(server_pid().is_err(), "a server started anyway");
    Ok(())
}

/// Fills the root window of `display` with a new colour at `offset_ns` into every `period_ns` of
/// the GStreamer system clock (the pipeline's), until `stop` is set.
fn draw_at_phase(
    display: &str,
    period_ns: u64,
    offset_ns: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    use gstreamer::prelude::*;
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt as _, CreateGCAux, Rectangle};
    let (conn, screen) = x11rb::rust_connection::RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id()?;
    conn.create_gc(gc, root, &CreateGCAux::new().foreground(0))?;
    let clock = gstreamer::SystemClock::obtain();
    let mut colour = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let now = clock.time().nseconds();
        let next = (now - now % period_ns) + offset_ns;
        let next = if next <= now { next + period_ns } else { next };
        std::thread::sleep(Duration::from_nanos(next - now));
        colour = colour.wrapping_add(0x010203);
        conn.change_gc(
            gc,
            &x11rb::protocol::xproto::ChangeGCAux::new().foreground(colour & 0xff_ffff),
        )?;
        conn.poly_fill_rectangle(
            root,
            gc,
            &[Rectangle {
                x: 0,
                y: 0,
                width: 320,
                height: 240,
            }],
        )?;
        conn.flush()?;
    }
    Ok(())
}

/// The capture's phase lock (src/pipeline/phase.rs) on a real Xorg: a client draws at a known
/// point of each frame period, and the measured update phase is that point; a still screen has
/// no phase.
#[tokio::test]
async fn the_screens_update_phase_is_measured() -> Result<()> {
    use gstreamer::prelude::*;
    use livekit_recorder::capture_phase as phase;
    let _one = ONE_AT_A_TIME.lock().await;
    gstreamer::init()?;
    let mut display = start("xorg", 320, 240, 30).await?;
    let name = display.name().to_string();
    let period = 1_000_000_000 / 30;
    let clock = gstreamer::SystemClock::obtain();
    let now = move || clock.time().nseconds();

    let still = tokio::task::spawn_blocking({
        let (name, now) = (name.clone(), now.clone());
        move || phase::measure(&name, period, Duration::from_millis(500), now)
    })
    .await??;
    assert_eq!(still, None, "a still screen has no phase");

    for offset in [5_000_000u64, 21_000_000] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drawer = std::thread::spawn({
            let (name, stop) = (name.clone(), stop.clone());
            move || draw_at_phase(&name, period, offset, &stop)
        });
        // Let the drawing settle, then measure as the pipeline does.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let measured = tokio::task::spawn_blocking({
            let (name, now) = (name.clone(), now.clone());
            move || phase::measure(&name, period, Duration::from_millis(700), now)
        })
        .await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drawer.join().expect("the drawer does not panic")?;
        let update = measured?.context("updates every period have a phase")?;
        // Drawn at `offset`: the client wakes up late by a little and the server takes a little,
        // but on a loaded machine a draw late by most of a period counts as early in the next
        // one, so the mean can land on either side. The two offsets are 16 ms apart.
        let apart = update.offset_ns.abs_diff(offset);
        let apart = apart.min(period - apart);
        assert!(
            apart < 6_000_000,
            "drawn at {offset} ns into the period, measured {update:?}"
        );
        assert!(update.updates >= 10, "{update:?}");
        // The pipeline then reads the screen half a period away.
        let base = phase::base_time(now(), period, update.offset_ns);
        let gap = (base % period + period - update.offset_ns) % period;
        assert_eq!(gap, period / 2);
    }
    display.stop().await?;
    Ok(())
}
