//! The signals that stop the recorder: SIGINT, and SIGTERM or SIGQUIT (`docker stop`, pod
//! deletion). Installed once at start, before anything runs, so none is missed.

use tokio::signal::unix::{signal, Signal, SignalKind};

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
