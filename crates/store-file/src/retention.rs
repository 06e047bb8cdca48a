//! Clear and retention: which lines of a log go, decided under its lock and
//! carried out by a [rewrite](crate::rewrite).

use seed_event::{Limits, Result, Timestamp};

use crate::decode::event_timestamp;
use crate::lines::{open_snapshot, read_err, LineReader};
use crate::meta;
use crate::paths::Paths;
use crate::prefix::parse_prefix;
use crate::rewrite::Keep;
use crate::writer::{Locked, TopicWriter};

/// Whether a topic is past its [`Limits::looser`] limits, so worth rewriting.
pub(crate) fn retention_due(paths: &Paths, limits: &Limits) -> Result<bool> {
    if limits.is_unlimited() {
        return Ok(false);
    }
    let Some((file, tail)) = open_snapshot(&paths.log)? else { return Ok(false) };
    let Some(last) = tail.last else { return Ok(false) };
    let mut reader = LineReader::new(0, tail.end);
    let mut first = None;
    while let Some((_, line)) = reader.next_line(&file).map_err(|e| read_err(&paths.log, e))? {
        if let (Some(p), Some(ts)) = (parse_prefix(line), event_timestamp(line)) {
            first = Some((p.seq, ts));
            break;
        }
    }
    let Some((first_seq, first_ts)) = first else { return Ok(false) };
    let due = limits.looser();
    if let Some(max) = due.max_events {
        let gaps = meta::read(&paths.meta)?.map_or(0, |m| m.missing_before(last.seq));
        let count = (last.seq + 1).saturating_sub(first_seq).saturating_sub(gaps);
        if count > max {
            return Ok(true);
        }
    }
    Ok(due.cutoff(Timestamp::now()).is_some_and(|cutoff| first_ts < cutoff.unix_micros()))
}

/// Removes what `limits` do not allow from the log of `writer`.
pub(crate) fn enforce_limits(writer: &mut TopicWriter, limits: &Limits) -> Result<u64> {
    let mut locked = writer.lock_strict()?;
    let too_old = limits.cutoff(Timestamp::now()).map(Timestamp::unix_micros);
    // With a count limit, find how many readable lines there are first.
    let mut drop_first = 0u64;
    if let Some(max) = limits.max_events {
        let count = locked.count_lines()?;
        drop_first = count.saturating_sub(max);
    }
    if drop_first == 0 && too_old.is_none() {
        return Ok(0);
    }
    let mut seen = 0u64;
    locked.rewrite(|_, line| {
        let Some(_) = parse_prefix(line) else { return Keep::Yes };
        seen += 1;
        if seen <= drop_first {
            return Keep::No(true);
        }
        match too_old {
            Some(limit) => match event_timestamp(line) {
                Some(ts) if ts < limit => Keep::No(true),
                _ => Keep::Yes,
            },
            None => Keep::Yes,
        }
    })
}

/// Removes from a locked log the events numbered up to `limit` (with
/// `before`, only those older than it, in Unix microseconds); returns how many went.
pub(crate) fn clear_up_to(locked: &mut Locked<'_>, limit: u64, before: Option<i64>) -> Result<u64> {
    locked.rewrite(|_, line| match parse_prefix(line) {
        Some(p) if p.seq <= limit => match before {
            None => Keep::No(true),
            Some(b) => match event_timestamp(line) {
                Some(ts) if ts < b => Keep::No(true),
                _ => Keep::Yes,
            },
        },
        Some(_) => Keep::Yes,
        // Unreadable lines go with a whole clear and stay otherwise.
        None => {
            if before.is_none() {
                Keep::No(false)
            } else {
                Keep::Yes
            }
        }
    })
}
