//! Store outages inside a subscription: which errors are waited out, how
//! long to wait between attempts, and what the subscription reports meanwhile.

use std::time::{Duration, Instant, SystemTime};

use seed_event::ErrorKind;

use crate::Error;

/// Whether `e` is worth waiting out: the one place the bus decides.
///
/// A store that could not be reached ([`ErrorKind::Unavailable`]) may come
/// back; everything else (corrupt data, refused files, invalid input, a lost
/// lock, a failing handler) stays as it is, so retrying cannot help.
pub(crate) fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Store(s) if s.kind() == ErrorKind::Unavailable)
}

/// How a subscription waits between attempts while its store is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The wait after the first failed attempt; it doubles with each one.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect { first: Duration::from_millis(50), max: Duration::from_secs(2) }
    }
}

impl Reconnect {
    /// The wait after failed attempt number `attempt` (1 = the first): the
    /// doubled delay, capped at `max`, then a random point in its upper half,
    /// so subscribers that lost the store together do not retry in step.
    pub fn wait_for(&self, attempt: u32) -> Duration {
        seed_event::support::backoff(self.first, self.max, attempt)
    }
}

/// What a subscription is doing, from [`Subscription::status`](crate::Subscription::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Following the store and delivering.
    Live,
    /// The store is unavailable; the subscription keeps trying.
    Reconnecting {
        /// When the first attempt failed.
        since: SystemTime,
        /// Failed attempts so far.
        attempts: u32,
    },
    /// The subscription ended: with the error it stopped on, if any.
    Stopped(Option<String>),
}

/// An outage in progress.
pub(crate) struct Outage {
    pub(crate) started: Instant,
    pub(crate) since: SystemTime,
    pub(crate) attempts: u32,
}

impl Outage {
    pub(crate) fn begin() -> Outage {
        Outage { started: Instant::now(), since: SystemTime::now(), attempts: 1 }
    }

    /// The status it shows.
    pub(crate) fn status(&self) -> Status {
        Status::Reconnecting { since: self.since, attempts: self.attempts }
    }
}

/// After a transient failure `e`: counts the attempt in `outage` (beginning
/// one, with a warning naming `who` and `store`, if none is in progress) and
/// returns how long to wait before the next attempt and the status to show;
/// or, once the outage has lasted `give_up_after`, the error to stop with.
pub(crate) fn wait_out(
    outage: &mut Option<Outage>,
    e: Error,
    who: &str,
    store: &str,
    reconnect: &Reconnect,
    give_up_after: Option<Duration>,
) -> Result<(Duration, Status), Error> {
    let outage = match outage {
        Some(outage) => {
            outage.attempts = outage.attempts.saturating_add(1);
            outage
        }
        None => {
            log::warn!("{who}: lost {store} ({e}); retrying until it is back");
            outage.insert(Outage::begin())
        }
    };
    let waited = outage.started.elapsed();
    let mut wait = reconnect.wait_for(outage.attempts);
    if let Some(limit) = give_up_after {
        if waited >= limit {
            let Error::Store(source) = e else { return Err(e) };
            return Err(Error::StoreUnavailable { store: store.to_string(), waited, source });
        }
        wait = wait.min(limit - waited);
    }
    Ok((wait, outage.status()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_stay_capped_and_are_jittered_in_the_upper_half() {
        let r = Reconnect::default();
        for (attempt, full) in [(1, 50), (2, 100), (3, 200), (6, 1600), (7, 2000), (u32::MAX, 2000)]
        {
            let full = Duration::from_millis(full);
            let waits: Vec<Duration> = (0..50).map(|_| r.wait_for(attempt)).collect();
            assert!(waits.iter().all(|w| *w >= full / 2 && *w <= full), "{attempt}: {waits:?}");
            assert!(waits.iter().any(|w| *w != waits[0]), "{attempt}: no jitter in {waits:?}");
        }
        let huge = Reconnect { first: Duration::MAX, max: Duration::MAX };
        assert!(huge.wait_for(5) >= Duration::MAX / 2);
    }

    #[test]
    fn only_an_unavailable_store_is_transient() {
        assert!(is_transient(&seed_event::Error::unavailable("down").into()));
        for fatal in [
            Error::Store(seed_event::Error::corrupt("here", "bad")),
            Error::Store(seed_event::Error::invalid("topic", "bad")),
            Error::Store(seed_event::Error::io("reading", std::io::Error::other("x"))),
            Error::Closed,
        ] {
            assert!(!is_transient(&fatal), "{fatal}");
        }
    }
}
