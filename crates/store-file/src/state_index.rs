//! The index of latest states of one entity type: `<dir>/.states/<stem>.idx`,
//! an open-addressing hash table on disk from entity id to the newest
//! record's version and byte offset in the type's log `state.<type>`.
//!
//! Layout (little-endian `u64`s):
//!
//! - header, 128 bytes: magic `SEEDSIX2`, capacity (slots, a power of two),
//!   entities, covered end (the log offset up to which every line is in the
//!   table), the log's device and inode, lines in the log, lines past the
//!   history limit, version records, then a check word over them;
//! - slot `i` at `128 + 56 i`: two independent 64-bit hashes of the id (the
//!   first 0: empty), version, offset of the record's line, the entity's
//!   oldest version still in the log, its newest version record (1-based;
//!   0: none), and a check word;
//! - after the slots, version records of 32 bytes, one per line indexed, in
//!   log order: version, offset of the line, the entity's version record
//!   before it (1-based; 0: none), and a check word. An entity's records
//!   chain from its slot back through its versions, so its history and any
//!   version are found without reading the log.
//!
//! A line is indexed by writing its version record (at the header's count),
//! its slot, then the header, in place with `pwrite`, only under the log's
//! lock; the check words let a lock-free reader notice a torn read and read
//! again. Writers take an entity's 128 bits of hash for its id; readers
//! also confirm the id on the log line a slot points to. A bigger table, or one rebuilt from the log, is
//! written beside it and renamed over it, after the old one's magic was
//! overwritten with `SEEDSTAL` so that processes holding it open reopen it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{create_private, sync_all, temp_path};

const MAGIC: &[u8; 8] = b"SEEDSIX2";
const STALE: &[u8; 8] = b"SEEDSTAL";
/// Bytes of the header.
pub(crate) const HEADER: u64 = 128;
/// Bytes of one slot.
pub(crate) const SLOT: u64 = 56;
/// Bytes of one version record.
pub(crate) const RECORD: u64 = 32;
/// Bytes of the header's words, from the magic to the check word.
const HEADER_WORDS: usize = 8 + 8 * 8 + 8;
/// The smallest table.
pub(crate) const MIN_CAPACITY: u64 = 1024;
/// A salt for the check words, so that zeroes do not check.
const SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The header of an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub capacity: u64,
    pub count: u64,
    pub covered_end: u64,
    pub dev: u64,
    pub ino: u64,
    pub lines: u64,
    pub excess: u64,
    /// Version records written.
    pub records: u64,
}

impl Header {
    fn words(&self) -> [u64; 8] {
        [
            self.capacity,
            self.count,
            self.covered_end,
            self.dev,
            self.ino,
            self.lines,
            self.excess,
            self.records,
        ]
    }

    fn encode(&self) -> [u8; HEADER_WORDS] {
        let mut out = [0u8; HEADER_WORDS];
        out[..8].copy_from_slice(MAGIC);
        let words = self.words();
        for (i, w) in words.iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        out[72..80].copy_from_slice(&check(&words).to_le_bytes());
        out
    }

    /// Where version record `n` (1-based) starts.
    pub(crate) fn record_at(&self, n: u64) -> u64 {
        HEADER + self.capacity * SLOT + (n - 1) * RECORD
    }
}

/// One version record: a line of an entity, and the entity's record before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub version: u64,
    pub offset: u64,
    /// The entity's record before this one (1-based; 0: none).
    pub prev: u64,
}

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD as usize] {
        let words = [self.version, self.offset, self.prev];
        let mut out = [0u8; RECORD as usize];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out[24..32].copy_from_slice(&check(&words).to_le_bytes());
        out
    }

    /// `None` for a torn or garbled record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let w = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?))
        };
        let record = Record { version: w(0)?, offset: w(1)?, prev: w(2)? };
        (check(&[record.version, record.offset, record.prev]) == w(3)?).then_some(record)
    }
}

/// One slot of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub hash: u64,
    pub tag: u64,
    pub version: u64,
    pub offset: u64,
    pub first: u64,
    /// The entity's newest version record (1-based; 0: none).
    pub chain: u64,
}

impl Slot {
    fn words(&self) -> [u64; 6] {
        [self.hash, self.tag, self.version, self.offset, self.first, self.chain]
    }

    fn encode(&self) -> [u8; SLOT as usize] {
        let words = self.words();
        let mut out = [0u8; SLOT as usize];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out[48..56].copy_from_slice(&check(&words).to_le_bytes());
        out
    }

    /// Whether this slot holds the entity of hashes `(hash, tag)`.
    pub(crate) fn holds(&self, (hash, tag): (u64, u64)) -> bool {
        self.hash == hash && self.tag == tag
    }

    /// `None` for a torn or garbled slot; an empty slot is all zeroes.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Slot> {
        let w = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let slot =
            Slot { hash: w(0), tag: w(1), version: w(2), offset: w(3), first: w(4), chain: w(5) };
        if slot == Slot::default() && w(6) == 0 {
            return Some(slot);
        }
        (check(&slot.words()) == w(6)).then_some(slot)
    }
}

fn check(words: &[u64]) -> u64 {
    words.iter().enumerate().fold(SALT, |acc, (i, w)| mix(acc ^ w.rotate_left(i as u32 * 13 + 7)))
}

/// The splitmix64 finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The two hashes of an entity id in the table: the first places it and is
/// never 0 (which marks an empty slot), the second tells ids apart with it.
pub(crate) fn hash_id(id: &str) -> (u64, u64) {
    let (mut a, mut b): (u64, u64) = (0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142);
    for byte in id.bytes() {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
    }
    (mix(a).max(1), mix(b ^ id.len() as u64))
}

/// An open index file.
pub(crate) struct Index {
    pub file: File,
    pub path: PathBuf,
}

/// What reading the header found.
pub(crate) enum Head {
    /// A current header.
    Current(Header),
    /// The file was replaced: reopen the path.
    Stale,
    /// A torn read or garbage: read again, or rebuild under the lock.
    Unreadable,
}

impl Index {
    /// Opens the index at `path`, for reading and (under the log's lock) writing.
    pub(crate) fn open(path: &Path) -> io::Result<Option<Index>> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Some(Index { file, path: path.to_path_buf() })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn header(&self) -> io::Result<Head> {
        let mut buf = [0u8; HEADER_WORDS];
        match self.file.read_exact_at(&mut buf, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Head::Unreadable),
            Err(e) => return Err(e),
        }
        if &buf[..8] == STALE {
            return Ok(Head::Stale);
        }
        if &buf[..8] != MAGIC {
            return Ok(Head::Unreadable);
        }
        let w =
            |i: usize| u64::from_le_bytes(buf[8 + i * 8..16 + i * 8].try_into().unwrap_or([0; 8]));
        let header = Header {
            capacity: w(0),
            count: w(1),
            covered_end: w(2),
            dev: w(3),
            ino: w(4),
            lines: w(5),
            excess: w(6),
            records: w(7),
        };
        let sum = u64::from_le_bytes(buf[72..80].try_into().unwrap_or([0; 8]));
        let sane = header.capacity.is_power_of_two() && header.capacity >= MIN_CAPACITY;
        Ok(if sum == check(&header.words()) && sane {
            Head::Current(header)
        } else {
            Head::Unreadable
        })
    }

    pub(crate) fn write_header(&self, header: &Header) -> io::Result<()> {
        self.file.write_all_at(&header.encode(), 0)
    }

    /// Slot `i`; `None` when torn or garbled.
    pub(crate) fn slot(&self, i: u64) -> io::Result<Option<Slot>> {
        let mut buf = [0u8; SLOT as usize];
        match self.file.read_exact_at(&mut buf, HEADER + i * SLOT) {
            Ok(()) => Ok(Slot::decode(&buf)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn write_slot(&self, i: u64, slot: &Slot) -> io::Result<()> {
        self.file.write_all_at(&slot.encode(), HEADER + i * SLOT)
    }

    /// Version record `n` (1-based) of a table of `header`; `None` when torn or garbled.
    pub(crate) fn record(&self, header: &Header, n: u64) -> io::Result<Option<Record>> {
        let mut buf = [0u8; RECORD as usize];
        match self.file.read_exact_at(&mut buf, header.record_at(n)) {
            Ok(()) => Ok(Record::decode(&buf)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn write_record(&self, header: &Header, n: u64, record: &Record) -> io::Result<()> {
        self.file.write_all_at(&record.encode(), header.record_at(n))
    }

    /// Marks this file as replaced, for processes that hold it open.
    pub(crate) fn mark_stale(&self) -> io::Result<()> {
        self.file.write_all_at(STALE, 0)
    }
}

/// A table being built in memory (a rebuild from the log, or a bigger table).
pub(crate) struct Table {
    pub header: Header,
    pub bytes: Vec<u8>,
    /// The version records, `header.records` of them.
    pub records: Vec<u8>,
}

impl Table {
    /// An empty table with room for at least `entities` at a load of at most a half.
    pub(crate) fn with_room(entities: u64) -> Table {
        let capacity = (entities.saturating_mul(2)).next_power_of_two().max(MIN_CAPACITY);
        Table {
            header: Header { capacity, ..Header::default() },
            bytes: vec![0; (capacity * SLOT) as usize],
            records: Vec::new(),
        }
    }

    /// Adds a version record; returns its number (1-based).
    pub(crate) fn push_record(&mut self, record: &Record) -> u64 {
        self.records.extend_from_slice(&record.encode());
        self.header.records += 1;
        self.header.records
    }

    pub(crate) fn slot(&self, i: u64) -> Slot {
        let at = (i * SLOT) as usize;
        Slot::decode(&self.bytes[at..at + SLOT as usize]).unwrap_or_default()
    }

    pub(crate) fn set(&mut self, i: u64, slot: &Slot) {
        let at = (i * SLOT) as usize;
        self.bytes[at..at + SLOT as usize].copy_from_slice(&slot.encode());
    }

    /// Writes the table beside `path` and renames it over it; the old file,
    /// if open in `old`, is marked stale first. Returns the new index.
    pub(crate) fn install(
        &self,
        path: &Path,
        old: Option<&Index>,
        durable: bool,
    ) -> io::Result<Index> {
        if let Some(dir) = path.parent() {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(dir)?;
        }
        let tmp = temp_path(path);
        let result = (|| {
            let f = create_private(&tmp)?;
            f.write_all_at(&self.header.encode(), 0)?;
            f.write_all_at(&self.bytes, HEADER)?;
            f.write_all_at(&self.records, HEADER + self.bytes.len() as u64)?;
            if durable {
                sync_all(&f)?;
            }
            if let Some(old) = old {
                old.mark_stale()?;
            }
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let file = OpenOptions::new().read(true).write(true).custom_flags(0).open(path)?;
        Ok(Index { file, path: path.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_headers_round_trip_and_torn_ones_do_not_check() {
        let slot = Slot { hash: 7, tag: 9, version: 3, offset: 1234, first: 1, chain: 2 };
        let bytes = slot.encode();
        assert_eq!(Slot::decode(&bytes), Some(slot));
        let mut torn = bytes;
        torn[16..24].copy_from_slice(&4u64.to_le_bytes());
        assert_eq!(Slot::decode(&torn), None);
        assert_eq!(Slot::decode(&[0; SLOT as usize]), Some(Slot::default()));
        let record = Record { version: 3, offset: 1234, prev: 1 };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        let mut torn = record.encode();
        torn[8] ^= 1;
        assert_eq!(Record::decode(&torn), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.idx");
        let mut table = Table::with_room(10);
        table.header.count = 1;
        table.set(5, &slot);
        assert_eq!(table.push_record(&record), 1);
        let index = table.install(&path, None, false).unwrap();
        let header = match index.header().unwrap() {
            Head::Current(h) => h,
            _ => panic!("the header does not read back"),
        };
        assert_eq!(index.record(&header, 1).unwrap(), Some(record));
        assert!(
            matches!(index.header().unwrap(), Head::Current(h) if h.count == 1 && h.capacity == MIN_CAPACITY)
        );
        assert_eq!(index.slot(5).unwrap(), Some(slot));
        let again = table.install(&path, Some(&index), false).unwrap();
        assert!(matches!(index.header().unwrap(), Head::Stale));
        assert!(matches!(again.header().unwrap(), Head::Current(_)));
        assert_ne!(hash_id("a"), hash_id("b"));
        assert_ne!(hash_id("ab").1, hash_id("ba").1);
        assert_ne!(hash_id("").0, 0);
    }
}
