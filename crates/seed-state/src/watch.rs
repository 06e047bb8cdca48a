//! [`Watch`]: the current state of every entity, a marker, then every change,
//! in order and gap-free, across store outages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seed_event::support::backoff;
use seed_event::{
    change_of, entity_type_of, state_topic, Cursor, Error, ErrorKind, EventStore, FollowFrom,
    Follower, Result, Start, Topic, TopicPattern, STATE_TOPIC_PREFIX,
};

use crate::{Entry, StateStore};

/// The first wait after a store turned out unavailable; it doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between two attempts to reach an unavailable store.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// How many entries a watch reads from a follower at once.
const BATCH: usize = 256;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// The current state of every entity, [`WatchEvent::Ready`], then every change.
    Now,
    /// Every change after this revision (of one entity type), then
    /// [`WatchEvent::Ready`] once caught up, then every later change. If changes
    /// after it were compacted away: [`WatchEvent::Compacted`], then as [`WatchFrom::Now`].
    After(Cursor),
}

/// What a [`Watch`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A state: a current one at the start, then each change (tombstones too).
    Entry(Box<Entry>),
    /// The initial states are out (or the watch caught up); changes follow live.
    Ready,
    /// Changes after the revision asked for were removed up to `through`; the
    /// watch starts again from the current states.
    Compacted {
        /// The greatest revision that may be missing.
        through: Cursor,
    },
}

/// What a watch looks at: entity types matching a pattern, maybe one entity.
#[derive(Debug, Clone)]
struct Target {
    /// `state.<type pattern>`.
    pattern: TopicPattern,
    id: Option<String>,
}

/// A live view of the states of an entity type (or a pattern of types), from
/// [`StateStore::watch`]. Call [`Watch::next`] in a loop.
///
/// While the store is unavailable, `next` waits and tries again (waits
/// doubling from 50 ms to 2 s, jittered) and the watch goes on after the last
/// change it returned; [`Watch::reconnecting`] says whether it is waiting.
pub struct Watch {
    store: StateStore,
    target: Target,
    from: WatchFrom,
    /// Entries ready to hand out.
    queue: VecDeque<WatchEvent>,
    follower: Option<Box<dyn Follower>>,
    /// Per topic: the revision up to which the follower's changes were already
    /// covered by the initial states (skip changes at or below it).
    skip: HashMap<(Topic, String), Cursor>,
    /// For [`WatchFrom::After`]: the revision after which [`WatchEvent::Ready`] is due.
    ready_at: Option<(Topic, Cursor)>,
    /// Per watched type: the revision up to which the follower has read.
    read_to: HashMap<Topic, Cursor>,
    started: bool,
    failures: u32,
}

impl StateStore {
    /// Watches the entity types matching `kind` (an entity type, or a pattern
    /// of types such as `*`), only entity `id` when given, from `from`.
    pub fn watch(&self, kind: &str, id: Option<&str>, from: WatchFrom) -> Result<Watch> {
        let pattern = TopicPattern::new(format!("{STATE_TOPIC_PREFIX}{kind}"))
            .map_err(|e| Error::invalid("entity_type", e.to_string()))?;
        let exact = pattern.exact();
        match &exact {
            Some(topic) => {
                state_topic(topic.as_str().trim_start_matches(STATE_TOPIC_PREFIX))?;
            }
            None if matches!(from, WatchFrom::After(_)) => {
                return Err(Error::invalid(
                    "revision",
                    "a revision belongs to one entity type; give a type without wildcards",
                ))
            }
            None => {}
        }
        let mut watch = Watch {
            store: self.clone(),
            target: Target { pattern, id: id.map(str::to_string) },
            from,
            queue: VecDeque::new(),
            follower: None,
            skip: HashMap::new(),
            ready_at: None,
            read_to: HashMap::new(),
            started: false,
            failures: 0,
        };
        // Start now, so the initial states are those of this moment; an
        // unavailable store is waited out by `next`.
        match watch.start() {
            Err(e) if e.kind() != ErrorKind::Unavailable => Err(e),
            _ => Ok(watch),
        }
    }
}

impl Watch {
    /// The next event, waiting up to `timeout`; `None` when the time ran out.
    ///
    /// A store that is unavailable is waited out; every other error ends the watch.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(None);
            }
            match self.step(left) {
                Ok(()) => self.failures = 0,
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    self.failures = self.failures.saturating_add(1);
                    let wait = backoff(FIRST_WAIT, MAX_WAIT, self.failures);
                    let left = deadline
                        .map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
                    if left.is_zero() {
                        return Ok(None);
                    }
                    std::thread::sleep(wait.min(left));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How many attempts to reach the store failed in a row (0: it is reachable).
    pub fn reconnecting(&self) -> u32 {
        self.failures
    }

    fn events(&self) -> Arc<dyn EventStore> {
        self.store.events().clone()
    }

    /// One step: start (initial states or replay), or read changes.
    fn step(&mut self, wait: Duration) -> Result<()> {
        if !self.started {
            return self.start();
        }
        let Some(follower) = self.follower.as_mut() else {
            return Err(Error::unavailable("the watch has no follower yet"));
        };
        let batch = follower.next_batch(BATCH, wait.min(Duration::from_millis(500)))?;
        // Changes the follower was about to read may have been compacted
        // away under it: then say so and start again from the current states.
        // A change right after the one before it (`seq + 1`, as the file and
        // memory stores number them) cannot have had one removed before it;
        // only after a jump is the store asked.
        let mut jumps: HashMap<&Topic, Cursor> = HashMap::new();
        for stored in &batch {
            let topic = &stored.event.topic;
            let before = self.read_to.get(topic).copied().unwrap_or(Cursor::ZERO);
            if stored.cursor != Cursor::new(before.major().saturating_add(1), 0) {
                let low = jumps.entry(topic).or_insert(before);
                *low = (*low).min(before);
            }
            self.read_to.insert(topic.clone(), stored.cursor);
        }
        let mut queued = Vec::new();
        for (topic, before) in jumps {
            let kind = topic.as_str().trim_start_matches(STATE_TOPIC_PREFIX);
            if let Some(through) = self.store.backend().compacted_through(kind)? {
                if through > before {
                    queued.push(WatchEvent::Compacted { through });
                }
            }
        }
        if let Some(compacted) = queued.pop() {
            self.follower = None;
            self.started = false;
            self.from = WatchFrom::Now;
            self.ready_at = None;
            self.read_to.clear();
            self.queue.push_back(compacted);
            return Ok(());
        }
        for stored in batch {
            if entity_type_of(&stored.event.topic).is_none() {
                continue;
            }
            let Some((id, _)) = change_of(&stored.event) else { continue };
            if self.target.id.as_deref().is_some_and(|want| want != id) {
                continue;
            }
            let key = (stored.event.topic.clone(), id.to_string());
            if let Some(covered) = self.skip.get(&key) {
                if stored.cursor <= *covered {
                    continue;
                }
                self.skip.remove(&key);
            }
            let entry = Entry::from_event(&stored)?;
            self.queue.push_back(WatchEvent::Entry(Box::new(entry)));
            if let Some((topic, at)) = &self.ready_at {
                if *topic == stored.event.topic && stored.cursor >= *at {
                    self.ready_at = None;
                    self.queue.push_back(WatchEvent::Ready);
                }
            }
        }
        Ok(())
    }

    /// Sets the watch up; nothing is queued unless all of it worked, so a
    /// failure (an outage) can simply be tried again.
    fn start(&mut self) -> Result<()> {
        if let WatchFrom::After(revision) = self.from {
            let topic = self.target.pattern.exact().ok_or_else(|| {
                Error::invalid("revision", "a revision belongs to one entity type")
            })?;
            let kind = topic.as_str().trim_start_matches(STATE_TOPIC_PREFIX).to_string();
            match self.store.backend().compacted_through(&kind)? {
                Some(through) if through > revision => {
                    self.queue.push_back(WatchEvent::Compacted { through });
                    self.from = WatchFrom::Now;
                }
                _ => {
                    let last = self.events().last_cursor(&topic)?;
                    let follower = self
                        .events()
                        .follow(&self.target.pattern, FollowFrom::after(topic.clone(), revision))?;
                    match last {
                        Some(last) if last > revision => {
                            self.ready_at = Some((topic.clone(), last))
                        }
                        _ => self.queue.push_back(WatchEvent::Ready),
                    }
                    self.read_to = HashMap::from([(topic, revision)]);
                    self.follower = Some(follower);
                    self.started = true;
                    return Ok(());
                }
            }
        }
        self.start_now()
    }

    /// The current states, then the marker; the follower starts where the listing began.
    fn start_now(&mut self) -> Result<()> {
        let events = self.events();
        let mut kinds = Vec::new();
        match self.target.pattern.exact() {
            Some(topic) => kinds.push(topic),
            None => {
                for stats in events.topics()? {
                    if entity_type_of(&stats.topic).is_some()
                        && self.target.pattern.matches(&stats.topic)
                    {
                        kinds.push(stats.topic);
                    }
                }
            }
        }
        let mut positions = BTreeMap::new();
        for topic in &kinds {
            positions.insert(topic.clone(), events.last_cursor(topic)?.unwrap_or(Cursor::ZERO));
        }
        let follower = events.follow(
            &self.target.pattern,
            FollowFrom { start: Start::Beginning, positions: positions.clone() },
        )?;
        let mut initial = Vec::new();
        let mut skip = HashMap::new();
        for topic in &kinds {
            let kind = topic.as_str().trim_start_matches(STATE_TOPIC_PREFIX);
            let start = positions.get(topic).copied().unwrap_or(Cursor::ZERO);
            match &self.target.id {
                Some(id) => {
                    if let Some(stored) = self.store.backend().latest(kind, id)? {
                        let entry = Entry::from_event(&stored)?;
                        if entry.revision > start {
                            skip.insert((topic.clone(), id.clone()), entry.revision);
                        }
                        if !entry.deleted {
                            initial.push(WatchEvent::Entry(Box::new(entry)));
                        }
                    }
                }
                None => {
                    for stored in self.store.backend().list(kind)? {
                        let entry = Entry::from_event(&stored?)?;
                        if entry.revision > start {
                            let key = (topic.clone(), entry.state.entity_id().to_string());
                            skip.insert(key, entry.revision);
                        }
                        if !entry.deleted {
                            initial.push(WatchEvent::Entry(Box::new(entry)));
                        }
                    }
                }
            }
        }
        self.queue.extend(initial);
        self.queue.push_back(WatchEvent::Ready);
        self.read_to = positions.into_iter().collect();
        self.skip = skip;
        self.follower = Some(follower);
        self.started = true;
        Ok(())
    }
}
