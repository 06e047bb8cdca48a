//! Exclusive use of a durable consumer across processes, through the store's consumer API.
//!
//! The bus has no backend-specific code, so it cannot take a file lock or a
//! Redis key of its own. Instead every durable consumer `NAME` has a second,
//! hidden consumer record `NAME~meta` in the store, whose positions are used
//! as a small key-value table (keys must be valid topic names):
//!
//! - `lease` = `expiry_ms-token`: who holds the consumer and until when
//!   (milliseconds since the Unix epoch). A token is a random even number; the
//!   holder writes `token + 1` (odd) when it lets go.
//! - `created` = `micros-0`: set once the consumer's starting positions are
//!   committed, so a restart knows it is not new.
//! - `since` = `micros-0`: for a consumer created with `Since(t)`, the time,
//!   so a restart applies the same start to topics it has no position in.
//!
//! Every value written to a key is greater than the one before (the expiry
//! only moves forward, and a release keeps the expiry and sets the low bit),
//! so this also works on a store that only lets consumer positions grow.
//!
//! Taking the lease: read it; if it is free (absent, released or expired)
//! write our token, wait [`SETTLE`], read it back, and hold it only if our
//! token is still there; otherwise wait and try again until the caller's
//! deadline. A holder renews it every `ttl / 5` from its own thread (so a slow
//! handler does not lose it), and checks it before every commit of positions:
//! a subscriber that finds another token there stops with
//! [`Error::LeaseLost`](crate::Error::LeaseLost) instead of delivering on. Two
//! subscribers can only both hold it if one of them stalls for longer than
//! `SETTLE` between reading and writing the lease, or for longer than the TTL
//! while holding it; then the next commit check stops one of them, so at most
//! the events of one batch are delivered twice, and never silently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seed_event::{ConsumerName, Cursor, EventStore, Timestamp, Topic};

use crate::{Error, Result};

/// How long a new holder waits before reading its lease back.
pub(crate) const SETTLE: Duration = Duration::from_millis(50);

/// The suffix of the hidden record that holds a consumer's lease and metadata.
pub(crate) const META_SUFFIX: &str = "~meta";

fn key(name: &str) -> Topic {
    // These are fixed, valid names.
    Topic::new(name).unwrap_or_else(|_| unreachable!("{name} is a valid topic name"))
}

/// The hidden record of consumer `name`.
pub(crate) fn meta_name(name: &ConsumerName) -> Result<ConsumerName> {
    if name.as_str().ends_with(META_SUFFIX) {
        return Err(seed_event::Error::invalid(
            "consumer name",
            format!("{name} ends with {META_SUFFIX:?}, which the bus reserves for its own records"),
        )
        .into());
    }
    ConsumerName::new(format!("{name}{META_SUFFIX}")).map_err(|_| {
        seed_event::Error::invalid(
            "consumer name",
            format!(
                "{} bytes long; a durable consumer's name may have at most {} bytes",
                name.as_str().len(),
                255 - META_SUFFIX.len()
            ),
        )
        .into()
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the hidden record says about a consumer.
pub(crate) struct Meta {
    /// Whether the consumer's starting positions were committed before.
    pub(crate) created: bool,
    /// The `Since` start it was created with.
    pub(crate) since: Option<Timestamp>,
}

pub(crate) fn load_meta(store: &dyn EventStore, meta: &ConsumerName) -> Result<Meta> {
    let map = store.load_consumer(meta)?;
    Ok(Meta {
        created: map.contains_key(&key("created")),
        since: map
            .get(&key("since"))
            .map(|c| Timestamp::from_unix_micros(i64::try_from(c.major()).unwrap_or(i64::MAX))),
    })
}

/// Records that the consumer's starting positions are committed.
pub(crate) fn mark_created(
    store: &dyn EventStore,
    meta: &ConsumerName,
    since: Option<Timestamp>,
) -> Result<()> {
    if let Some(t) = since {
        store.commit_consumer(
            meta,
            &key("since"),
            Cursor::new(t.unix_micros().max(0) as u64, 0),
        )?;
    }
    let now = Timestamp::now().unix_micros().max(0) as u64;
    store.commit_consumer(meta, &key("created"), Cursor::new(now, 0))?;
    Ok(())
}

fn lease_of(map: &BTreeMap<Topic, Cursor>) -> Option<Cursor> {
    map.get(&key("lease")).copied()
}

/// A held lease; [`Lease::release`] lets go, dropping it stops the renewal.
pub(crate) struct Lease {
    store: Arc<dyn EventStore>,
    name: ConsumerName,
    meta: ConsumerName,
    token: u64,
    lost: Arc<AtomicBool>,
    renewer: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl Lease {
    /// Takes the lease of `name`, waiting up to `wait` for another holder to let go.
    pub(crate) fn acquire(
        store: Arc<dyn EventStore>,
        name: &ConsumerName,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        let meta = meta_name(name)?;
        let token = (uuid::Uuid::new_v4().as_u64_pair().0) & !1;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        // A wait past what the clock can represent is no deadline.
        let deadline = Instant::now().checked_add(wait);
        loop {
            let current = lease_of(&store.load_consumer(&meta)?);
            let now = now_ms();
            let held_until = current.filter(|c| c.minor() & 1 == 0 && c.major() > now);
            match held_until {
                None => {
                    let floor = current.map_or(0, |c| c.major().saturating_add(1));
                    let expiry = now.saturating_add(ttl_ms).max(floor);
                    store.commit_consumer(&meta, &key("lease"), Cursor::new(expiry, token))?;
                    thread::sleep(SETTLE);
                    let check = lease_of(&store.load_consumer(&meta)?);
                    if check.map(|c| c.minor()) == Some(token) {
                        let mut lease = Lease {
                            store,
                            name: name.clone(),
                            meta,
                            token,
                            lost: Arc::new(AtomicBool::new(false)),
                            renewer: None,
                        };
                        lease.start_renewing(ttl_ms);
                        return Ok(lease);
                    }
                    log::info!("consumer {name}: another subscriber took the lease first");
                }
                Some(c) => {
                    let left = Duration::from_millis(c.major().saturating_sub(now));
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::ConsumerBusy { name: name.clone(), expires_in: left });
                    }
                }
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(Error::ConsumerBusy { name: name.clone(), expires_in: ttl });
            }
            thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn start_renewing(&mut self, ttl_ms: u64) {
        let (tx, rx) = mpsc::channel::<()>();
        let store = self.store.clone();
        let (meta, name, token, lost) =
            (self.meta.clone(), self.name.clone(), self.token, self.lost.clone());
        let every = Duration::from_millis((ttl_ms / 5).max(1));
        let spawned = thread::Builder::new().name(format!("lease-{name}")).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let renewed =
                    store.load_consumer(&meta).map_err(Error::from).and_then(|map| match lease_of(
                        &map,
                    ) {
                        Some(c) if c.minor() == token => {
                            let expiry =
                                now_ms().saturating_add(ttl_ms).max(c.major().saturating_add(1));
                            store.commit_consumer(
                                &meta,
                                &key("lease"),
                                Cursor::new(expiry, token),
                            )?;
                            Ok(true)
                        }
                        _ => Ok(false),
                    });
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        log::error!("consumer {name}: another subscriber took the lease");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The next renewal tries again; the commit check catches a real loss.
                    Err(e) => log::warn!("consumer {name}: renewing the lease failed: {e}"),
                }
            }
        });
        match spawned {
            Ok(handle) => self.renewer = Some((tx, handle)),
            // Without a renewer the lease runs out; the commit check then stops us.
            Err(e) => log::error!("consumer {}: cannot start the lease renewer: {e}", self.name),
        }
    }

    /// Fails with [`Error::LeaseLost`] unless this lease is still held.
    pub(crate) fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost { name: self.name.clone() });
        }
        match lease_of(&self.store.load_consumer(&self.meta)?) {
            Some(c) if c.minor() == self.token => Ok(()),
            _ => {
                self.lost.store(true, Ordering::SeqCst);
                Err(Error::LeaseLost { name: self.name.clone() })
            }
        }
    }

    /// Whether the renewer found another holder (no store access).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn stop_renewing(&mut self) {
        if let Some((tx, handle)) = self.renewer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// Stops renewing and lets go, so another subscriber can take over at once.
    pub(crate) fn release(mut self) -> Result<()> {
        self.stop_renewing();
        if let Some(c) = lease_of(&self.store.load_consumer(&self.meta)?) {
            if c.minor() == self.token {
                self.store.commit_consumer(
                    &self.meta,
                    &key("lease"),
                    Cursor::new(c.major(), self.token | 1),
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}
