//! The signals that stop the recorder: SIGINT, and SIGTERM or SIGQUIT (`docker stop`, pod
//! deletion). Installed once at start, before anything runs, so none is missed.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Which kind of stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT.
    Interrupt,
    /// SIGTERM or SIGQUIT.
    Terminate,
}

/// The installed handlers.
pub struct StopSignals {
    int: Signal,
    term: Signal,
    quit: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next stop signal. Signals of one kind that arrive together count once.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.int.recv() => StopSignal::Interrupt,
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.quit.recv() => StopSignal::Terminate,
        }
    }
}

/// How a recorder is asked to end, in the order the signals escalate.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// The first signal: take nothing new, let the current recordings finish, then exit.
    pub drain: CancellationToken,
    /// A first SIGINT also: end the current recordings now (EOS), report them, then exit.
    pub stop_now: CancellationToken,
    /// A second signal: force the recordings down and exit.
    pub force: CancellationToken,
}

impl Shutdown {
    /// A shutdown whose `force` is a child of `root`.
    pub fn new(root: &CancellationToken) -> Self {
        Self {
            drain: CancellationToken::new(),
            stop_now: CancellationToken::new(),
            force: root.child_token(),
        }
    }
}

/// Turns signals into `shutdown`'s steps until the recorder is forced: the first signal drains
/// (and a SIGINT also stops now), the second forces.
pub async fn escalate(mut signals: StopSignals, shutdown: Shutdown) {
    let mut seen = 0;
    loop {
        let kind = tokio::select! {
            k = signals.recv() => k,
            () = shutdown.force.cancelled() => return,
        };
        seen += 1;
        if step(seen, kind, &shutdown) {
            return;
        }
    }
}

/// Applies the `seen`-th signal; true once the recorder is forced.
fn step(seen: u32, kind: StopSignal, shutdown: &Shutdown) -> bool {
    if seen > 1 {
        tracing::warn!("second signal: forcing the recorder down");
        shutdown.force.cancel();
        return true;
    }
    if kind == StopSignal::Interrupt {
        tracing::info!("SIGINT: ending the current recordings now, then exiting");
        shutdown.stop_now.cancel();
    } else {
        tracing::info!("SIGTERM: taking no new recordings; exiting once the current ones are done");
    }
    shutdown.drain.cancel();
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_drains_and_the_second_forces() {
        let root = CancellationToken::new();
        let s = Shutdown::new(&root);
        assert!(!step(1, StopSignal::Terminate, &s));
        assert!(s.drain.is_cancelled());
        assert!(!s.stop_now.is_cancelled(), "SIGTERM lets recordings finish");
        assert!(!s.force.is_cancelled());
        assert!(step(2, StopSignal::Terminate, &s));
        assert!(s.force.is_cancelled());
        assert!(
            !root.is_cancelled(),
            "force is the recorder's, not the root's"
        );

        let s = Shutdown::new(&root);
        assert!(!step(1, StopSignal::Interrupt, &s));
        assert!(s.drain.is_cancelled() && s.stop_now.is_cancelled());
        assert!(!s.force.is_cancelled());
    }

    #[test]
    fn cancelling_the_root_forces() {
        let root = CancellationToken::new();
        let s = Shutdown::new(&root);
        root.cancel();
        assert!(s.force.is_cancelled());
    }
}
