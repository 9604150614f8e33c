//! bench::histogram: latency percentiles in fixed memory. A log-linear histogram (the HDR
//! histogram's layout): values below 2^SUB_BITS are counted exactly, larger ones in buckets
//! 2^(SUB_BITS-1) per power of two, so a reported percentile is within 1/128 (0.8%) of a recorded
//! value. Recording a million latencies costs no memory beyond the 7,424 counters.

/// Sub-bucket bits: values below 256 are exact; relative error at most 2^-(SUB_BITS-1).
const SUB_BITS: u32 = 8;
const SUB_HALF: u64 = 1 << (SUB_BITS - 1);
/// Buckets covering all of u64: exponent 0..=64-SUB_BITS, each with SUB_HALF mantissas, plus the
/// exact low range.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize + 1) * SUB_HALF as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

/// Bucket index of `v`: exact below 2^SUB_BITS, else (exponent, top SUB_BITS bits).
fn index(v: u64) -> usize {
    let msb = 63 - (v | 1).leading_zeros();
    if msb < SUB_BITS {
        return v as usize;
    }
    let exp = msb - (SUB_BITS - 1);
    let mantissa = v >> exp; // in [SUB_HALF, 2 * SUB_HALF)
    (u64::from(exp) * SUB_HALF + mantissa) as usize
}

/// Largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB_HALF {
        return i;
    }
    let exp = i / SUB_HALF - 1;
    let mantissa = i - exp * SUB_HALF;
    ((mantissa + 1) << exp).wrapping_sub(1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `n` observations of `v` (a batch's records share one ack).
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[index(v)] += n;
        self.count += n;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the top of the bucket holding the ceil(q·count)-th
    /// smallest observation, clamped to [min, max], so p50 <= p99 <= max always holds. 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        // Every bucket's top + 1 starts the next bucket, so no value falls between buckets.
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(upper(i)), i, "bucket {i}");
            assert_eq!(index(upper(i) + 1), i + 1, "after bucket {i}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(upper(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn small_values_are_exact_and_large_ones_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=100u64 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 37);
        }
        for (q, exact) in [
            (0.5, 50_000 * 37),
            (0.99, 99_000 * 37),
            (0.999, 99_900 * 37),
        ] {
            let got = h.quantile(q) as f64;
            let err = (got - exact as f64).abs() / exact as f64;
            assert!(err < 1.0 / 128.0, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 100_000 * 37);
    }

    #[test]
    fn quantiles_are_ordered_and_merge_adds() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        a.record_n(1_000, 990);
        b.record_n(5_000_000, 9);
        b.record(123_456_789);
        a.merge(&b);
        assert_eq!(a.count(), 1_000);
        let (p50, p99, p999) = (a.quantile(0.5), a.quantile(0.99), a.quantile(0.999));
        // 1,000 lands in the bucket [1000, 1003]; its top is reported.
        assert!((1_000..=1_003).contains(&p50), "{p50}");
        assert_eq!(p99, p50);
        assert!(
            (4_960_000..=5_000_000 * 129 / 128).contains(&p999),
            "{p999}"
        );
        assert_eq!(a.max(), 123_456_789);
        assert!(p50 <= p99 && p99 <= p999 && p999 <= a.max());
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }
}
