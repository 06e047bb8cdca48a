//! The work groups of [`MemoryStore`]: the [`GroupState`]s in memory, members
//! in one process; a member's wait is a condition variable signalled by
//! appends, by the other members' changes and by its interrupt.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::group_engine::{self, GroupState};
use crate::support::{lock, wait, wait_timeout};
use crate::{
    Delivery, DeliveryToken, Error, GroupBackend, GroupConfig, GroupInfo, GroupMember, Interrupt,
    Result, Topic,
};

/// The groups of one memory store.
#[derive(Default)]
pub(super) struct Groups {
    states: BTreeMap<String, GroupState>,
    /// Per group, its live members.
    live: BTreeMap<String, BTreeSet<String>>,
    next_id: u64,
}

thread_local! {
    /// Set while this thread runs a group operation (which holds the groups'
    /// lock and may append a dead letter).
    static IN_GROUP: Cell<bool> = const { Cell::new(false) };
}

/// Wakes waiting members after an append.
pub(super) fn appended(store: &MemoryStore) {
    if store.shared.members.load(Ordering::SeqCst) == 0 || IN_GROUP.with(Cell::get) {
        return;
    }
    // Taking the lock orders this after a waiter's check: no lost wake-up.
    drop(lock(&store.shared.groups));
    store.shared.group_changed.notify_all();
}

/// Runs `op` on the group's state with the groups locked.
fn with_group<T>(
    store: &MemoryStore,
    name: &str,
    op: impl FnOnce(&mut GroupState, &BTreeSet<String>) -> Result<T>,
) -> Result<T> {
    let mut groups = lock(&store.shared.groups);
    IN_GROUP.with(|f| f.set(true));
    let g = &mut *groups;
    let live = g.live.get(name).cloned().unwrap_or_default();
    let result = match g.states.get_mut(name) {
        Some(state) => op(state, &live),
        None => Err(Error::NotFound(format!("group {name}"))),
    };
    IN_GROUP.with(|f| f.set(false));
    drop(groups);
    store.shared.group_changed.notify_all();
    result
}

fn topics(store: &MemoryStore) -> Vec<Topic> {
    store.lock().topics.keys().cloned().collect()
}

impl GroupBackend for MemoryStore {
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>> {
        config.validate()?;
        let name = config.name.to_string();
        let mut groups = lock(&self.shared.groups);
        IN_GROUP.with(|f| f.set(true));
        let created = match groups.states.get(&name) {
            Some(state) => state.check(config),
            None => GroupState::create(self, config, &topics(self)).map(|state| {
                groups.states.insert(name.clone(), state);
            }),
        };
        IN_GROUP.with(|f| f.set(false));
        created?;
        groups.next_id += 1;
        let id = format!("{member}-{}", groups.next_id);
        groups.live.entry(name).or_default().insert(id.clone());
        self.shared.members.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryMember {
            store: self.clone(),
            config: config.clone(),
            id,
            interrupt: Arc::new(Wakeup { store: self.clone(), flag: AtomicBool::new(false) }),
        }))
    }

    fn list(&self) -> Result<Vec<GroupInfo>> {
        let topics = topics(self);
        let groups = lock(&self.shared.groups);
        let mut out = Vec::new();
        for (name, state) in &groups.states {
            let members =
                groups.live.get(name).map(|m| m.iter().cloned().collect()).unwrap_or_default();
            out.push(state.info(self, name, members, &topics)?);
        }
        Ok(out)
    }

    fn delete(&self, name: &crate::ConsumerName) -> Result<bool> {
        let mut groups = lock(&self.shared.groups);
        let live: Vec<String> =
            groups.live.get(name.as_str()).map(|m| m.iter().cloned().collect()).unwrap_or_default();
        if !live.is_empty() {
            return Err(crate::group_in_use(name, &live));
        }
        groups.live.remove(name.as_str());
        Ok(groups.states.remove(name.as_str()).is_some())
    }
}

struct Wakeup {
    store: MemoryStore,
    flag: AtomicBool,
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        let guard = lock(&self.store.shared.groups);
        self.flag.store(true, Ordering::SeqCst);
        drop(guard);
        self.store.shared.group_changed.notify_all();
    }
}

struct MemoryMember {
    store: MemoryStore,
    config: GroupConfig,
    id: String,
    interrupt: Arc<Wakeup>,
}

impl MemoryMember {
    fn name(&self) -> String {
        self.config.name.to_string()
    }

    /// Reaps, settles dead letters and fetches, with the groups locked.
    fn try_fetch(
        &self,
        state: &mut GroupState,
        live: &BTreeSet<String>,
        max: usize,
    ) -> Result<Vec<Delivery>> {
        let now = group_engine::now();
        state.reap(&self.config, now, &mut |m| Ok(live.contains(m)))?;
        state.settle_dead(&self.store, &self.config)?;
        state.fetch(&self.store, &self.config, &self.id, max, now, &topics(&self.store))
    }
}

impl GroupMember for MemoryMember {
    fn id(&self) -> &str {
        &self.id
    }

    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(timeout);
        let name = self.name();
        let shared = &self.store.shared;
        let mut groups = lock(&shared.groups);
        loop {
            if self.interrupt.flag.swap(false, Ordering::SeqCst) {
                return Ok(Vec::new());
            }
            IN_GROUP.with(|f| f.set(true));
            let g = &mut *groups;
            let live = g.live.get(&name).cloned().unwrap_or_default();
            let result = match g.states.get_mut(&name) {
                Some(state) => {
                    self.try_fetch(state, &live, max).map(|got| (got, state.next_change()))
                }
                None => Err(Error::NotFound(format!("group {name}"))),
            };
            IN_GROUP.with(|f| f.set(false));
            let (got, next) = result?;
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            let mut left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(got);
            }
            if let Some(next) = next {
                let until = u64::try_from(next.saturating_sub(group_engine::now())).unwrap_or(0);
                left = left.min(Duration::from_micros(until.max(1000)));
            }
            groups = match left {
                Duration::MAX => wait(&shared.group_changed, groups),
                left => wait_timeout(&shared.group_changed, groups, left).0,
            };
        }
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        with_group(&self.store, &self.name(), |state, _| {
            state.ack(&self.id, tokens);
            Ok(())
        })
    }

    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        with_group(&self.store, &self.name(), |state, _| {
            if state.nack(&self.config, &self.id, token, delay, error, group_engine::now()) {
                state.settle_dead(&self.store, &self.config)?;
            }
            Ok(())
        })
    }

    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        with_group(&self.store, &self.name(), |state, _| {
            state.in_progress(&self.config, &self.id, token, group_engine::now());
            Ok(())
        })
    }

    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        with_group(&self.store, &self.name(), |state, _| {
            let now = group_engine::now();
            for t in tokens {
                state.in_progress(&self.config, &self.id, t, now);
            }
            Ok(())
        })
    }

    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        with_group(&self.store, &self.name(), |state, _| {
            state.release(&self.id, tokens, group_engine::now());
            Ok(true)
        })
    }

    fn interrupter(&self) -> Arc<dyn Interrupt> {
        self.interrupt.clone()
    }
}

impl Drop for MemoryMember {
    fn drop(&mut self) {
        let name = self.name();
        let _ = with_group(&self.store, &name, |state, _| {
            state.leave(&self.id, group_engine::now());
            Ok(())
        });
        let mut groups = lock(&self.store.shared.groups);
        if let Some(live) = groups.live.get_mut(&name) {
            live.remove(&self.id);
        }
        drop(groups);
        self.store.shared.members.fetch_sub(1, Ordering::SeqCst);
        self.store.shared.group_changed.notify_all();
    }
}
