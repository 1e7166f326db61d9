//! What the node benchmarks share: percentiles of a sample, printed on one line.

/// The `p` quantile (0 … 1) of `v`, nearest rank; sorts `v`.
pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints `name`, the sample's size, and its p50, p90 and max in ms.
pub(crate) fn report(name: &str, mut v: Vec<f64>) {
    println!(
        "{name:<40} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  max {:>8.2} ms",
        v.len(),
        pct(&mut v, 0.5),
        pct(&mut v, 0.9),
        pct(&mut v, 1.0)
    );
}
