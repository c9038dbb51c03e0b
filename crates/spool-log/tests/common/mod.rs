//! What the kill -9 tests share: a seeded random source, so a failing
//! round can be replayed from the seed it prints.

use std::time::SystemTime;

/// xorshift64: enough for choosing sizes and crash points.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A seed from the clock (never 0, which xorshift cannot leave).
pub fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos | 1
}
