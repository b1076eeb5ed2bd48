//! The capture's phase: when in each frame period the screen is read.
//!
//! On a display refreshed at the frame rate (`display.rs`), Chromium puts one frame on the screen
//! per period, always at about the same point of it (measured: a spread of about 1 ms, drifting a
//! few microseconds a second). ximagesrc reads the screen at `base time + n periods`. When the two
//! points are close, jitter makes some reads land before the page's update and some after: the
//! file shows a frame twice and skips the next (a beat, seen as about 60 duplicated frames in 900
//! at 1080p). Before the pipeline starts, [`measure`] watches the screen's updates for a moment
//! (the X DAMAGE extension) and [`base_time`] places the reads half a period away from them.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::Event;

/// The environment variable that turns the phase lock off (`off`); anything else leaves it on.
pub const PHASE_ENV: &str = "LIVEKIT_RECORDER_CAPTURE_PHASE";
/// Updates needed to trust a phase.
const MIN_UPDATES: usize = 8;
/// Updates after which the measurement stops early.
const ENOUGH_UPDATES: usize = 10;
/// Periods after which a screen that has changed less than twice is taken for a still one (the
/// measurement gives up instead of waiting out its window).
const STILL_AFTER_PERIODS: u64 = 6;
/// How consistent the updates' phases must be: the mean resultant length of their phase angles
/// (1 = all at the same point; 0.8 is a spread of about 1/10 period).
const MIN_CONSISTENCY: f64 = 0.8;

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("cannot connect to X display {display}: {message}")]
    Connect { display: String, message: String },
    #[error("X DAMAGE extension: {0}")]
    Damage(String),
}

/// Where in the period the screen changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdatePhase {
    /// The updates' mean position in the period (ns after a multiple of the period on the clock).
    pub offset_ns: u64,
    /// Their circular standard deviation, in ns.
    pub spread_ns: u64,
    /// How many updates were seen.
    pub updates: usize,
}

/// Watches `display` for up to `window` (stopping after 10 updates, or after 6 periods when the
/// screen has not changed twice by then) and returns where in each `period_ns` (on the clock read
/// by `now`, in ns) its screen changes; `None` when it changed too rarely or too irregularly to
/// tell (a still page, or one painting at another rate). Blocking: run it off the async runtime.
pub fn measure(
    display: &str,
    period_ns: u64,
    window: Duration,
    now: impl Fn() -> u64,
) -> Result<Option<UpdatePhase>, PhaseError> {
    let connect_err = |message: String| PhaseError::Connect {
        display: display.to_string(),
        message,
    };
    let (conn, screen) = x11rb::rust_connection::RustConnection::connect(Some(display))
        .map_err(|e| connect_err(e.to_string()))?;
    let damage_err = |e: &dyn std::fmt::Display| PhaseError::Damage(e.to_string());
    conn.damage_query_version(1, 1)
        .map_err(|e| damage_err(&e))?
        .reply()
        .map_err(|e| damage_err(&e))?;
    let root = conn.setup().roots[screen].root;
    let id = conn.generate_id().map_err(|e| damage_err(&e))?;
    conn.damage_create(id, root, damage::ReportLevel::NON_EMPTY)
        .map_err(|e| damage_err(&e))?;
    conn.flush().map_err(|e| damage_err(&e))?;

    // One event per change of the screen from "repaired" to "damaged"; a frame drawn in several
    // requests makes several events close together: the first after a quiet quarter period
    // counts.
    let quiet = period_ns / 4;
    let started = Instant::now();
    let deadline = started + window;
    let still_after = started + Duration::from_nanos(period_ns.saturating_mul(STILL_AFTER_PERIODS));
    let mut updates: Vec<u64> = Vec::new();
    let mut last_event: Option<u64> = None;
    while updates.len() < ENOUGH_UPDATES {
        let until = if updates.len() < 2 {
            still_after.min(deadline)
        } else {
            deadline
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match conn.poll_for_event().map_err(|e| damage_err(&e))? {
            Some(Event::DamageNotify(_)) => {
                let t = now();
                if last_event.is_none_or(|last| t.saturating_sub(last) > quiet) {
                    updates.push(t);
                }
                last_event = Some(t);
                conn.damage_subtract(id, x11rb::NONE, x11rb::NONE)
                    .map_err(|e| damage_err(&e))?;
                conn.flush().map_err(|e| damage_err(&e))?;
            }
            Some(_) => {}
            None => wait_readable(&conn, left),
        }
    }
    let _ = conn.damage_destroy(id);
    let _ = conn.flush();
    Ok(phase_of(&updates, period_ns))
}

/// [`measure`] off the async runtime, with a deadline of a second past `window`; a failure is
/// logged and taken as no phase (the pipeline then starts as it would without the lock).
pub async fn watch(
    display: String,
    period_ns: u64,
    window: Duration,
    now: impl Fn() -> u64 + Send + 'static,
) -> Option<UpdatePhase> {
    let measured = tokio::time::timeout(
        window + Duration::from_secs(1),
        tokio::task::spawn_blocking(move || measure(&display, period_ns, window, now)),
    )
    .await;
    let failure = match measured {
        Ok(Ok(Ok(Some(update)))) => return Some(update),
        Ok(Ok(Ok(None))) => {
            tracing::debug!("no steady screen updates: capture phase left to the pipeline");
            return None;
        }
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    tracing::warn!(error = %failure, "capture phase not measured");
    None
}

/// Blocks until the connection has something to read or `timeout` passes (at most 50 ms, so that
/// the deadline is kept).
fn wait_readable(conn: &x11rb::rust_connection::RustConnection, timeout: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = timeout.as_millis().clamp(1, 50) as u16;
    let mut fds = [PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

/// The phase of `updates` (clock times, ns) in `period_ns`, if there are enough and they agree.
pub fn phase_of(updates: &[u64], period_ns: u64) -> Option<UpdatePhase> {
    if updates.len() < MIN_UPDATES || period_ns == 0 {
        return None;
    }
    let tau = std::f64::consts::TAU;
    let (mut c, mut s) = (0.0f64, 0.0f64);
    for &t in updates {
        let a = (t % period_ns) as f64 / period_ns as f64 * tau;
        c += a.cos();
        s += a.sin();
    }
    let n = updates.len() as f64;
    let (c, s) = (c / n, s / n);
    let r = c.hypot(s);
    if r < MIN_CONSISTENCY {
        return None;
    }
    let mean = s.atan2(c).rem_euclid(tau) / tau * period_ns as f64;
    let spread = (-2.0 * r.ln()).sqrt() / tau * period_ns as f64;
    Some(UpdatePhase {
        offset_ns: (mean.round() as u64) % period_ns,
        spread_ns: spread.round() as u64,
        updates: updates.len(),
    })
}

/// The latest base time not after `now` whose reads (`base + n * period_ns`) fall half a period
/// away from updates at `update_offset_ns` into the period. At most a period before `now`, so
/// the recording's running time starts within its first frame.
pub fn base_time(now: u64, period_ns: u64, update_offset_ns: u64) -> u64 {
    let target = (update_offset_ns + period_ns / 2) % period_ns;
    let behind = (now % period_ns + period_ns - target) % period_ns;
    now - behind
}

/// Whether the environment leaves the phase lock on.
pub fn enabled(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some(v) if v.eq_ignore_ascii_case("off"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 33_333_333;

    #[test]
    fn regular_updates_give_their_phase() {
        // 20 updates 10.8 ms into each period, +-0.5 ms, from a clock far from zero.
        let start = 1_234_567 * P;
        let jitter = [0i64, 500_000, -500_000, 200_000, -300_000];
        let ts: Vec<u64> = (0..20u64)
            .map(|i| ((start + i * P + 10_800_000) as i64 + jitter[i as usize % 5]) as u64)
            .collect();
        let p = phase_of(&ts, P).expect("a phase");
        assert!(p.offset_ns.abs_diff(10_780_000) < 100_000, "{p:?}");
        assert!(p.spread_ns > 200_000 && p.spread_ns < 600_000, "{p:?}");
        assert_eq!(p.updates, 20);
    }

    #[test]
    fn updates_around_the_period_boundary_average_across_it() {
        // Half just before a multiple of the period, half just after: the phase is near 0, not
        // half a period (an arithmetic mean would say 16.7 ms).
        let ts: Vec<u64> = (1..=20u64)
            .map(|i| {
                if i % 2 == 0 {
                    i * P - 1_000_000
                } else {
                    i * P + 1_000_000
                }
            })
            .collect();
        let p = phase_of(&ts, P).expect("a phase");
        assert!(p.offset_ns < 200_000 || p.offset_ns > P - 200_000, "{p:?}");
    }

    #[test]
    fn too_few_or_scattered_updates_give_no_phase() {
        let ts: Vec<u64> = (0..5u64).map(|i| i * P).collect();
        assert_eq!(phase_of(&ts, P), None);
        // A page painting at twice the rate: two clusters half a period apart.
        let ts: Vec<u64> = (0..30u64).map(|i| i * P / 2 + 3_000_000).collect();
        assert_eq!(phase_of(&ts, P), None);
        assert_eq!(phase_of(&[1, 2, 3], 0), None);
    }

    #[test]
    fn reads_fall_half_a_period_from_the_updates() {
        for now in [10 * P, 10 * P + 1, 10 * P + 20_000_000, 11 * P - 1] {
            for offset in [0, 5_000_000, 16_666_666, 30_000_000, P - 1] {
                let base = base_time(now, P, offset);
                assert!(base <= now && now - base < P, "now {now} base {base}");
                // The reads' position in the period is the updates' plus half a period.
                assert_eq!(base % P, (offset + P / 2) % P, "offset {offset}");
            }
        }
    }

    #[test]
    fn only_off_turns_it_off() {
        assert!(enabled(None));
        assert!(enabled(Some("auto")));
        assert!(enabled(Some("")));
        assert!(!enabled(Some("off")));
        assert!(!enabled(Some(" OFF ")));
    }
}
