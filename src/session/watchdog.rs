//! The session's watchdog: what ends a recording that no longer records although every process
//! still runs. A renderer that crashed (the page shows "Aw, Snap!"), a page that stopped
//! answering (a script in an endless loop), a screen that delivers no frames (a frozen X server)
//! and a lost DevTools connection would otherwise be recorded, or waited on, until the recording
//! is ended: hours of a still image, or a recorder busy forever.
//!
//! The checks run in a task of their own, so that the session's loop, which is woken by every
//! console message and command, never cancels a check half-way: it only awaits [`Watchdog::alarm`].

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::browser::PageMonitor;
use crate::config::WatchdogConfig;
use crate::pipeline::VideoClock;

/// How often the video clock is read.
const VIDEO_POLL: Duration = Duration::from_secs(1);

/// What the watchdog found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Alarm {
    /// `Inspector.targetCrashed`: the page's renderer process is gone.
    RendererCrashed,
    /// The DevTools connection to Chromium closed.
    DevToolsClosed,
    /// `misses` page checks in a row, one every `every`, went unanswered.
    PageUnresponsive { misses: u32, every: Duration },
    /// No video frame for this long.
    NoVideo(Duration),
}

/// A running watchdog; stopped when dropped.
pub(super) struct Watchdog {
    alarm: oneshot::Receiver<Alarm>,
    task: JoinHandle<()>,
}

impl Watchdog {
    /// Watches `page`, and the screen through `video` once the recording plays.
    pub(super) fn start(
        page: PageMonitor,
        settings: &WatchdogConfig,
        video: Option<VideoClock>,
    ) -> Self {
        let (tx, alarm) = oneshot::channel();
        let check = settings.page_check();
        let stall = settings.video_stall().filter(|_| video.is_some());
        let task = tokio::spawn(async move {
            let alarm = tokio::select! {
                () = page.crashed() => Alarm::RendererCrashed,
                () = page.disconnected() => Alarm::DevToolsClosed,
                a = page_checks(&page, check) => a,
                a = video_stall(video, stall) => a,
            };
            tracing::warn!(alarm = ?alarm, "watchdog");
            let _ = tx.send(alarm);
        });
        Self { alarm, task }
    }

    /// Resolves with the watchdog's finding; never, if it has none. Cancel-safe.
    pub(super) async fn alarm(&mut self) -> Alarm {
        match (&mut self.alarm).await {
            Ok(a) => a,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asks the page to evaluate `1` every `every`, each check given until the next is due; resolves
/// once `misses` checks in a row went unanswered (so after `misses` x `every` of silence). Never,
/// when the check is off.
async fn page_checks(page: &PageMonitor, check: Option<(Duration, u32)>) -> Alarm {
    let Some((every, misses)) = check else {
        return std::future::pending().await;
    };
    let mut missed = 0;
    loop {
        let next = tokio::time::Instant::now() + every;
        if page.answers(every).await {
            missed = 0;
        } else {
            missed += 1;
            tracing::warn!(missed, of = misses, "the page did not answer a check");
            if missed >= misses {
                return Alarm::PageUnresponsive { misses, every };
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Resolves once the screen has delivered no frame for `stall`. Never, when off.
async fn video_stall(video: Option<VideoClock>, stall: Option<Duration>) -> Alarm {
    let (Some(video), Some(stall)) = (video, stall) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(VIDEO_POLL).await;
        if video.since_last_frame() >= stall {
            return Alarm::NoVideo(stall);
        }
    }
}
