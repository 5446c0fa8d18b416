//! When a continuous process has nothing to send.
//!
//! A [`Pace::Continuous`](cairn_core::Pace::Continuous) process is ticked
//! as often as its channels have room. One whose ticks send nothing (a bank
//! with no money left, a token ring without the token) would have the
//! driver spin: on a machine where every core is busy, that spinning is
//! taken from the processes that do have work, and the messages that would
//! give this one something to send arrive later. So after [`QUIET_TICKS`]
//! ticks in a row that sent nothing, the process is taken to be quiet: it is
//! not ticked again until a message, an input or a command reaches it, or
//! [`QUIET_RETRY`] has passed. A process that sends on only some of its
//! ticks is not slowed: 64 misses in a row are rare unless it has nothing.
//! The raw baseline follows the same rule, so it stays this design's floor.

use std::time::Duration;

use tokio::time::Instant;

/// Ticks in a row that sent nothing before the process is taken to be quiet.
pub(crate) const QUIET_TICKS: u32 = 64;
/// How long a quiet process waits for something to reach it before it is
/// ticked again anyway.
pub(crate) const QUIET_RETRY: Duration = Duration::from_millis(1);

/// What one tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// The process sent something.
    Sent,
    /// It had room and sent nothing.
    Nothing,
    /// No channel had room: the tick could not send.
    NoRoom,
}

impl Tick {
    /// What a tick did: whether it sent anything, and whether any channel
    /// was open to it.
    pub fn of(sent: bool, had_room: bool) -> Tick {
        match (sent, had_room) {
            (true, _) => Tick::Sent,
            (false, true) => Tick::Nothing,
            (false, false) => Tick::NoRoom,
        }
    }
}

/// Whether a continuous process is quiet, and since when.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    misses: u32,
    since: Option<Instant>,
}

impl Quiet {
    /// Notes a tick. Returns whether the step should end: no channel has
    /// room, or the process has just been taken to be quiet.
    pub fn after(&mut self, tick: Tick) -> bool {
        match tick {
            Tick::Sent => {
                self.misses = 0;
                false
            }
            Tick::NoRoom => true,
            Tick::Nothing => {
                self.misses += 1;
                if self.misses < QUIET_TICKS {
                    return false;
                }
                self.misses = 0;
                self.since = Some(Instant::now());
                true
            }
        }
    }

    /// Something reached the process: it may have something to send.
    pub fn wake(&mut self) {
        self.since = None;
        self.misses = 0;
    }

    /// Whether the process is quiet (not to be ticked).
    pub fn is_quiet(&self) -> bool {
        self.since.is_some()
    }

    /// When a quiet process is ticked again if nothing reaches it.
    pub fn retry_at(&self) -> Instant {
        self.since.map_or_else(Instant::now, |s| s + QUIET_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: only `QUIET_TICKS` empty ticks in a row make a process
    /// quiet; one send in between starts the count again, a full window
    /// ends the step without counting, and anything reaching the process
    /// wakes it.
    #[test]
    fn quiet_only_after_a_run_of_empty_ticks() {
        let mut q = Quiet::default();
        for _ in 0..QUIET_TICKS - 1 {
            assert!(!q.after(Tick::Nothing));
        }
        assert!(!q.after(Tick::Sent), "a send resets the count");
        for _ in 0..QUIET_TICKS - 1 {
            assert!(!q.after(Tick::Nothing));
        }
        assert!(q.after(Tick::NoRoom), "no room ends the step");
        assert!(!q.is_quiet(), "and is not quiet");
        let before = Instant::now();
        assert!(q.after(Tick::Nothing), "the 64th empty tick in a row");
        assert!(q.is_quiet());
        let retry = q.retry_at();
        assert!(retry >= before + QUIET_RETRY && retry <= Instant::now() + QUIET_RETRY);
        q.wake();
        assert!(!q.is_quiet());
        for _ in 0..QUIET_TICKS - 1 {
            assert!(!q.after(Tick::Nothing), "waking starts the count again");
        }
    }
}
