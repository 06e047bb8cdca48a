//! A durable consumer's exclusive lock and its hidden metadata record.
//!
//! One process at a time holds a consumer: the bus takes the store's consumer
//! lock ([`EventStore::lock_consumer`]) for the subscription's lifetime and
//! commits positions with its fence ([`EventStore::commit_fenced`]), so a
//! holder that lost the lock is refused at its next commit and stops
//! ([`Error::LeaseLost`]). The store decides how a dead holder is noticed
//! (the file store's flock at once; Redis when the holder's connection
//! closes, else after the TTL).
//!
//! Every durable consumer `NAME` also has a hidden consumer record
//! `NAME~meta`, whose positions serve as a small key-value table (keys must
//! be valid topic names):
//!
//! - `created` = `micros-0`: set once the consumer's starting positions are
//!   committed, so a restart knows it is not new.
//! - `since` = `micros-0`: for a consumer created with `Since(t)`, the time,
//!   so a restart applies the same start to topics it has no position in.
//! - `migrated` = `micros-0`: set once an exclusive work group of the same
//!   name took over from the consumer's positions ([`old_start`]), so a
//!   group created again later does not go back to them.

use std::collections::BTreeMap;

use seed_event::{
    ConsumerLock, ConsumerName, Cursor, ErrorKind, EventStore, LockRequest, Start, Timestamp, Topic,
};

use crate::{Error, Result};

/// The suffix of the hidden record that holds a consumer's metadata.
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

/// What the hidden record says about a consumer.
pub(crate) struct Meta {
    /// Whether the consumer's starting positions were committed before.
    pub(crate) created: bool,
    /// The `Since` start it was created with.
    pub(crate) since: Option<Timestamp>,
    /// Whether an exclusive group took over from it.
    pub(crate) migrated: bool,
}

pub(crate) fn load_meta(store: &dyn EventStore, meta: &ConsumerName) -> Result<Meta> {
    let map = store.load_consumer(meta)?;
    Ok(Meta {
        created: map.contains_key(&key("created")),
        since: map.get(&key("since")).map(|c| Timestamp::from_unix_micros(c.major() as i64)),
        migrated: map.contains_key(&key("migrated")),
    })
}

/// Where the durable consumer `name` would go on, for the exclusive group
/// of that name that takes over from it: its committed positions, and for
/// topics without one the start it applied (from the beginning, or its
/// `since`). `None` when there is no such consumer, or a group took over already.
pub(crate) fn old_start(
    store: &dyn EventStore,
    name: &ConsumerName,
) -> Result<Option<(Start, BTreeMap<Topic, Cursor>)>> {
    // A name the consumers could not have had: there is none.
    let Ok(meta_name) = meta_name(name) else { return Ok(None) };
    let meta = load_meta(store, &meta_name)?;
    if meta.migrated {
        return Ok(None);
    }
    let positions = store.load_consumer(name)?;
    if !meta.created && positions.is_empty() {
        return Ok(None);
    }
    Ok(Some((meta.since.map_or(Start::Beginning, Start::Since), positions)))
}

/// Records that an exclusive group took over from consumer `name`.
pub(crate) fn mark_migrated(store: &dyn EventStore, name: &ConsumerName) -> Result<()> {
    let meta = meta_name(name)?;
    let now = Timestamp::now().unix_micros().max(0) as u64;
    store.commit_consumer(&meta, &key("migrated"), Cursor::new(now, 0))?;
    Ok(())
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

/// A durable consumer held by this subscription: its name and its lock.
pub(crate) struct Held {
    pub(crate) name: ConsumerName,
    lock: Box<dyn ConsumerLock>,
}

impl Held {
    /// Takes `name`'s lock as `request` says; [`Error::ConsumerBusy`] when
    /// another subscriber kept it.
    pub(crate) fn acquire(
        store: &dyn EventStore,
        name: &ConsumerName,
        request: &LockRequest,
    ) -> Result<Held> {
        match store.lock_consumer(name, request)? {
            Some(lock) => Ok(Held { name: name.clone(), lock }),
            None => Err(Error::ConsumerBusy { name: name.clone() }),
        }
    }

    /// Fails with [`Error::LeaseLost`] when the store found the lock taken (no store access).
    pub(crate) fn check(&self) -> Result<()> {
        if self.lock.is_lost() {
            return Err(Error::LeaseLost { name: self.name.clone() });
        }
        Ok(())
    }

    /// Commits `cursor` in `topic` under the lock; a refused fence is [`Error::LeaseLost`].
    pub(crate) fn commit(
        &self,
        store: &dyn EventStore,
        topic: &Topic,
        cursor: Cursor,
    ) -> Result<()> {
        self.check()?;
        match store.commit_fenced(&self.name, self.lock.fence(), topic, cursor) {
            Err(e @ seed_event::Error::StaleLock { .. }) => {
                debug_assert_eq!(e.kind(), ErrorKind::Conflict);
                log::error!("consumer {}: {e}", self.name);
                Err(Error::LeaseLost { name: self.name.clone() })
            }
            other => Ok(other?),
        }
    }
}
