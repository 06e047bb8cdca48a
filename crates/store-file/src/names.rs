//! Topic and consumer names as file names: reversible, and never outside the directory.
//!
//! Every byte outside `[A-Za-z0-9._-]` becomes `%XX` (upper-case hex), and so
//! does a leading `.`, so no name is hidden, `.` or `..`, or contains `/` or
//! NUL. Names whose encoding would be longer than [`MAX_PLAIN`] bytes become
//! `<first 96 bytes of the encoding>~<128-bit hash>`; `~` never appears in a
//! plain encoding, so the two forms cannot collide, and the exact name of a
//! hashed file is kept in its sidecar (see [`crate::meta`]).

use std::fmt::Write as _;

/// The longest plain encoding; longer names are hashed (file names stop at 255 bytes).
pub(crate) const MAX_PLAIN: usize = 200;

/// The file name stem for `name` (without an extension).
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let safe = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if safe {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_PLAIN {
        let mut cut = 96;
        // Do not end the readable part in the middle of a `%XX`.
        while cut > 0 && out.as_bytes()[cut - 1] == b'%'
            || cut > 1 && out.as_bytes()[cut - 2] == b'%'
        {
            cut -= 1;
        }
        format!("{}~{:032x}", &out[..cut], fnv1a_128(name.as_bytes()))
    } else {
        out
    }
}

/// Whether `stem` is a hashed name, whose exact name lives in a sidecar.
pub(crate) fn is_hashed(stem: &str) -> bool {
    stem.contains('~')
}

/// The name a plain `stem` encodes, or `None` if it is hashed or not a canonical encoding.
pub(crate) fn decode(stem: &str) -> Option<String> {
    if is_hashed(stem) || stem.is_empty() {
        return None;
    }
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (encode(&name) == stem).then_some(name)
}

/// FNV-1a with 128 bits: stable across versions and platforms, unlike `std`'s hasher.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_stay_distinct_and_round_trip() {
        let names = ["service/api.health", "service_api.health", "service\\api.health", "a.b"];
        let stems: Vec<_> = names.iter().map(|n| encode(n)).collect();
        assert_eq!(stems[0], "service%2Fapi.health");
        assert_eq!(stems[1], "service_api.health");
        assert_eq!(stems[2], "service%5Capi.health");
        for (n, s) in names.iter().zip(&stems) {
            assert_eq!(decode(s).as_deref(), Some(*n));
        }
        assert_eq!(encode(".hidden"), "%2Ehidden");
        assert_eq!(encode("../../etc/passwd"), "%2E.%2F..%2Fetc%2Fpasswd");
        assert_eq!(decode("%2fa"), None, "only the canonical form decodes");
        assert_eq!(decode("a~b"), None);
    }

    #[test]
    fn long_names_are_hashed_and_short_enough() {
        let long = "é".repeat(127);
        let stem = encode(&long);
        assert!(is_hashed(&stem) && stem.len() < 140, "{stem}");
        assert!(!stem[..stem.find('~').unwrap()].ends_with('%'));
        assert_ne!(encode(&(long.clone() + "a")), stem);
        assert_eq!(decode(&stem), None);
        let plain = "x".repeat(200);
        assert_eq!(encode(&plain), plain);
    }
}
