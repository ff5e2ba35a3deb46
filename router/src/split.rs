//! Weighted traffic split and mirror sampling.
//!
//! A split is a shuffled schedule with one slot per weight point (100 slots for percents) that
//! requests walk through with an atomic counter. Compared with drawing a random number per request
//! this is exact — every 100 consecutive requests match the weights, so small samples and tests do
//! not see random drift — and it is lock-free. The shuffle keeps the order unrelated to the
//! clients' own patterns: a plain round robin would send every other request of a client that
//! alternates small and large inputs to the same deployment.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use rand::seq::SliceRandom;

/// Picks among choices (indices) in proportion to integer weights.
#[derive(Debug)]
pub struct WeightedSplit {
    slots: Box<[usize]>,
    next: AtomicUsize,
}

impl WeightedSplit {
    /// A split over `(choice, weight)` pairs, shuffled with `rng`. `None` when every weight is zero:
    /// there is nothing to pick.
    pub fn new(weights: &[(usize, u32)], rng: &mut impl Rng) -> Option<Self> {
        let mut slots: Vec<usize> =
            weights.iter().flat_map(|&(choice, weight)| std::iter::repeat_n(choice, weight as usize)).collect();
        if slots.is_empty() {
            return None;
        }
        slots.shuffle(rng);
        Some(Self { slots: slots.into_boxed_slice(), next: AtomicUsize::new(0) })
    }

    /// The next choice of the schedule.
    pub fn pick(&self) -> usize {
        // Relaxed: the counter only has to hand out distinct positions; it orders nothing else.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.slots[n % self.slots.len()]
    }
}

/// Says yes to a given percent of calls, with the same exactness as [`WeightedSplit`].
#[derive(Debug)]
pub struct Sampler(Option<WeightedSplit>);

impl Sampler {
    /// A sampler that says yes `percent` times in 100 (clamped to 100).
    pub fn new(percent: u32, rng: &mut impl Rng) -> Self {
        let yes = percent.min(100);
        Self(WeightedSplit::new(&[(1, yes), (0, 100 - yes)], rng))
    }

    /// Whether this call is sampled.
    pub fn sample(&self) -> bool {
        self.0.as_ref().is_some_and(|split| split.pick() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn counts(split: &WeightedSplit, n: usize, choices: usize) -> Vec<usize> {
        let mut counts = vec![0; choices];
        for _ in 0..n {
            counts[split.pick()] += 1;
        }
        counts
    }

    #[test]
    fn every_hundred_picks_match_the_weights() {
        let mut rng = StdRng::seed_from_u64(7);
        let split = WeightedSplit::new(&[(0, 70), (1, 20), (2, 10)], &mut rng).unwrap();
        assert_eq!(counts(&split, 100, 3), [70, 20, 10]);
        assert_eq!(counts(&split, 2_000, 3), [1_400, 400, 200]);
        // Any window of 100 consecutive picks, not only aligned ones.
        let _ = counts(&split, 37, 3);
        assert_eq!(counts(&split, 100, 3), [70, 20, 10]);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let mut rng = StdRng::seed_from_u64(1);
        let split = WeightedSplit::new(&[(0, 0), (1, 100), (2, 0)], &mut rng).unwrap();
        assert_eq!(counts(&split, 1_000, 3), [0, 1_000, 0]);
        assert!(WeightedSplit::new(&[(0, 0), (1, 0)], &mut rng).is_none());
        assert!(WeightedSplit::new(&[], &mut rng).is_none());
    }

    #[test]
    fn order_is_shuffled() {
        let mut rng = StdRng::seed_from_u64(3);
        let split = WeightedSplit::new(&[(0, 50), (1, 50)], &mut rng).unwrap();
        let first: Vec<usize> = (0..100).map(|_| split.pick()).collect();
        let alternating: Vec<usize> = (0..100).map(|i| i % 2).collect();
        let blocks: Vec<usize> = (0..100).map(|i| i / 50).collect();
        assert_ne!(first, alternating);
        assert_ne!(first, blocks);
    }

    #[test]
    fn picks_are_exact_under_concurrency() {
        let mut rng = StdRng::seed_from_u64(5);
        let split = WeightedSplit::new(&[(0, 30), (1, 70)], &mut rng).unwrap();
        let ones = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if split.pick() == 1 {
                            ones.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ones.load(Ordering::Relaxed), 1_400);
    }

    #[test]
    fn sampler_matches_percent() {
        let mut rng = StdRng::seed_from_u64(9);
        for percent in [0, 1, 25, 50, 100, 250] {
            let sampler = Sampler::new(percent, &mut rng);
            let yes = (0..1_000).filter(|_| sampler.sample()).count();
            assert_eq!(yes, 10 * percent.min(100) as usize, "percent {percent}");
        }
    }
}
