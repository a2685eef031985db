//! Operator metrics kept by the core: counters and log2-bucket latency histograms, reported in
//! the status response.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const BUCKETS: usize = 40;

/// A latency histogram with power-of-two microsecond buckets (bucket i holds [2^i, 2^(i+1)) us).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Upper bound (us) of the bucket holding quantile `q` (0..=1); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (1u64 << i).min(self.max_us.max(1));
            }
        }
        self.max_us
    }

    /// Cumulative counts per bucket as (upper bound in seconds, observations at or below it),
    /// up to the bucket holding the largest observation: a Prometheus histogram's buckets.
    pub fn cumulative_seconds(&self) -> Vec<(f64, u64)> {
        let last = (64 - self.max_us.leading_zeros() as usize).min(BUCKETS - 1);
        let mut seen = 0;
        (0..=last)
            .map(|i| {
                seen += self.buckets[i];
                ((1u64 << i) as f64 / 1e6, seen)
            })
            .collect()
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            mean_us: self.sum_us.checked_div(self.count).unwrap_or(0),
            p50_us: self.quantile_us(0.5),
            p99_us: self.quantile_us(0.99),
            max_us: self.max_us,
        }
    }
}

/// A histogram in a few numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What the core counts while it runs (lost on restart; State's counters are not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub commands: u64,
    pub commands_refused: u64,
    pub batches: u64,
    pub events_appended: u64,
    pub snapshots_written: u64,
    /// Batches that started from a full copy of State (a reader held the previous one, or the
    /// last batch failed); should stay rare.
    pub state_copies: u64,
    /// Batches that reused the previous State and applied one batch of events to it.
    pub states_reused: u64,
    pub append: Histogram,
    /// From a compose's intent being durable to its outcome being durable.
    pub compose: Histogram,
    pub decompose: Histogram,
    /// From a failover's intent being durable to its outcome being durable.
    pub failover: Histogram,
    /// Time to recover: from the host seeing the fault (the alarm's time, the host's clock) to
    /// the failover that answers it completing.
    pub recovery: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_millis(50));
        let s = h.summary();
        assert_eq!(s.count, 101);
        assert!(s.p50_us >= 32 && s.p50_us <= 64, "{s:?}");
        assert!(s.p99_us >= 64 && s.p99_us <= 128, "{s:?}");
        assert_eq!(s.max_us, 50_000);
        assert_eq!(Histogram::default().quantile_us(0.99), 0);
    }
}
