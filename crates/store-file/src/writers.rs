//! The topic writers a store keeps, each with its log open: at most a
//! configured number, the least recently used closed first.
//!
//! Closing a writer loses nothing but speed: the next append to its topic
//! makes a new one, which opens the log and takes the full check (link
//! count, identity, tail and sidecar) before it writes.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use seed_event::Topic;

use crate::writer::TopicWriter;
use seed_event::support::lock;

/// One topic's writer, shared by the threads appending to it.
pub(crate) type WriterSlot = Arc<Mutex<TopicWriter>>;

/// A store's topic writers, at most `capacity` of them.
pub(crate) struct Writers {
    dir: PathBuf,
    capacity: NonZeroUsize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Each writer with when it was last handed out.
    by_topic: HashMap<Topic, (WriterSlot, u64)>,
    /// Counts hand-outs.
    clock: u64,
}

impl Writers {
    /// No writers yet for the store at `dir`, which keeps at most `capacity`.
    pub(crate) fn new(dir: &Path, capacity: NonZeroUsize) -> Writers {
        Writers { dir: dir.to_path_buf(), capacity, slots: Mutex::default() }
    }

    /// The writer of `topic`, made (and the least recently used one let go,
    /// past the capacity) if there is none.
    pub(crate) fn get(&self, topic: &Topic) -> WriterSlot {
        let mut slots = lock(&self.slots);
        slots.clock += 1;
        let now = slots.clock;
        // Look up before inserting, which would copy the topic name on every append.
        if let Some((slot, used)) = slots.by_topic.get_mut(topic) {
            *used = now;
            return slot.clone();
        }
        let evicted = match slots.by_topic.len() >= self.capacity.get() {
            true => slots.evict(),
            false => None,
        };
        let slot = Arc::new(Mutex::new(TopicWriter::new(&self.dir, topic.clone())));
        slots.by_topic.insert(topic.clone(), (slot.clone(), now));
        drop(slots);
        // Closed here, outside the lock (or by the thread still appending through it).
        drop(evicted);
        slot
    }

    /// How many writers are kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.slots).by_topic.len()
    }

    /// Whether the writer of `topic` is kept now.
    #[cfg(test)]
    pub(crate) fn holds(&self, topic: &Topic) -> bool {
        lock(&self.slots).by_topic.contains_key(topic)
    }
}

impl Slots {
    /// Takes out the least recently used writer, preferring one no thread is
    /// appending through (a writer in use is closed when its append is done).
    fn evict(&mut self) -> Option<WriterSlot> {
        let victim = self
            .by_topic
            .iter()
            .min_by_key(|(_, (slot, used))| (Arc::strong_count(slot) > 1, *used))
            .map(|(topic, _)| topic.clone())?;
        self.by_topic.remove(&victim).map(|(slot, _)| slot)
    }
}
