//! The in-memory store of the rate limiter's TATs (the default; see
//! `redis_store` for the shared one).

use super::gcra::{self, Decision, Quota};
use std::sync::Mutex;

const SHARDS: usize = 64;

/// In-memory TATs: 64 shards of `key hash → TAT`, each behind its own lock,
/// each holding at most `capacity / 64` keys. A full shard drops the keys
/// whose bucket is whole again (TAT passed: the same as absent), then, under
/// a flood of new keys, those closest to whole, a quarter of the shard at a
/// time.
pub(super) struct Memory {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

/// Keys are already keyed SipHash values: the map uses them as they are.
type Shard = std::collections::HashMap<u64, u64, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (u64 keys); fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Memory {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (capacity / SHARDS).max(1),
        }
    }

    pub(super) fn decide(&self, hash: u64, quota: &Quota, now: u64) -> Decision {
        // Middle bits pick the shard: the map itself uses the low bits
        // (bucket) and the top bits (tags).
        let shard = &self.shards[((hash >> 32) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = map.get(&hash).copied();
        let (decision, new_tat) = gcra::decide(quota, tat, now);
        if tat.is_none() && map.len() >= self.per_shard {
            // Make room for a quarter of the shard at once (amortised O(1)
            // per new key under a flood): first the keys whose bucket is
            // whole again, then those closest to whole.
            map.retain(|_, t| *t > now);
            let target = self.per_shard - self.per_shard / 4 - 1;
            if map.len() > target {
                let mut tats: Vec<(u64, u64)> = map.iter().map(|(k, t)| (*t, *k)).collect();
                let cut = map.len() - target;
                tats.select_nth_unstable(cut - 1);
                for (_, k) in &tats[..cut] {
                    map.remove(k);
                }
            }
        }
        if decision.allowed {
            map.insert(hash, new_tat);
        }
        decision
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }
}
