//! Probe-guided chaos (`chaos --guided`): keep the drawn scenarios whose runs reached rare
//! corners of the stack, and spend half the runs on children of them ([`mutate`]: the
//! parent's cluster with a new seed, more frequent faults, new nemesis weights or a new
//! workload), as coverage-guided fuzzers keep inputs that reach new edges. The other half
//! draws fresh scenarios, as plain chaos does, so the search never narrows to what it found
//! first.
//!
//! A parent's weight is how rare the rarest corner it reached is now (one over the runs that
//! reached it), so a parent loses its pull as its corners become common. Every choice comes
//! from an RNG seeded with the session's first seed and from the runs' results in their
//! order, so a session with the same seeds and jobs makes the same choices.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::coverage::Coverage;
use crate::coverage::Corner;
use crate::scenario::generate::{self, mutate, Drawn};

/// A corner reached by at most this share of the runs so far is rare.
const RARE_SHARE: f64 = 0.02;

/// A run kept as a parent.
struct Parent {
    seed: u64,
    drawn: Drawn,
    corners: Vec<Corner>,
}

/// The guide of one chaos session.
pub struct Guide {
    rng: StdRng,
    coverage: Coverage,
    parents: Vec<Parent>,
}

impl Guide {
    /// A guide for a session starting at `start_seed`.
    pub fn new(start_seed: u64) -> Guide {
        Guide {
            rng: StdRng::seed_from_u64(start_seed ^ 0x6775_6964_6564),
            coverage: Coverage::default(),
            parents: Vec::new(),
        }
    }

    /// The scenario for the run with `seed`: a fresh draw, or every other time (once there
    /// are parents) a child of a parent picked by weight. Returns the parent's seed too.
    pub fn draw(&mut self, seed: u64) -> (Drawn, Option<u64>) {
        if self.parents.is_empty() || self.rng.gen_bool(0.5) {
            return (generate::chaos(seed), None);
        }
        let weights: Vec<f64> = self.parents.iter().map(|p| self.pull(p)).collect();
        let total: f64 = weights.iter().sum();
        let mut x = self.rng.gen_range(0.0..total.max(f64::MIN_POSITIVE));
        let mut pick = self.parents.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                pick = i;
                break;
            }
            x -= w;
        }
        let p = &self.parents[pick];
        (mutate(&p.drawn, p.seed, seed), Some(p.seed))
    }

    /// One over the runs that reached the rarest corner `p` reached.
    fn pull(&self, p: &Parent) -> f64 {
        p.corners
            .iter()
            .map(|c| 1.0 / self.coverage.hits(*c).max(1) as f64)
            .fold(0.0, f64::max)
    }

    /// Takes in a finished run: its scenario, seed and the corners it reached. It becomes a
    /// parent if it reached a corner rare before it.
    pub fn learn(&mut self, drawn: Drawn, seed: u64, corners: &[Corner]) {
        let rare_at = (self.coverage.runs() as f64 * RARE_SHARE).max(1.0) as u64;
        let rare = corners.iter().any(|c| self.coverage.hits(*c) < rare_at);
        self.coverage.add(&drawn.scenario.name, seed, corners);
        if rare {
            self.parents.push(Parent {
                seed,
                drawn,
                corners: corners.to_vec(),
            });
        }
    }

    /// Runs kept as parents.
    pub fn parents(&self) -> usize {
        self.parents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_that_reach_rare_corners_become_parents_of_half_the_draws() {
        let mut g = Guide::new(0);
        // Nothing learnt: every draw is fresh.
        let (d, parent) = g.draw(1);
        assert_eq!((d.scenario.name.as_str(), parent), ("chaos-1", None));
        g.learn(d, 1, &[Corner::RaftPurge]);
        assert_eq!(g.parents(), 1, "the first run reaches what nobody had");
        // A run reaching only what is common now is not kept.
        for seed in 2..60 {
            g.learn(generate::chaos(seed), seed, &[Corner::RaftPurge]);
        }
        assert_eq!(g.parents(), 1);
        let rare = generate::chaos(60);
        g.learn(rare, 60, &[Corner::RaftPurge, Corner::MstExchangeCapped]);
        assert_eq!(g.parents(), 2);
        // About half the draws are children, mostly of the parent with the rare corner.
        let mut children = [0u32; 2];
        let mut fresh = 0;
        for seed in 100..300 {
            match g.draw(seed).1 {
                Some(1) => children[0] += 1,
                Some(60) => children[1] += 1,
                Some(p) => panic!("unknown parent {p}"),
                None => fresh += 1,
            }
        }
        assert!((70..130).contains(&fresh), "{fresh} fresh of 200");
        assert!(children[1] > 5 * children[0], "{children:?}");
        // The same session start makes the same choices.
        let mut a = Guide::new(7);
        let mut b = Guide::new(7);
        for g in [&mut a, &mut b] {
            g.learn(generate::chaos(1), 1, &[Corner::RaftPurge]);
        }
        let picks = |g: &mut Guide| (0..20).map(|s| g.draw(s).1).collect::<Vec<_>>();
        assert_eq!(picks(&mut a), picks(&mut b));
    }
}
