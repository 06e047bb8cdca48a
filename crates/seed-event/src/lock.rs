//! Exclusive locks on durable consumers: one holder at a time, fenced commits.
//!
//! A store hands out a [`ConsumerLock`] from
//! [`EventStore::lock_consumer`](crate::EventStore::lock_consumer). Each
//! acquisition gets a new, greater [`Fence`]; commits made with
//! [`EventStore::commit_fenced`](crate::EventStore::commit_fenced) carry it,
//! and the store refuses one whose fence is no longer the current holder's
//! ([`Error::StaleLock`](crate::Error::StaleLock)). Dropping the lock lets go.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::{lock, wait, wait_timeout};
use crate::Result;

/// The generation of one acquisition of a consumer's lock: greater than every
/// earlier one of the same consumer in the same store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A held consumer lock; dropping it lets go (so another holder can take over at once).
pub trait ConsumerLock: Send {
    /// The fence commits made under this lock carry.
    fn fence(&self) -> Fence;

    /// Whether the store found the lock taken by another holder (then every
    /// fenced commit of this holder is refused too).
    fn is_lost(&self) -> bool;

    /// Asks the store whether this holder still holds the lock, where the
    /// store can lose it without the holder knowing at once (Redis: a lock
    /// that expired while its holder's host was silent); false marks it
    /// lost. Without such a store it answers from [`ConsumerLock::is_lost`].
    fn confirm(&self) -> Result<bool> {
        Ok(!self.is_lost())
    }
}

/// A wait that another thread can end early; clones share it.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// Two cancels are equal when they are clones of one another.
impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Cancel {}

impl Cancel {
    /// A wait not cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Ends every wait on this (and its clones), now and later.
    pub fn cancel(&self) {
        *lock(&self.inner.0) = true;
        self.inner.1.notify_all();
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *lock(&self.inner.0)
    }

    /// Sleeps up to `duration` (`Duration::MAX`: without limit); true when cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now().checked_add(duration);
        let mut cancelled = lock(&self.inner.0);
        while !*cancelled {
            cancelled = match deadline {
                None => wait(&self.inner.1, cancelled),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    wait_timeout(&self.inner.1, cancelled, left).0
                }
            };
        }
        true
    }
}

/// How to take a consumer's lock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockRequest {
    /// How long a lock lasts without renewal where the store cannot see its
    /// holder die (Redis: a holder whose host went silent); the holder renews it.
    pub ttl: Duration,
    /// How long to wait for another holder to let go (`Duration::MAX`: no limit).
    pub wait: Duration,
    /// Ends the wait early.
    pub cancel: Cancel,
}

impl LockRequest {
    /// A request that does not wait, with a time to live of `ttl`.
    pub fn new(ttl: Duration) -> LockRequest {
        LockRequest { ttl, wait: Duration::ZERO, cancel: Cancel::new() }
    }

    /// This request waiting up to `wait` for another holder.
    pub fn wait(mut self, wait: Duration) -> LockRequest {
        self.wait = wait;
        self
    }

    /// This request ending its wait when `cancel` is cancelled.
    pub fn cancel(mut self, cancel: Cancel) -> LockRequest {
        self.cancel = cancel;
        self
    }

    /// Calls `attempt` until it returns a lock, the wait runs out or is
    /// cancelled (`Ok(None)`), or it fails; between attempts it sleeps
    /// `pause(n)` after the n-th failed one (1 = the first), cut short by the
    /// deadline and by the cancel.
    pub fn retry<T>(
        &self,
        mut attempt: impl FnMut() -> Result<Option<T>>,
        pause: impl Fn(u32) -> Duration,
    ) -> Result<Option<T>> {
        let deadline = Instant::now().checked_add(self.wait);
        let mut failed = 0u32;
        loop {
            if let Some(held) = attempt()? {
                return Ok(Some(held));
            }
            failed = failed.saturating_add(1);
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() || self.cancel.sleep(pause(failed).min(left)) {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_ends_a_sleep_without_limit() {
        let cancel = Cancel::new();
        let other = cancel.clone();
        let t = std::thread::spawn(move || other.sleep(Duration::MAX));
        cancel.cancel();
        assert!(t.join().unwrap());
        assert!(cancel.sleep(Duration::ZERO));
        assert!(!Cancel::new().sleep(Duration::from_millis(1)));
    }

    #[test]
    fn retry_stops_at_its_deadline_and_at_a_cancel() {
        let request = LockRequest::new(Duration::from_secs(1)).wait(Duration::from_millis(30));
        let mut calls = 0;
        let got: Option<()> = request
            .retry(
                || {
                    Ok({
                        calls += 1;
                        None
                    })
                },
                |_| Duration::from_millis(5),
            )
            .unwrap();
        assert!(got.is_none() && calls >= 2, "{calls}");
        let cancel = Cancel::new();
        let request =
            LockRequest::new(Duration::from_secs(1)).wait(Duration::MAX).cancel(cancel.clone());
        let mut n = 0;
        let got = request
            .retry(
                || {
                    n += 1;
                    cancel.cancel();
                    Ok(None::<()>)
                },
                |_| Duration::MAX,
            )
            .unwrap();
        assert!(got.is_none());
        assert_eq!(n, 1, "a cancelled wait ends after the attempt");
        let got = request.retry(|| Ok(Some(7)), |_| Duration::MAX).unwrap();
        assert_eq!(got, Some(7), "an attempt runs even after a cancel");
    }
}
