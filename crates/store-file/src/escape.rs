//! Whether a string needs JSON escaping, the way serde_json decides it.

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
#[inline]
pub(crate) fn needs_escape(s: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
