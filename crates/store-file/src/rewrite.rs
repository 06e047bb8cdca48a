//! Rewriting a topic's log without some of its lines, for clear and
//! retention: the kept lines go to a new file that is renamed over the log,
//! after a tombstone byte marks the old one as replaced.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write as _};

use seed_event::{Error, Result};

use crate::fsutil::{create_private, sync_all, sync_dir, temp_path, Durability};
use crate::lines::LineReader;
use crate::meta::{self, Meta};
use crate::prefix::{ending_batch, parse_prefix};
use crate::writer::Locked;

/// What a rewrite does with one line.
pub(crate) enum Keep {
    /// Keep the line.
    Yes,
    /// Drop it; `true` if it was a readable event (counted as removed).
    No(bool),
}

impl Locked<'_> {
    /// How many lines with store fields the log holds.
    pub(crate) fn count_lines(&self) -> Result<u64> {
        let mut reader = LineReader::new(0, self.w.cached_len.unwrap_or(0));
        let mut n = 0;
        while let Some((_, line)) =
            reader.next_line(self.file()).map_err(|e| self.w.io("reading", e))?
        {
            n += u64::from(parse_prefix(line).is_some());
        }
        Ok(n)
    }

    /// Rewrites the log without the lines `keep` rejects; returns how many
    /// events were removed. The new log replaces the old one by a rename, so
    /// readers holding the old one keep a consistent view and followers notice.
    pub(crate) fn rewrite(&mut self, keep: impl FnMut(u64, &[u8]) -> Keep) -> Result<u64> {
        self.rewrite_then(keep, || Ok(()))
    }

    /// [`Locked::rewrite`], running `before_replace` once the new log is
    /// written, if it removes anything, before it replaces the old one (a
    /// failure leaves the old log in place).
    pub(crate) fn rewrite_then(
        &mut self,
        mut keep: impl FnMut(u64, &[u8]) -> Keep,
        before_replace: impl FnOnce() -> Result<()>,
    ) -> Result<u64> {
        let end = self.w.cached_len.unwrap_or(0);
        let mut reader = LineReader::new(0, end);
        let tmp = temp_path(&self.w.paths.log);
        let mut removed = 0u64;
        let mut dropped_lines = 0u64;
        let mut kept: Vec<u64> = Vec::new();
        let mut kept_lines = 0u64;
        let result = (|| -> io::Result<()> {
            let mut out = BufWriter::with_capacity(64 * 1024, create_private(&tmp)?);
            // The last kept line of a batch still open (it says "more"), and
            // the unreadable lines kept after it: if the batch's last line is
            // removed, that line must end the batch instead, or readers would
            // wait for the rest for ever and the next writer cut it off.
            let mut held: Option<Vec<u8>> = None;
            let mut after_held: Vec<Vec<u8>> = Vec::new();
            let put = |out: &mut BufWriter<File>, line: &[u8]| -> io::Result<()> {
                out.write_all(line)?;
                out.write_all(b"\n")
            };
            while let Some((off, line)) = reader.next_line(self.file())? {
                let prefix = parse_prefix(line);
                match (keep(off, line), prefix) {
                    (Keep::Yes, Some(p)) => {
                        if let Some(h) = held.take() {
                            put(&mut out, &h)?;
                        }
                        for u in after_held.drain(..) {
                            put(&mut out, &u)?;
                        }
                        if p.more {
                            held = Some(line.to_vec());
                        } else {
                            put(&mut out, line)?;
                        }
                        kept_lines += 1;
                        if kept.is_empty() {
                            kept.push(p.seq);
                        }
                        kept.truncate(1);
                        kept.push(p.seq);
                    }
                    (Keep::Yes, None) if held.is_some() => after_held.push(line.to_vec()),
                    (Keep::Yes, None) => put(&mut out, line)?,
                    (Keep::No(event), prefix) => {
                        dropped_lines += 1;
                        removed += u64::from(event);
                        if prefix.is_some_and(|p| !p.more) {
                            if let Some(h) = held.take() {
                                put(&mut out, &ending_batch(&h))?;
                            }
                            for u in after_held.drain(..) {
                                put(&mut out, &u)?;
                            }
                        }
                    }
                }
            }
            if let Some(h) = held.take() {
                put(&mut out, &ending_batch(&h))?;
            }
            for u in after_held.drain(..) {
                put(&mut out, &u)?;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            sync_all(&file)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.w.io("rewriting", e));
        }
        if dropped_lines == 0 {
            let _ = fs::remove_file(&tmp);
            return Ok(0);
        }
        if let Err(e) = before_replace() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let w = &mut *self.w;
        let gaps = match (kept.first(), kept.last()) {
            (Some(first), Some(last)) => (last - first + 1).saturating_sub(kept_lines),
            _ => 0,
        };
        // Numbers used after the last kept line, by events this rewrite removed.
        let trailing = kept.last().map_or(0, |&last| w.seq.saturating_sub(last));
        let sidecar = Meta { topic: w.topic.to_string(), seq_base: w.seq, gaps, trailing };
        let Some(old) = w.file.as_ref() else {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rewriting", io::Error::other("the log is not open")));
        };
        // The tombstone: one byte past the end of the old log, so a writer of
        // another process whose quick check compares lengths sees a change,
        // looks closer and finds the log replaced. It goes on before the
        // rename: if this process dies in between, the byte is a torn tail of
        // the live log, which readers wait before and the next writer cuts off.
        let done = meta::write(&w.paths.meta, &sidecar, Durability::FileOnly)
            .and_then(|()| {
                old.set_len(end + 1)
                    .map_err(|e| Error::io(format!("marking {}", w.paths.log.display()), e))
            })
            .and_then(|()| {
                fs::rename(&tmp, &w.paths.log).map_err(|e| {
                    let _ = old.set_len(end);
                    Error::io(format!("replacing {}", w.paths.log.display()), e)
                })
            });
        match &done {
            Err(_) => {
                let _ = fs::remove_file(&tmp);
            }
            // The new sidecar and log are in place; one directory sync makes
            // both renames survive a crash. Until it, a crash could bring the
            // old log back (the numbering stays right with either sidecar).
            Ok(()) => {
                if let Err(e) = sync_dir(&w.paths.log) {
                    log::warn!(
                        "topic {}: syncing the directory after replacing its log: {e}",
                        w.topic
                    );
                }
            }
        }
        w.cached_len = None;
        done.map(|()| removed)
    }
}
