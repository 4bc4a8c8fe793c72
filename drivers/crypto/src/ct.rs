//! Constant-time comparison, below everything that compares secrets or MACs (keys and MACs
//! both use it).

/// Compares two MACs in time independent of their contents (but not of their lengths,
/// which are public). Returns `false` when the lengths differ.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_eq_basics() {
        assert!(mac_eq(&[1, 2, 3, 4], &[1, 2, 3, 4]));
        assert!(!mac_eq(&[1, 2, 3, 4], &[1, 2, 3, 5]));
        assert!(!mac_eq(&[1, 2, 3, 4], &[1, 2, 3]));
        assert!(mac_eq(&[], &[]));
    }
}
