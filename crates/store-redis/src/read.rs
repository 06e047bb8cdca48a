//! Reading a [`Query`]: one lazy, paged range read per topic, merged by timestamp.

use std::collections::VecDeque;

use redis::Value;
use seed_event::support::{apply_limit, merge_by_timestamp};
use seed_event::{Cursor, EventStream, Limit, Query, Result, StoredEvent, Topic};

use crate::codec::{decode, raw_entries};
use crate::{RedisStore, PAGE};

/// The lowest stream id that can hold a match: after the `after` cursor and at
/// or after `since` (ids are never below their event's millisecond).
fn lower_bound(query: &Query) -> Option<String> {
    let since = query.since.map(|t| Cursor::new(t.unix_millis().max(0) as u64, 0));
    match (query.after, since) {
        (Some(a), _) if a == Cursor::new(u64::MAX, u64::MAX) => None,
        (Some(a), Some(s)) if s > a => Some(s.to_string()),
        (Some(a), _) => Some(format!("({a}")),
        (None, Some(s)) => Some(s.to_string()),
        (None, None) => Some("-".to_string()),
    }
}

/// Whether the query filters beyond the id range (so a page may hold non-matches).
fn filters(query: &Query) -> bool {
    query.source.is_some()
        || query.correlation_id.is_some()
        || query.since.is_some()
        || query.until.is_some()
}

/// Pages through one topic's stream, forwards or backwards, yielding matches.
struct Pages<'a> {
    store: &'a RedisStore,
    query: Query,
    topic: Topic,
    key: String,
    /// The open end that moves: the start going forwards, the end going backwards.
    from: String,
    /// The fixed end.
    to: String,
    reverse: bool,
    page: usize,
    buffer: VecDeque<StoredEvent>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(
        store: &'a RedisStore,
        query: &Query,
        topic: Topic,
        reverse: bool,
        page: usize,
    ) -> Pages<'a> {
        let key = store.keys().stream(topic.as_str());
        let low = lower_bound(query);
        let (from, to) = match reverse {
            false => (low.clone().unwrap_or_default(), "+".to_string()),
            true => ("+".to_string(), low.clone().unwrap_or_default()),
        };
        Pages {
            store,
            query: query.clone(),
            topic,
            key,
            from,
            to,
            reverse,
            page: page.clamp(1, PAGE),
            buffer: VecDeque::new(),
            done: low.is_none(),
        }
    }

    fn fetch(&mut self) -> Result<()> {
        let (command, a, b) = match self.reverse {
            false => ("XRANGE", &self.from, &self.to),
            true => ("XREVRANGE", &self.from, &self.to),
        };
        let reply: Value = self.store.shared.run(|con, _| {
            redis::cmd(command).arg(&self.key).arg(a).arg(b).arg("COUNT").arg(self.page).query(con)
        })?;
        let entries = raw_entries(reply, &self.key)?;
        if entries.len() < self.page {
            self.done = true;
        }
        if let Some(last) = entries.last() {
            self.from = format!("({}", last.cursor);
            if last.cursor == Cursor::ZERO && self.reverse
                || last.cursor == Cursor::new(u64::MAX, u64::MAX) && !self.reverse
            {
                self.done = true;
            }
        }
        for raw in entries {
            let stored = decode(raw, &self.topic, &self.key)?;
            if self.query.matches(stored.cursor, &stored.event) {
                self.buffer.push_back(stored);
            }
        }
        // Later pages of a filtered read are fetched in full.
        self.page = PAGE;
        Ok(())
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

pub(crate) fn read<'a>(store: &'a RedisStore, query: &Query) -> Result<EventStream<'a>> {
    query.validate()?;
    let topics: Vec<Topic> = match query.single_topic() {
        Some(t) => vec![t],
        None => store.registered_topics()?.into_iter().filter(|t| query.selects_topic(t)).collect(),
    };
    let unfiltered = !filters(query);
    if let ([topic], Some(Limit::Last(n))) = (topics.as_slice(), query.limit) {
        // The newest n, read backwards and handed out oldest first.
        if n == 0 {
            return Ok(Box::new(std::iter::empty()));
        }
        let page = if unfiltered { n } else { PAGE };
        let newest: Vec<StoredEvent> =
            Pages::new(store, query, topic.clone(), true, page).take(n).collect::<Result<_>>()?;
        return Ok(Box::new(newest.into_iter().rev().map(Ok)));
    }
    let page = match query.limit {
        // No topic contributes more than n to the first n.
        Some(Limit::First(n)) if unfiltered => n,
        _ => PAGE,
    };
    if page == 0 {
        return Ok(Box::new(std::iter::empty()));
    }
    let streams: Vec<EventStream<'a>> = topics
        .into_iter()
        .map(|t| Box::new(Pages::new(store, query, t, false, page)) as EventStream<'a>)
        .collect();
    apply_limit(merge_by_timestamp(streams), query.limit)
}
