//! Formatting numbers for people: byte counts and digit grouping, shared by the CLI
//! and the app so both say the same thing the same way.

/// Human-readable byte count in SI units (1 MB = 10^6 bytes).
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// 1234567 → "1,234,567".
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(group_digits(390_410), "390,410");
        assert_eq!(group_digits(7), "7");
        assert_eq!(human_bytes(98_362_432), "98.36 MB");
        assert_eq!(human_bytes(999), "999 B");
    }
}
