//! Reading a log's complete lines: forwards, backwards, and finding its committed end.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use seed_event::{Error, Result};

use crate::prefix::{parse_prefix, Prefix};

/// How much a forward reader reads at once.
const CHUNK: usize = 64 * 1024;
/// How much a backward reader or a probe reads at once.
pub(crate) const BLOCK: usize = 8 * 1024;

/// Reads `len` bytes at `offset`, fewer only at the end of the file.
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Walks the complete lines of a file forwards, never past a limit and never
/// returning a line without its newline.
pub(crate) struct LineReader {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Index in `buf` of the next line.
    start: usize,
    /// Bytes at or after this offset are not read.
    limit: u64,
    /// How much to read at once after the first read.
    chunk: usize,
}

impl LineReader {
    /// A reader starting at `pos` (a line start) that reads nothing at or past `limit`.
    pub(crate) fn new(pos: u64, limit: u64) -> LineReader {
        LineReader { buf: Vec::new(), buf_off: pos, start: 0, limit, chunk: CHUNK }
    }

    /// The same reader reading small blocks: for one of many logs read at
    /// once, whose buffers all stay in memory.
    pub(crate) fn in_blocks(self) -> LineReader {
        LineReader { chunk: BLOCK, ..self }
    }

    /// The limit: bytes at or past it are not read.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Moves the limit (it may grow as a file grows).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The offset of the next line.
    pub(crate) fn pos(&self) -> u64 {
        self.buf_off + self.start as u64
    }

    /// Continues at `pos` (a line start), forgetting every buffered byte: bytes
    /// past the last complete line, or of a batch still incomplete, may yet be
    /// cut off by a repair and replaced, so they must be read again.
    pub(crate) fn rewind(&mut self, pos: u64) {
        self.buf.clear();
        self.buf_off = pos;
        self.start = 0;
    }

    /// Continues at the next line, giving the buffer's memory back.
    pub(crate) fn free(&mut self) {
        let pos = self.pos();
        self.rewind(pos);
        self.buf = Vec::new();
    }

    /// The next complete line (without its `\n`) and its offset.
    pub(crate) fn next_line(&mut self, file: &File) -> io::Result<Option<(u64, &[u8])>> {
        let mut searched = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..]) {
                let s = self.start;
                let nl = searched + i;
                self.start = nl + 1;
                return Ok(Some((self.buf_off + s as u64, &self.buf[s..nl])));
            }
            match self.read_more(file)? {
                Some(from) => searched = from,
                None => return Ok(None),
            }
        }
    }

    /// Whether a complete line is buffered.
    pub(crate) fn buffered(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.start..]).is_some()
    }

    /// The next complete line already read, without touching the file.
    pub(crate) fn next_buffered(&mut self) -> Option<(u64, &[u8])> {
        let s = self.start;
        let nl = s + memchr::memchr(b'\n', &self.buf[s..])?;
        self.start = nl + 1;
        Some((self.buf_off + s as u64, &self.buf[s..nl]))
    }

    /// Reads from `file` until a complete line is buffered (or the limit or
    /// the end of the file is reached), so that [`LineReader::next_buffered`]
    /// can do without the file for a while; returns whether a line is buffered.
    pub(crate) fn fill(&mut self, file: &File) -> io::Result<bool> {
        let mut searched = self.start;
        loop {
            if memchr::memchr(b'\n', &self.buf[searched..]).is_some() {
                return Ok(true);
            }
            match self.read_more(file)? {
                Some(from) => searched = from,
                None => return Ok(false),
            }
        }
    }

    /// Reads the next chunk into the buffer, dropping the lines already
    /// returned; returns where in the buffer the new bytes begin, or `None`
    /// at the limit or the end of the file.
    fn read_more(&mut self, file: &File) -> io::Result<Option<usize>> {
        let file_end = self.buf_off + self.buf.len() as u64;
        if file_end >= self.limit {
            return Ok(None);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.buf_off += self.start as u64;
            self.start = 0;
        }
        let old = self.buf.len();
        // Start small (a query near the end reads little), then read in big chunks.
        let chunk = if self.buf.capacity() == 0 { BLOCK } else { self.chunk };
        let want = (chunk.max(old)).min((self.limit - file_end) as usize);
        self.buf.resize(old + want, 0);
        let n = loop {
            match file.read_at(&mut self.buf[old..], file_end) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        Ok((n > 0).then_some(old))
    }
}

/// Walks the complete lines of a file backwards from its last newline.
pub(crate) struct RevLines<'f> {
    file: &'f File,
    lo: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// The next line returned ends just before `end - 1` (its newline); `end == lo` when done.
    end: u64,
}

impl<'f> RevLines<'f> {
    /// Lines in `[lo, size)`, from the last one ending in a newline; `lo` is a line start.
    pub(crate) fn new(file: &'f File, lo: u64, size: u64) -> io::Result<RevLines<'f>> {
        let mut rev = RevLines { file, lo, buf: Vec::new(), buf_off: size, end: size };
        // Find the last newline: bytes after it belong to a line still being written.
        loop {
            if let Some(i) = memchr::memrchr(b'\n', &rev.buf) {
                rev.end = rev.buf_off + i as u64 + 1;
                break;
            }
            if rev.buf_off <= lo {
                rev.end = lo;
                break;
            }
            rev.extend()?;
        }
        Ok(rev)
    }

    /// The offset just past the last complete line.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    fn extend(&mut self) -> io::Result<()> {
        let want = (BLOCK.max(self.buf.len()) as u64).min(self.buf_off - self.lo);
        let off = self.buf_off - want;
        let mut block = read_at(self.file, off, want as usize)?;
        if block.len() as u64 != want {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while read"));
        }
        block.extend_from_slice(&self.buf);
        self.buf = block;
        self.buf_off = off;
        Ok(())
    }

    /// The previous complete line (without its `\n`) and its offset.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        if self.end <= self.lo {
            return Ok(None);
        }
        let nl = self.end - 1;
        if self.buf_off + (self.buf.len() as u64) > self.end {
            self.buf.truncate((self.end - self.buf_off) as usize);
        }
        loop {
            if self.buf_off <= nl {
                let upto = (nl - self.buf_off) as usize;
                let found = memchr::memrchr(b'\n', &self.buf[..upto]);
                if found.is_some() || self.buf_off <= self.lo {
                    let s = found.map_or(0, |i| i + 1);
                    let start = self.buf_off + s as u64;
                    self.end = start;
                    return Ok(Some((start, &self.buf[s..upto])));
                }
            }
            self.extend()?;
        }
    }
}

/// The complete, committed part of a log and its last valid line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Just past the last line of the last complete append: what readers may read.
    pub end: u64,
    /// The store fields of the last valid line before `end`.
    pub last: Option<Prefix>,
}

/// Finds where the committed lines of a `size`-byte log end: before a line
/// without its newline and before the lines of a batch whose last line is missing.
///
/// A reader may race a writer that cuts off an interrupted append (the file
/// shrinks while it is read): then it looks again at the file's new size.
pub(crate) fn inspect_tail(file: &File, size: u64) -> io::Result<Tail> {
    let mut size = size;
    for _ in 0..8 {
        match inspect_tail_once(file, size) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => size = file.metadata()?.len(),
            other => return other,
        }
    }
    inspect_tail_once(file, size)
}

fn inspect_tail_once(file: &File, size: u64) -> io::Result<Tail> {
    // The common case in one small read: the log ends with a whole line that ends a batch.
    let quick = (size.min(1024)) as usize;
    if quick > 0 {
        let block = read_at(file, size - quick as u64, quick)?;
        if block.len() != quick {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while read"));
        }
        if block.last() == Some(&b'\n') {
            let body = &block[..quick - 1];
            if let Some(nl) = memchr::memrchr(b'\n', body) {
                if let Some(p) = parse_prefix(&body[nl + 1..]).filter(|p| !p.more) {
                    return Ok(Tail { end: size, last: Some(p) });
                }
            } else if quick as u64 == size {
                if let Some(p) = parse_prefix(body).filter(|p| !p.more) {
                    return Ok(Tail { end: size, last: Some(p) });
                }
            }
        }
    }
    let mut rev = RevLines::new(file, 0, size)?;
    let mut end = rev.end();
    let mut trailing = true;
    while let Some((start, line)) = rev.next_line()? {
        let prefix = parse_prefix(line);
        if trailing {
            if prefix.is_some_and(|p| p.more) {
                end = start;
                continue;
            }
            trailing = false;
        }
        if let Some(p) = prefix {
            return Ok(Tail { end, last: Some(p) });
        }
    }
    Ok(Tail { end, last: None })
}

/// An error reading `path`.
pub(crate) fn read_err(path: &Path, e: io::Error) -> Error {
    Error::io(format!("reading {}", path.display()), e)
}

/// Opens a log and finds its committed end; `None` if there is no log.
pub(crate) fn open_snapshot(path: &Path) -> Result<Option<(File, Tail)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let size = file.metadata().map_err(|e| read_err(path, e))?.len();
    let tail = inspect_tail(&file, size).map_err(|e| read_err(path, e))?;
    Ok(Some((file, tail)))
}

/// A file holding `lines` and then `extra`, for tests.
#[cfg(test)]
pub(crate) fn file_with(lines: &[Vec<u8>], extra: &[u8]) -> File {
    use std::io::Write as _;
    let mut f = tempfile::tempfile().unwrap();
    for l in lines {
        f.write_all(l).unwrap();
    }
    f.write_all(extra).unwrap();
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::test_line as line;

    #[test]
    fn tail_stops_before_torn_lines_and_incomplete_batches() {
        let lines: Vec<_> = (1..=5).map(|n| line(n, n as i64, false)).collect();
        let full: u64 = lines.iter().map(|l| l.len() as u64).sum();
        let f = file_with(&lines, b"{\"seq\":6,\"hw");
        let tail = inspect_tail(&f, f.metadata().unwrap().len()).unwrap();
        assert_eq!((tail.end, tail.last.map(|p| p.seq)), (full, Some(5)));
        let mut with_batch = lines.clone();
        with_batch.push(line(6, 6, true));
        with_batch.push(line(7, 7, true));
        let f = file_with(&with_batch, b"");
        let tail = inspect_tail(&f, f.metadata().unwrap().len()).unwrap();
        assert_eq!((tail.end, tail.last.map(|p| p.seq)), (full, Some(5)));
        with_batch.push(line(8, 8, false));
        let f = file_with(&with_batch, b"");
        let tail = inspect_tail(&f, f.metadata().unwrap().len()).unwrap();
        assert_eq!(tail.last.map(|p| p.seq), Some(8));
    }

    #[test]
    fn backward_lines_match_forward_lines() {
        let lines: Vec<_> = (1..=200).map(|n| line(n, n as i64, false)).collect();
        let f = file_with(&lines, b"torn");
        let size = f.metadata().unwrap().len();
        let mut rev = RevLines::new(&f, 0, size).unwrap();
        let mut seqs = Vec::new();
        while let Some((_, l)) = rev.next_line().unwrap() {
            seqs.push(parse_prefix(l).unwrap().seq);
        }
        assert_eq!(seqs, (1..=200).rev().collect::<Vec<_>>());
    }
}
