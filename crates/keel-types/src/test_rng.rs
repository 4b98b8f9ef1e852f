//! The seeded random numbers of Keel's tests (every crate's): a 64-bit linear congruential
//! generator whose seed is printed, so that any failure can be replayed. Here, in the crate every
//! other one depends on, so that no crate keeps a copy of its own.
//!
//! Invariant: the same seed gives the same numbers on every platform.

/// A linear congruential generator (Knuth's MMIX constants), high bits out.
pub struct Lcg {
    x: u64,
    seed: u64,
}

impl Lcg {
    /// A generator with a fixed seed, printed under `name`.
    pub fn fixed(name: &str, seed: u64) -> Lcg {
        println!("{name}: seed {seed}");
        Lcg { x: seed, seed }
    }

    /// A generator seeded from `KEEL_TEST_SEED`, or from the clock when it is not set.
    pub fn seeded(name: &str) -> Lcg {
        let seed = std::env::var("KEEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("{name}: seed {seed} (set KEEL_TEST_SEED to replay)");
        Lcg { x: seed, seed }
    }

    /// The seed it started from (for failure messages).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 31 random bits.
    pub fn bits(&mut self) -> u64 {
        self.x = self.x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.x >> 33
    }

    /// A number below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }
}
