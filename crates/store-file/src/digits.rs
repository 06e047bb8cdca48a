//! Decimal digits without a formatter: integers as `itoa` (and so serde_json) writes them,
//! and two-digit fields of dates and times.

/// The decimal digits of 00 to 99, two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `v` in decimal, two digits per division.
#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
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

/// `v` in decimal, with a leading `-` when negative.
#[inline]
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Writes `v` (below 100) as two digits at `at` in `text`.
#[inline]
pub(crate) fn put_digit_pair(text: &mut [u8], at: usize, v: u32) {
    let pair = v as usize * 2;
    text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
