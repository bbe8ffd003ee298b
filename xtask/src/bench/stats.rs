//! Percentiles over measured durations. Pure; no I/O.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of `sorted`, which must be sorted ascending.
/// Returns `None` for an empty slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The figures a benchmark reports for one series of timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (any order). `None` when there are no samples.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Summary {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Milliseconds with microsecond resolution, for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = ms_list(&(1..=100).collect::<Vec<_>>());
        for (p, expected) in [
            (0.0, 1),
            (1.0, 1),
            (50.0, 50),
            (99.0, 99),
            (99.5, 100),
            (100.0, 100),
        ] {
            assert_eq!(
                percentile(&sorted, p),
                Some(Duration::from_millis(expected)),
                "p{p}"
            );
        }
    }

    #[test]
    fn small_series() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms_list(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        // Nearest rank on an even count takes the lower middle.
        let four = ms_list(&[1, 2, 3, 4]);
        assert_eq!(percentile(&four, 50.0), Some(Duration::from_millis(2)));
        assert_eq!(percentile(&four, 99.0), Some(Duration::from_millis(4)));
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&ms_list(&[30, 10, 20, 40, 50])).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_millis(30));
        assert_eq!(s.p99, Duration::from_millis(50));
        assert_eq!(s.max, Duration::from_millis(50));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn ms_rounds_to_microseconds() {
        assert_eq!(ms(Duration::from_nanos(1_234_567)), 1.235);
    }
}
