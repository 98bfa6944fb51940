//! Latency samples of one variant: exact percentiles and log-spaced histogram bins for the page's charts.
//!
//! The page keeps every sample until its histograms are reset (a few thousand at most: a burst is at
//! most [`crate::burst::MAX_REQUESTS`] requests), so the percentiles are exact: the nearest-rank
//! definition, the one HDR histograms report.

/// Bins per factor of ten on the histograms' logarithmic time axis.
pub const BINS_PER_DECADE: u32 = 10;

/// Latency samples in milliseconds, kept sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySamples {
    sorted: Vec<f64>,
}

/// One bar of a histogram: samples `lo ≤ x < hi` (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
}

impl LatencySamples {
    /// Records one latency; non-finite or negative values are not latencies and are ignored.
    pub fn push(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let at = self.sorted.partition_point(|&x| x <= ms);
        self.sorted.insert(at, ms);
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The `q`-quantile (0 < q ≤ 1) by nearest rank: the smallest sample with at least a fraction `q`
    /// of the samples at or below it. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }

    /// Every sample (ms), in ascending order.
    pub fn sorted(&self) -> &[f64] {
        &self.sorted
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted.first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted.last().copied()
    }

    /// Histogram bins on a logarithmic axis, [`BINS_PER_DECADE`] per decade, with edges at
    /// 10^(k/BINS_PER_DECADE) ms so that charts of different variants share edges. Covers the samples'
    /// range, at least two bins; empty without samples. Samples below 1 µs count in the first bin.
    pub fn log_bins(&self) -> Vec<Bin> {
        let (Some(min), Some(max)) = (self.min(), self.max()) else {
            return Vec::new();
        };
        let per = f64::from(BINS_PER_DECADE);
        let index = |ms: f64| (ms.max(1e-3).log10() * per).floor() as i64;
        let edge = |k: i64| 10f64.powf(k as f64 / per);
        let first = index(min);
        let last = index(max).max(first + 1);
        let mut bins: Vec<Bin> = (first..=last)
            .map(|k| Bin {
                lo: edge(k),
                hi: edge(k + 1),
                count: 0,
            })
            .collect();
        for &x in &self.sorted {
            // Floating-point edges: place by comparison, so that lo ≤ x < hi holds exactly.
            let mut i = (index(x) - first).clamp(0, bins.len() as i64 - 1) as usize;
            while i > 0 && x < bins[i].lo {
                i -= 1;
            }
            while i + 1 < bins.len() && x >= bins[i].hi {
                i += 1;
            }
            bins[i].count += 1;
        }
        bins
    }
}

/// A time for people: `0.42 ms`, `12.3 ms`, `1.25 s`.
pub fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, widely spread latencies (0.05 ms to ~4 s), like a fast and a slow variant mixed.
    fn spread(n: usize) -> Vec<f64> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                0.05 * 10f64.powf(4.9 * u)
            })
            .collect()
    }

    fn filled(values: &[f64]) -> LatencySamples {
        let mut s = LatencySamples::default();
        for &v in values {
            s.push(v);
        }
        s
    }

    #[test]
    fn quantiles_match_an_hdr_histogram() {
        let values = spread(5000);
        let stats = filled(&values);
        // Reference: the hdrhistogram crate on microseconds at 3 significant digits.
        let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &v in &values {
            hdr.record((v * 1000.0).round() as u64).unwrap();
        }
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let ours = stats.quantile(q).unwrap() * 1000.0;
            let reference = hdr.value_at_quantile(q) as f64;
            let rel = (ours - reference).abs() / reference;
            assert!(
                rel < 2e-3,
                "q={q}: ours {ours:.1} µs, hdrhistogram {reference:.1} µs"
            );
        }
    }

    #[test]
    fn quantiles_follow_the_nearest_rank_definition() {
        let stats = filled(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(stats.quantile(0.5), Some(3.0));
        assert_eq!(stats.quantile(0.2), Some(1.0));
        assert_eq!(stats.quantile(0.21), Some(2.0));
        assert_eq!(stats.quantile(0.99), Some(5.0));
        assert_eq!(stats.quantile(0.0), Some(1.0));
        assert_eq!(filled(&[7.5]).quantile(0.9), Some(7.5));
        assert_eq!(LatencySamples::default().quantile(0.5), None);
        // Not latencies: ignored.
        assert_eq!(filled(&[f64::NAN, -1.0, f64::INFINITY]).len(), 0);
        assert_eq!(stats.len(), 5);
    }

    #[test]
    fn log_bins_hold_every_sample_once_within_their_edges() {
        let values = spread(3000);
        let stats = filled(&values);
        let bins = stats.log_bins();
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), values.len());
        for pair in bins.windows(2) {
            assert!((pair[0].hi - pair[1].lo).abs() < 1e-12 * pair[1].lo);
        }
        for b in &bins {
            assert!((b.hi / b.lo - 10f64.powf(0.1)).abs() < 1e-9, "{b:?}");
            // Reference count by brute force.
            let expected = values.iter().filter(|&&x| x >= b.lo && x < b.hi).count();
            assert_eq!(b.count, expected, "{b:?}");
        }
        // 0.05 ms .. 4 s spans about 5 decades: about 50 bins, not thousands.
        assert!((48..=52).contains(&bins.len()), "{} bins", bins.len());
    }

    #[test]
    fn log_bins_on_exact_edges_and_single_values() {
        let stats = filled(&[1.0, 10.0, 10.0, 100.0]);
        let bins = stats.log_bins();
        let at = |x: f64| bins.iter().find(|b| x >= b.lo && x < b.hi).unwrap().count;
        assert_eq!(at(1.0), 1);
        assert_eq!(at(10.0), 2);
        assert_eq!(at(100.0), 1);
        let one = filled(&[3.0]).log_bins();
        assert_eq!(one.len(), 2);
        assert_eq!(one.iter().map(|b| b.count).sum::<usize>(), 1);
        assert!(LatencySamples::default().log_bins().is_empty());
    }

    #[test]
    fn times_read_well() {
        assert_eq!(format_ms(0.4249), "0.42 ms");
        assert_eq!(format_ms(12.34), "12.3 ms");
        assert_eq!(format_ms(1250.0), "1.25 s");
    }
}
