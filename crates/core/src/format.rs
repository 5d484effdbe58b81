//! Numbers for people, one way everywhere: the CLI's tables and the page print the same text.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with an SI prefix and two decimals: `4089184256` → `4.09 G`, `269722` → `269.72 k`.
pub fn si(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.2} k", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", x / 1e6),
        _ => format!("{:.2} G", x / 1e9),
    }
}

/// Bytes in MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A learning rate as people write it: `0.0010000000000000002` → `0.001`, `1e-5` → `1e-5`.
pub fn lr(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    // Six significant digits remove the float noise of a schedule's products.
    let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    if (1e-4..1e4).contains(&rounded.abs()) {
        rounded.to_string()
    } else {
        format!("{rounded:e}")
    }
}

/// The indices of the `k` largest values, largest first; equal values in index order.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.truncate(k);
    order.into_iter().map(|i| (i, probs[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_units() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(25_557_032), "25,557,032");
        assert_eq!(si(999), "999");
        assert_eq!(si(4_089_184_256), "4.09 G");
        assert_eq!(si(269_722), "269.72 k");
        assert_eq!(si(40_551_040), "40.55 M");
        assert_eq!(mib(58 * 1024 * 1024), "58.00 MiB");
    }

    #[test]
    fn learning_rates_print_rounded() {
        assert_eq!(lr(0.1 * 0.1 * 0.1), "0.001");
        assert_eq!(lr(0.0010000000000000002), "0.001");
        assert_eq!(lr(0.1), "0.1");
        assert_eq!(lr(0.05), "0.05");
        assert_eq!(lr(1e-5), "1e-5");
        assert_eq!(lr(1.2345678e-6), "1.23457e-6");
        assert_eq!(lr(0.0), "0");
    }

    #[test]
    fn top_k_is_sorted_and_stable() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.2], 2), vec![(1, 0.5), (2, 0.2)]);
        assert_eq!(top_k(&[0.1, 0.5], 5), vec![(1, 0.5), (0, 0.1)]);
        assert!(top_k(&[], 3).is_empty());
    }
}
