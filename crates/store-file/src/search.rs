//! Bisection of a log on its store fields (`seq`, `hwm`), which never decrease along it.

use std::fs::File;
use std::io;

use crate::lines::{read_at, LineReader, BLOCK};
use crate::prefix::{parse_prefix, Prefix, PREFIX_MAX};

/// Below this span, bisection turns into a forward scan.
const LINEAR_SPAN: u64 = 16 * 1024;

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
    use crate::encode::test_line as line;
    use crate::lines::file_with;

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
}
