//! The log line format and the readers that walk a log forwards, backwards and by bisection.
//!
//! A line is `{"seq":N,"hwm":H,` (plus `"more":true,` inside a batch) followed
//! by the rest of the event's JSON exactly as `Event` writes it, and `\n`.
//! `seq` is the event's position in its topic; `hwm` is the largest timestamp
//! (Unix microseconds) of this line and every earlier one in the file, so it
//! never decreases and can be bisected even when timestamps are out of order.
//! The store fields come first so that a probe in the middle of a file reads
//! them from the first bytes after a newline, whatever the size of the event.

use std::fs::File;
use std::io::{self, Write as _};

use std::os::unix::fs::FileExt;

use seed_event::Event;

/// How much a forward reader reads at once.
const CHUNK: usize = 64 * 1024;
/// How much a backward reader or a probe reads at once.
const BLOCK: usize = 8 * 1024;
/// More bytes than any prefix takes.
const PREFIX_MAX: usize = 96;
/// Below this span, bisection turns into a forward scan.
const LINEAR_SPAN: u64 = 16 * 1024;

/// The store fields at the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The event's sequence number in its topic.
    pub seq: u64,
    /// The running maximum timestamp (Unix microseconds) up to this line.
    pub hwm: i64,
    /// Whether this line is followed by more lines of the same batch.
    pub more: bool,
}

/// Appends one line for `event` to `out`: the store fields, then the event's
/// JSON byte for byte as `Event`'s `Serialize` writes it (a test checks this),
/// without going through a generic serializer for the fixed fields.
#[cfg(test)]
pub(crate) fn encode_line(out: &mut Vec<u8>, prefix: Prefix, event: &Event) {
    encode_prefix(out, prefix);
    encode_body(out, event);
}

/// The store fields that start a line, up to and including the comma before `"id"`.
pub(crate) fn encode_prefix(out: &mut Vec<u8>, prefix: Prefix) {
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, prefix.seq);
    out.extend_from_slice(b",\"hwm\":");
    push_i64(out, prefix.hwm);
    if prefix.more {
        out.extend_from_slice(b",\"more\":true");
    }
    out.push(b',');
}

/// The rest of a line after [`encode_prefix`]: the event's fields and the newline.
/// It needs no lock, so writers prepare it before they take one.
#[cfg(test)]
pub(crate) fn encode_body(out: &mut Vec<u8>, event: &Event) {
    BodyEncoder::default().encode(out, event);
}

/// Writes the rest of lines after [`encode_prefix`]: the event's fields and
/// the newline; keeps the text of the last second it wrote, which the next
/// events of a batch, and the next appends of a busy topic, mostly share.
#[derive(Debug, Default)]
pub(crate) struct BodyEncoder {
    /// The whole second of the last timestamp written and its text
    /// (`2026-04-16T12:00:00`), if it was written the fast way.
    second: Option<(u64, [u8; 19])>,
}

impl BodyEncoder {
    /// Appends the body of `event`'s line to `out`.
    pub(crate) fn encode(&mut self, out: &mut Vec<u8>, event: &Event) {
        out.extend_from_slice(b"\"id\":\"");
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(event.id.hyphenated().encode_lower(&mut id).as_bytes());
        out.extend_from_slice(b"\",\"topic\":");
        push_json_str(out, event.topic.as_str());
        out.extend_from_slice(b",\"payload\":");
        push_object(out, &event.payload);
        out.extend_from_slice(b",\"source\":");
        push_json_str(out, &event.source);
        out.extend_from_slice(b",\"timestamp\":\"");
        self.push_timestamp(out, event.timestamp);
        out.extend_from_slice(b"\",\"correlation_id\":");
        match &event.correlation_id {
            Some(c) => push_json_str(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"metadata\":");
        push_object(out, &event.metadata);
        out.extend_from_slice(b"}\n");
    }

    /// [`push_timestamp`], with the date and time of day taken from the last
    /// call when the second is the same.
    fn push_timestamp(&mut self, out: &mut Vec<u8>, t: seed_event::Timestamp) {
        let micros = match u64::try_from(t.unix_micros()) {
            Ok(m) if m < YEAR_10000 => m,
            _ => return push_timestamp(out, t),
        };
        let (second, frac) = (micros / 1_000_000, (micros % 1_000_000) as u32);
        match self.second {
            Some((s, text)) if s == second => {
                let mut tail = *b".000000+00:00";
                put_digit_pair(&mut tail, 1, frac / 10_000);
                put_digit_pair(&mut tail, 3, frac / 100 % 100);
                put_digit_pair(&mut tail, 5, frac % 100);
                out.extend_from_slice(&text);
                out.extend_from_slice(&tail);
            }
            _ => {
                let start = out.len();
                push_timestamp(out, t);
                self.second = out[start..].first_chunk::<19>().map(|text| (second, *text));
            }
        }
    }
}

/// Writes `v` (below 100) as two digits at `at` in `text`.
fn put_digit_pair(text: &mut [u8], at: usize, v: u32) {
    let pair = v as usize * 2;
    text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
}

/// A JSON object in serde_json's compact form.
fn push_object(out: &mut Vec<u8>, map: &seed_event::JsonObject) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, k);
        out.push(b':');
        push_value(out, v);
    }
    out.push(b'}');
}

/// A JSON value in serde_json's compact form.
fn push_value(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Integers in the same decimal form serde_json's `itoa` writes; floats
        // through serde_json (serializing plain data into memory cannot fail).
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                push_u64(out, u);
            } else if let Some(i) = n.as_i64() {
                push_i64(out, i);
            } else {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => push_object(out, map),
    }
}

/// The decimal digits of 00 to 99, two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `v` in decimal, two digits per division.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// A JSON string as serde_json writes it; text without `"`, `\\` and control
/// characters (the only bytes serde_json escapes) is copied as it is.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// The bytes serde_json escapes in a string: below 0x20, `"` and `\\`.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether `s` holds a byte below 0x20, `"` or `\\`, eight bytes at a time
/// (byte by byte, through a table, below eight bytes).
fn needs_escape(s: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Nonzero exactly when some byte of `v` is zero (resp. below 0x20).
    let zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let special = |word: [u8; 8]| {
        let v = u64::from_le_bytes(word);
        let control = v.wrapping_sub(LO * 0x20) & !v & HI;
        let quote = zero_byte(v ^ (LO * u64::from(b'"')));
        let backslash = zero_byte(v ^ (LO * u64::from(b'\\')));
        control | quote | backslash != 0
    };
    #[cfg(target_arch = "x86_64")]
    if s.len() >= 16 {
        return sse2::needs_escape(s);
    }
    let Some(last) = s.len().checked_sub(8) else {
        return s.iter().any(|&b| ESCAPED[usize::from(b)]);
    };
    let word_at = |i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        word
    };
    let mut i = 0;
    while i < last {
        if special(word_at(i)) {
            return true;
        }
        i += 8;
    }
    // The last eight bytes, overlapping the previous word when the length is
    // not a multiple of eight.
    special(word_at(last))
}

/// [`needs_escape`] sixteen bytes at a time, for strings of sixteen bytes or more.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// Whether any of the 16 bytes at `at` is below 0x20, `"` or `\\`.
    ///
    /// # Safety
    /// `at + 16 <= s.len()`.
    unsafe fn special(s: &[u8], at: usize) -> bool {
        // SAFETY: SSE2 is part of every x86_64 CPU; the caller keeps the
        // unaligned 16-byte load inside `s`.
        unsafe {
            let v = _mm_loadu_si128(s.as_ptr().add(at).cast::<__m128i>());
            // A byte is at most 0x1f (unsigned) exactly when min(byte, 0x1f) is the byte.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(quote, backslash))) != 0
        }
    }

    /// `s.len() >= 16`; the last 16 bytes overlap the previous block when the
    /// length is not a multiple of 16.
    pub(super) fn needs_escape(s: &[u8]) -> bool {
        let Some(last) = s.len().checked_sub(16) else { return super::needs_escape(s) };
        let mut at = 0;
        while at < last {
            // SAFETY: at < last, so at + 16 <= s.len().
            if unsafe { special(s, at) } {
                return true;
            }
            at += 16;
        }
        // SAFETY: last + 16 == s.len().
        unsafe { special(s, last) }
    }
}

/// 10000-01-01T00:00:00Z in Unix microseconds: the end of [`push_timestamp`]'s fast path.
const YEAR_10000: u64 = 253_402_300_800_000_000;

/// `Timestamp`'s text form (`2026-04-16T12:00:00.123456+00:00`) without a formatter.
///
/// Times from 1970 to 9999 take an unsigned path whose divisions by
/// constants compile to multiplications (the signed `div_euclid` chain cost
/// about 50 ns an event); other times go through `Timestamp`'s `Display`.
fn push_timestamp(out: &mut Vec<u8>, t: seed_event::Timestamp) {
    let Ok(micros) = u64::try_from(t.unix_micros()) else {
        let _ = write!(out, "{t}");
        return;
    };
    if micros >= YEAR_10000 {
        let _ = write!(out, "{t}");
        return;
    }
    let secs = micros / 1_000_000;
    let frac = (micros % 1_000_000) as u32;
    let days = secs / 86_400;
    let sod = (secs % 86_400) as u32;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), shifted
    // to start at 0000-03-01 so that every quantity is non-negative.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    let mut text = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put2 = |at: usize, v: u32| put_digit_pair(&mut text, at, v);
    put2(0, year / 100);
    put2(2, year % 100);
    put2(5, month);
    put2(8, day);
    put2(11, sod / 3600);
    put2(14, sod / 60 % 60);
    put2(17, sod % 60);
    put2(20, frac / 10_000);
    put2(22, frac / 100 % 100);
    put2(24, frac % 100);
    out.extend_from_slice(&text);
}

/// `line` (a line of a batch, `"more":true`) made the last line of its
/// batch: the same line without `"more":true`. A line whose store fields are
/// not in the form this crate writes is returned as it is.
pub(crate) fn ending_batch(line: &[u8]) -> Vec<u8> {
    let Some(p) = parse_prefix(line) else { return line.to_vec() };
    let mut with_more = Vec::with_capacity(PREFIX_MAX);
    encode_prefix(&mut with_more, p);
    let Some(body) = line.strip_prefix(with_more.as_slice()) else { return line.to_vec() };
    let mut out = Vec::with_capacity(line.len());
    encode_prefix(&mut out, Prefix { more: false, ..p });
    out.extend_from_slice(body);
    out
}

/// Reads the store fields at the start of `line`; `None` if they are not there.
pub(crate) fn parse_prefix(line: &[u8]) -> Option<Prefix> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let (seq, rest) = parse_digits(rest)?;
    let rest = rest.strip_prefix(b",\"hwm\":")?;
    let (negative, rest) = match rest.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (hwm, rest) = parse_digits(rest)?;
    let hwm = i64::try_from(hwm).ok()?;
    let hwm = if negative { -hwm } else { hwm };
    let more = rest.starts_with(b",\"more\":true,");
    let rest = if more { &rest[12..] } else { rest };
    if !rest.starts_with(b",\"") || seq == 0 {
        return None;
    }
    Some(Prefix { seq, hwm, more })
}

fn parse_digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for b in &s[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((v, &s[n..]))
}

/// Reads `len` bytes at `offset`, fewer only at the end of the file.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
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
}

impl LineReader {
    /// A reader starting at `pos` (a line start) that reads nothing at or past `limit`.
    pub(crate) fn new(pos: u64, limit: u64) -> LineReader {
        LineReader { buf: Vec::new(), buf_off: pos, start: 0, limit }
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
            let file_end = self.buf_off + self.buf.len() as u64;
            if file_end >= self.limit {
                return Ok(None);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.buf_off += self.start as u64;
                self.start = 0;
            }
            searched = self.buf.len();
            // Start small (a query near the end reads little), then read in big chunks.
            let chunk = if self.buf.capacity() == 0 { BLOCK } else { CHUNK };
            let want = (chunk.max(self.buf.len())).min((self.limit - file_end) as usize);
            let old = self.buf.len();
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
            if n == 0 {
                return Ok(None);
            }
        }
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

/// The offset of the first line in `[lo, hi)` whose store fields satisfy
/// `pred`, or `hi` if none does. `pred` must be false then true along the
/// file (e.g. `seq > n` or `hwm >= t`); lines without store fields are passed
/// over. `lo` and `hi` are line starts; `limit` is the committed end.
pub(crate) fn search(
    file: &File,
    lo: u64,
    hi: u64,
    limit: u64,
    pred: impl Fn(&Prefix) -> bool,
) -> io::Result<u64> {
    let (mut lo, mut hi) = (lo, hi);
    while hi.saturating_sub(lo) > LINEAR_SPAN {
        let mid = lo + (hi - lo) / 2;
        match probe(file, mid, hi)? {
            Some((s, p)) if pred(&p) => hi = s,
            Some((s, _)) => lo = s + 1,
            None => break,
        }
    }
    // `lo` may be inside a line: start one byte earlier and drop the first
    // (possibly empty) piece, which ends at the first newline at or after `lo - 1`.
    let mut reader = LineReader::new(lo.saturating_sub(1), limit);
    if lo > 0 {
        let _ = reader.next_line(file)?;
    }
    while let Some((s, line)) = reader.next_line(file)? {
        if s >= hi {
            break;
        }
        if parse_prefix(line).is_some_and(|p| pred(&p)) {
            return Ok(s);
        }
    }
    Ok(hi)
}

/// The first line at or after `pos` (starting before `hi`) that has store fields.
fn probe(file: &File, pos: u64, hi: u64) -> io::Result<Option<(u64, Prefix)>> {
    let mut at = pos.saturating_sub(1);
    // Find the first newline at or after `pos - 1`: the line after it starts at or after `pos`.
    let mut skip_to_newline = pos > 0;
    loop {
        if at >= hi {
            return Ok(None);
        }
        let block = read_at(file, at, BLOCK)?;
        if block.is_empty() {
            return Ok(None);
        }
        let mut i = 0;
        loop {
            if skip_to_newline {
                match memchr::memchr(b'\n', &block[i..]) {
                    Some(j) => {
                        i += j + 1;
                    }
                    None => break,
                }
            }
            let s = at + i as u64;
            if s >= hi {
                return Ok(None);
            }
            let prefix = if block.len() - i >= PREFIX_MAX {
                parse_prefix(&block[i..])
            } else {
                parse_prefix(&read_at(file, s, PREFIX_MAX)?)
            };
            if let Some(p) = prefix {
                return Ok(Some((s, p)));
            }
            skip_to_newline = true;
            if i >= block.len() {
                break;
            }
        }
        at += block.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed_event::{JsonObject, Timestamp, Topic};
    use std::io::Write;

    fn line(seq: u64, hwm: i64, more: bool) -> Vec<u8> {
        let e = Event::new(Topic::new("t").unwrap(), "s", JsonObject::new())
            .with_timestamp(Timestamp::from_unix_micros(hwm));
        let mut out = Vec::new();
        encode_line(&mut out, Prefix { seq, hwm, more }, &e);
        out
    }

    #[test]
    fn prefix_round_trips_and_the_event_still_parses() {
        for (seq, hwm, more) in [(1, 0, false), (u64::MAX / 2, -5, true), (7, i64::MAX, false)] {
            let l = line(seq, hwm, more);
            assert_eq!(parse_prefix(&l), Some(Prefix { seq, hwm, more }));
            let text = std::str::from_utf8(&l[..l.len() - 1]).unwrap();
            assert_eq!(Event::from_json_line(text).unwrap().topic.as_str(), "t");
        }
        for bad in
            [&b""[..], b"{\"seq\":0,\"hwm\":1,\"id\"", b"{\"seq\":1,\"hwm\":,", b"{\"id\":1}"]
        {
            assert_eq!(parse_prefix(bad), None);
        }
    }

    #[test]
    fn escape_detection_is_exact() {
        for b in 0u8..=255 {
            for pos in 0..17 {
                let mut bytes = vec![b'a'; 17];
                bytes[pos] = b;
                let expected = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(&bytes), expected, "byte {b:#x} at {pos}");
            }
        }
        // Every byte at every position of every length up to two words and
        // past two 16-byte blocks, so the byte-by-byte path, the word loop,
        // the block loop and the overlapping last word and block are all
        // checked.
        for len in (0..=17).chain([31, 32, 33, 47, 48, 49]) {
            for pos in 0..len {
                for b in 0u8..=255 {
                    let mut bytes = vec![b'~'; len];
                    bytes[pos] = b;
                    let expected = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&bytes), expected, "byte {b:#x} at {pos} of {len}");
                }
            }
            assert!(!needs_escape(&vec![b'~'; len]), "length {len}");
        }
    }

    /// Every ASCII character at every position of every length up to two
    /// words and a half, and some wider characters, written as serde_json
    /// writes them.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut out = Vec::new();
        let mut check = |s: &str| {
            out.clear();
            out.extend_from_slice(b"x");
            push_json_str(&mut out, s);
            assert_eq!(&out[1..], serde_json::to_string(s).unwrap().as_bytes(), "{s:?}");
        };
        for len in 0..=20 {
            check(&"~".repeat(len));
            for pos in 0..len {
                for b in 0u8..0x80 {
                    let mut bytes = vec![b'~'; len];
                    bytes[pos] = b;
                    check(std::str::from_utf8(&bytes).unwrap());
                }
            }
        }
        for s in ["ü", "\u{2028}é\u{1f600}", "ключ\"", "\u{7f}\u{1f600}\n", "aaaaaaaé\u{1}"]
        {
            check(s);
        }
    }

    /// Days from 1969 to 10000 a month and a bit apart (so every day of
    /// the month and time of day comes round), and the days around the end
    /// of February of leap and century years, as `Timestamp` displays them.
    #[test]
    fn timestamps_are_written_as_timestamp_displays_them() {
        const DAY: i64 = 86_400_000_000;
        let mut out = Vec::new();
        let mut check = |micros: i64| {
            let t = Timestamp::from_unix_micros(micros);
            out.clear();
            push_timestamp(&mut out, t);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), t.to_string(), "{micros}");
        };
        let mut micros = -400 * DAY;
        while micros < 253_402_300_800_000_000 + 400 * DAY {
            check(micros);
            micros += 31 * DAY + 3_601_000_007;
        }
        for year in [1970i64, 1972, 2000, 2024, 2100, 2400, 9996, 9999] {
            // About 1 March of `year` in Unix days (the ±3 days cover the
            // end of February whether or not the year is a leap year).
            let leaps = |y: i64| y / 4 - y / 100 + y / 400;
            let march = (year - 1970) * 365 + leaps(year - 1) - leaps(1969) + 59;
            for d in -3..3 {
                check((march + d) * DAY + 12_345_678);
                check((march + d) * DAY - 1);
            }
        }
    }

    /// One encoder through the same second, the next, an earlier one, and
    /// times off its fast path in between: each body says its own time.
    #[test]
    fn an_encoder_reusing_the_last_second_writes_every_time_exactly() {
        const SECOND: i64 = 1_000_000;
        let base = 1_776_340_800 * SECOND; // 2026-04-16T12:00:00Z
        let times = [
            base,
            base + 1,
            base + 999_999,
            base + SECOND,
            base + SECOND + 5,
            base - 1,
            base,
            -1,
            base,
            253_402_300_800_000_000, // year 10000: `Display`'s form
            253_402_300_800_000_000 - 1,
            253_402_300_800_000_000 - 2,
            0,
            base + 86_400 * SECOND,
            base + 86_400 * SECOND + 7,
        ];
        let mut encoder = BodyEncoder::default();
        let mut e = Event::new(Topic::new("t").unwrap(), "s", JsonObject::new());
        for micros in times {
            e.timestamp = Timestamp::from_unix_micros(micros);
            let mut out = Vec::new();
            encoder.encode(&mut out, &e);
            let mut fresh = Vec::new();
            encode_body(&mut fresh, &e);
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(fresh).unwrap());
            let text = format!("\"timestamp\":\"{}\"", e.timestamp);
            let mut line = Vec::new();
            encoder.encode(&mut line, &e);
            assert!(String::from_utf8(line).unwrap().contains(&text), "{micros}");
        }
    }

    #[test]
    fn a_batch_line_made_the_last_loses_only_more() {
        let e = Event::new(Topic::new("t").unwrap(), "s", JsonObject::new());
        let (mut inner, mut last) = (Vec::new(), Vec::new());
        encode_line(&mut inner, Prefix { seq: 12, hwm: 345, more: true }, &e);
        encode_line(&mut last, Prefix { seq: 12, hwm: 345, more: false }, &e);
        assert_eq!(ending_batch(&inner), last);
        assert_eq!(ending_batch(&last), last, "a last line stays as it is");
        assert_eq!(ending_batch(b"not an event"), b"not an event".to_vec());
    }

    #[test]
    fn integers_are_written_as_std_writes_them() {
        let mut cases = vec![0, 1, 9, 10, 99, 100, 101, 999, 1000, u64::MAX, u64::MAX - 1];
        for p in 0..20 {
            let x = 10u64.pow(p);
            cases.extend([x - 1, x, x + 1, x.saturating_mul(7).saturating_add(3)]);
        }
        // And numbers of every length with every kind of digit (xorshift).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (k % 64));
        }
        for v in cases {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
            if let Ok(i) = i64::try_from(v) {
                for i in [i, -i, i64::MIN + i] {
                    let mut out = Vec::new();
                    push_i64(&mut out, i);
                    assert_eq!(String::from_utf8(out).unwrap(), i.to_string());
                }
            }
        }
    }

    #[test]
    fn lines_hold_exactly_the_events_serde_form() {
        let t = Topic::new("service/api.health").unwrap();
        let payload = serde_json::json!({
            "ü": "\"quoted\"\n",
            "n": [1, 2.5, null, -3, 1e300, u64::MAX, true, false, [], {}],
            "ints": [0, 9, 10, 99, 100, -1, -10, -100, i64::MIN, i64::MAX, u64::MAX - 1],
            "floats": [0.1, -0.0, 1e-7, 123456789.125, f64::MAX, f64::MIN_POSITIVE, 1.0],
            "Schlüssel \u{1f600}\u{0}": {"ключ": "\u{8}\u{c}\r\t\u{1f}\u{2028}é", "k\"": []},
            "long": "an ASCII string longer than eight bytes, then one quote\"",
            "o": {"b": 1, "a": {"x": [{"y": "\\"}]}},
            "e": "",
            "tab\t": "\u{1f600}\u{7f}",
        });
        let base = Event::new(t, "src\u{7f}\u{1}", payload.as_object().unwrap().clone());
        let times = [
            0,
            -1,
            1_776_340_800_123_456,
            951_782_400_000_000,
            -62_135_596_800_000_000 - 1,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            4_107_542_400_000_001,
        ];
        for (i, micros) in times.into_iter().enumerate() {
            let mut e = base.clone().with_timestamp(Timestamp::from_unix_micros(micros));
            if i % 2 == 0 {
                e = e
                    .with_correlation_id("c\"1")
                    .with_metadata(payload.as_object().unwrap().clone());
            }
            let mut out = Vec::new();
            let seq = [3, 10, 99, 100, 12_345, u64::MAX / 2, 1, 1_000_000_007][i];
            encode_line(&mut out, Prefix { seq, hwm: micros, more: i % 3 == 0 }, &e);
            let more = if i % 3 == 0 { "\"more\":true," } else { "" };
            let expected =
                format!("{{\"seq\":{seq},\"hwm\":{micros},{more}{}\n", &e.to_json_line()[1..]);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    fn file_with(lines: &[Vec<u8>], extra: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        for l in lines {
            f.write_all(l).unwrap();
        }
        f.write_all(extra).unwrap();
        f
    }

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
    fn search_finds_first_match_over_corrupt_and_big_lines() {
        let mut lines = Vec::new();
        for n in 1..=3000u64 {
            if n % 97 == 0 {
                lines.push(b"garbage line\n".to_vec());
            }
            let mut l = line(n, (n / 3) as i64, false);
            if n % 500 == 0 {
                // A big line to make probes cross blocks.
                let big = format!(
                    "{{\"seq\":{n},\"hwm\":{},\"pad\":\"{}\"}}\n",
                    n / 3,
                    "x".repeat(40_000)
                );
                l = big.into_bytes();
            }
            lines.push(l);
        }
        let f = file_with(&lines, b"");
        let size = f.metadata().unwrap().len();
        let mut offsets = Vec::new();
        let mut reader = LineReader::new(0, size);
        while let Some((off, l)) = reader.next_line(&f).unwrap() {
            if let Some(p) = parse_prefix(l) {
                offsets.push((off, p));
            }
        }
        for target in [0u64, 1, 2, 3, 499, 500, 501, 1500, 2999, 3000, 3001] {
            let got = search(&f, 0, size, size, |p| p.seq > target).unwrap();
            let want = offsets.iter().find(|(_, p)| p.seq > target).map_or(size, |(o, _)| *o);
            assert_eq!(got, want, "seq > {target}");
            let t = target as i64 / 3;
            let got = search(&f, 0, size, size, |p| p.hwm >= t).unwrap();
            let want = offsets.iter().find(|(_, p)| p.hwm >= t).map_or(size, |(o, _)| *o);
            assert_eq!(got, want, "hwm >= {t}");
        }
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
