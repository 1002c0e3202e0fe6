//! The forwarding database (Linux's name for the MAC learning table).
//!
//! Layout: a fixed array of 8-way set-associative buckets, 128 bytes each (eight packed keys in
//! one cache line, their last-seen times in the next), allocated once at construction. A MAC
//! hashes to exactly one bucket, so a lookup reads at most two adjacent cache lines and never
//! follows a chain; nothing allocates after construction.
//!
//! - **Key word**: the 48-bit MAC in bits 0..48, the port in bits 48..63, bit 63 marks a static
//!   entry; 0 is an empty slot (the all-zero MAC is never learned: it is not a valid source).
//! - **Hash**: multiply-shift with a random odd multiplier chosen per table, so a guest cannot
//!   aim MACs at one bucket to evict another guest's entries without knowing the multiplier.
//! - **Ageing**: each entry keeps the caller's `now` of the batch that last saw it. An entry
//!   older than the ageing time is ignored by lookups at once (a lookup is never wrong about
//!   age) and its slot is reclaimed by the next learn into its bucket or by [`Fdb::sweep`].
//! - **Eviction when full**: a new MAC whose bucket has no free or expired slot replaces the
//!   bucket's least recently seen dynamic entry (LRU within the set, as hardware CAMs do).
//!   Static entries are never evicted or aged; a bucket of only static entries refuses to learn.
//! - **Moves**: a known MAC seen on another port is re-pointed in place and counted.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::frame::{MAC_MASK, MacAddr};
use crate::port::PortId;

/// Slots per bucket.
pub const WAYS: usize = 8;
const STATIC_BIT: u64 = 1 << 63;
const PORT_SHIFT: u32 = 48;
/// Ports are 15 bits in the key word.
pub(crate) const MAX_PORT_ID: u16 = 0x7fff;
const STATIC_SEEN: u64 = u64::MAX;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    keys: [u64; WAYS],
    seen: [u64; WAYS],
}

const EMPTY: Bucket = Bucket {
    keys: [0; WAYS],
    seen: [0; WAYS],
};

#[inline(always)]
fn key_port(w: u64) -> u16 {
    ((w >> PORT_SHIFT) & MAX_PORT_ID as u64) as u16
}

#[inline(always)]
fn make_key(mac: u64, port: u16) -> u64 {
    mac | ((port as u64) << PORT_SHIFT)
}

/// What [`Fdb::learn`] did with a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; its time was refreshed.
    Refreshed,
    /// A new entry (into a free slot or one whose entry had expired).
    New,
    /// The MAC was known on `from` and now points at the new port.
    Moved {
        /// The port the MAC was on before.
        from: PortId,
    },
    /// A new entry that displaced a live entry of the full bucket (LRU).
    Evicted {
        /// The port of the displaced entry.
        victim_port: PortId,
    },
    /// A static entry names another port: the table was not changed.
    StaticConflict,
    /// The bucket holds only static entries: nothing was learned.
    Full,
    /// The port already holds its limit of learned entries: nothing was learned or moved.
    LimitReached,
}

/// Table-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FdbStats {
    /// Slots in the table (fixed at construction).
    pub capacity: usize,
    /// Slots holding an entry, expired or not (expired ones are reclaimed lazily).
    pub occupied: usize,
    /// New entries learned (static ones included). At any time
    /// `occupied == learned - evictions - expired - flushed`.
    pub learned: u64,
    /// MACs that moved to another port.
    pub moves: u64,
    /// Live entries displaced because their bucket was full.
    pub evictions: u64,
    /// Expired entries removed or reused.
    pub expired: u64,
    /// Entries removed because their port was removed or by an explicit flush.
    pub flushed: u64,
    /// Learns refused (bucket of static entries, a static entry on another port, or the
    /// port's limit of learned entries reached).
    pub refused: u64,
}

/// One entry as [`Fdb::entries`] reports it (like `bridge fdb show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The address.
    pub mac: MacAddr,
    /// The port it was learned on (or pinned to).
    pub port: PortId,
    /// Pinned by the control plane; never ages or moves.
    pub is_static: bool,
    /// Time since last seen (dynamic entries only).
    pub age: Option<Duration>,
}

/// The MAC learning table. See the module docs for layout and policies.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    shift: u32,
    mul: u64,
    ageing_ns: u64,
    sweep_cursor: usize,
    stats: FdbStats,
    /// Learned (dynamic) entries held per port, expired ones included until reclaimed.
    dyn_count: Vec<u32>,
    /// Most learned entries per port (`u32::MAX`: no limit).
    limit: Vec<u32>,
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("buckets", &self.buckets.len())
            .field("ageing_ns", &self.ageing_ns)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Fdb {
    /// A table with room for at least `capacity` entries (rounded up to a power-of-two number
    /// of 8-way buckets, at least two), entries ageing out after `ageing`, and the hash
    /// multiplier derived from `seed` (random when `None`).
    pub fn new(capacity: usize, ageing: Duration, seed: Option<u64>) -> Self {
        let nbuckets = capacity.div_ceil(WAYS).next_power_of_two().max(2);
        let seed = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        // Any odd multiplier gives a valid multiply-shift hash; mixing the seed first keeps a
        // small seed (tests use 1, 2, ...) from giving a weak multiplier.
        let mul = (seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1;
        Self {
            buckets: vec![EMPTY; nbuckets].into_boxed_slice(),
            shift: 64 - nbuckets.trailing_zeros(),
            mul,
            ageing_ns: u64::try_from(ageing.as_nanos()).unwrap_or(u64::MAX),
            sweep_cursor: 0,
            dyn_count: Vec::new(),
            limit: Vec::new(),
            stats: FdbStats {
                capacity: nbuckets * WAYS,
                ..FdbStats::default()
            },
        }
    }

    #[inline(always)]
    fn bucket_of(&self, mac: u64) -> usize {
        (mac.wrapping_mul(self.mul) >> self.shift) as usize
    }

    #[inline(always)]
    fn expired(&self, seen: u64, now: u64) -> bool {
        // A clock that went backwards (now < seen) counts as fresh rather than ancient.
        seen != STATIC_SEEN && now.saturating_sub(seen) > self.ageing_ns
    }

    fn count_mut(&mut self, port: u16) -> &mut u32 {
        let i = port as usize;
        if self.dyn_count.len() <= i {
            self.dyn_count.resize(i + 1, 0);
        }
        &mut self.dyn_count[i]
    }

    fn at_limit(&self, port: u16) -> bool {
        let i = port as usize;
        let limit = self.limit.get(i).copied().unwrap_or(u32::MAX);
        self.dyn_count.get(i).copied().unwrap_or(0) >= limit
    }

    /// Caps how many learned entries `port` may hold (`None`: no cap). Static entries do not
    /// count. Entries that expired count until reclaimed by a learn into their bucket or a
    /// sweep ([`Fdb::sweep`]; [`crate::Bridge::age`] forces a full one).
    pub fn set_port_limit(&mut self, port: PortId, limit: Option<u32>) {
        let i = port.index();
        if self.limit.len() <= i {
            self.limit.resize(i + 1, u32::MAX);
        }
        self.limit[i] = limit.unwrap_or(u32::MAX);
    }

    /// Learned entries `port` holds now (expired ones included until reclaimed).
    pub fn port_entries(&self, port: PortId) -> u32 {
        self.dyn_count.get(port.index()).copied().unwrap_or(0)
    }

    /// The port a live entry for `mac` (packed, see [`MacAddr::to_u64`]) points at.
    #[inline(always)]
    pub fn lookup(&self, mac: u64, now: u64) -> Option<PortId> {
        let b = &self.buckets[self.bucket_of(mac)];
        for i in 0..WAYS {
            let w = b.keys[i];
            if w & MAC_MASK == mac && w != 0 {
                return (!self.expired(b.seen[i], now)).then_some(PortId(key_port(w)));
            }
        }
        None
    }

    /// Learns that `mac` (a valid unicast source, packed) was seen on `port` at `now`.
    #[inline(always)]
    pub fn learn(&mut self, mac: u64, port: PortId, now: u64) -> Learned {
        let bi = self.bucket_of(mac);
        let ageing_ns = self.ageing_ns;
        let b = &mut self.buckets[bi];
        for i in 0..WAYS {
            let w = b.keys[i];
            if w & MAC_MASK == mac && w != 0 {
                if w & STATIC_BIT != 0 {
                    if key_port(w) == port.0 {
                        return Learned::Refreshed;
                    }
                    self.stats.refused += 1;
                    return Learned::StaticConflict;
                }
                let was_expired = now.saturating_sub(b.seen[i]) > ageing_ns;
                let from = key_port(w);
                if from == port.0 {
                    // One store per MAC per batch: `now` is constant within a batch.
                    if b.seen[i] != now {
                        b.seen[i] = now;
                    }
                    if was_expired {
                        self.stats.expired += 1;
                        self.stats.learned += 1;
                        return Learned::New;
                    }
                    return Learned::Refreshed;
                }
                return self.move_entry(bi, i, mac, PortId(from), port, now, was_expired);
            }
        }
        self.insert_miss(bi, mac, port, now)
    }

    /// A known MAC appeared on another port: re-point it, within the new port's limit.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn move_entry(
        &mut self,
        bi: usize,
        i: usize,
        mac: u64,
        from: PortId,
        port: PortId,
        now: u64,
        was_expired: bool,
    ) -> Learned {
        if self.at_limit(port.0) {
            self.stats.refused += 1;
            return Learned::LimitReached;
        }
        *self.count_mut(from.0) -= 1;
        *self.count_mut(port.0) += 1;
        let b = &mut self.buckets[bi];
        b.seen[i] = now;
        b.keys[i] = make_key(mac, port.0);
        if was_expired {
            self.stats.expired += 1;
            self.stats.learned += 1;
            return Learned::New;
        }
        self.stats.moves += 1;
        Learned::Moved { from }
    }

    #[cold]
    fn insert_miss(&mut self, bi: usize, mac: u64, port: PortId, now: u64) -> Learned {
        if self.at_limit(port.0) {
            self.stats.refused += 1;
            return Learned::LimitReached;
        }
        let b = &self.buckets[bi];
        // Prefer a free slot; otherwise the least recently seen dynamic entry, which is an
        // expired one whenever the bucket holds any.
        let mut victim = None;
        let mut oldest = u64::MAX;
        for i in 0..WAYS {
            if b.keys[i] == 0 {
                victim = Some(i);
                break;
            }
            if b.keys[i] & STATIC_BIT == 0 && b.seen[i] < oldest {
                victim = Some(i);
                oldest = b.seen[i];
            }
        }
        let Some(i) = victim else {
            self.stats.refused += 1;
            return Learned::Full;
        };
        let old = b.keys[i];
        let old_seen = b.seen[i];
        if old != 0 {
            // The victim is dynamic: static entries are never chosen.
            *self.count_mut(key_port(old)) -= 1;
        }
        *self.count_mut(port.0) += 1;
        let outcome = if old == 0 {
            self.stats.occupied += 1;
            Learned::New
        } else if self.expired(old_seen, now) {
            self.stats.expired += 1;
            Learned::New
        } else {
            self.stats.evictions += 1;
            Learned::Evicted {
                victim_port: PortId(key_port(old)),
            }
        };
        self.stats.learned += 1;
        let b = &mut self.buckets[bi];
        b.keys[i] = make_key(mac, port.0);
        b.seen[i] = now;
        outcome
    }

    /// Pins `mac` to `port`: the entry never ages, moves or gets evicted. Replaces a dynamic
    /// entry for the same MAC. Returns false when the bucket has no non-static slot left.
    pub fn add_static(&mut self, mac: MacAddr, port: PortId) -> bool {
        let key = mac.to_u64();
        self.remove(mac);
        let b = &mut self.buckets[(key.wrapping_mul(self.mul) >> self.shift) as usize];
        // Free slot first, else the least recently seen dynamic entry.
        let slot = (0..WAYS).find(|&i| b.keys[i] == 0).or_else(|| {
            (0..WAYS)
                .filter(|&i| b.keys[i] & STATIC_BIT == 0)
                .min_by_key(|&i| b.seen[i])
        });
        let Some(i) = slot else { return false };
        let old = b.keys[i];
        b.keys[i] = make_key(key, port.0) | STATIC_BIT;
        b.seen[i] = STATIC_SEEN;
        if old == 0 {
            self.stats.occupied += 1;
        } else {
            self.stats.evictions += 1;
            *self.count_mut(key_port(old)) -= 1;
        }
        self.stats.learned += 1;
        true
    }

    /// Removes the entry for `mac`, static or dynamic. Returns whether one existed.
    pub fn remove(&mut self, mac: MacAddr) -> bool {
        let key = mac.to_u64();
        let bi = self.bucket_of(key);
        let b = &mut self.buckets[bi];
        for i in 0..WAYS {
            let w = b.keys[i];
            if w != 0 && w & MAC_MASK == key {
                b.keys[i] = 0;
                b.seen[i] = 0;
                if w & STATIC_BIT == 0 {
                    *self.count_mut(key_port(w)) -= 1;
                }
                self.stats.occupied -= 1;
                self.stats.flushed += 1;
                return true;
            }
        }
        false
    }

    /// Removes every entry pointing at `port` (static ones too when `include_static`).
    /// Scans the whole table: control path only.
    pub fn flush_port(&mut self, port: PortId, include_static: bool) -> usize {
        let mut n = 0;
        for b in self.buckets.iter_mut() {
            for i in 0..WAYS {
                let w = b.keys[i];
                if w != 0 && key_port(w) == port.0 && (include_static || w & STATIC_BIT == 0) {
                    b.keys[i] = 0;
                    b.seen[i] = 0;
                    n += 1;
                }
            }
        }
        // Every learned entry of the port is gone.
        *self.count_mut(port.0) = 0;
        self.stats.occupied -= n;
        self.stats.flushed += n as u64;
        n
    }

    /// Frees expired entries in the next `buckets` buckets (wrapping), so occupancy tracks live
    /// entries without a full scan. The bridge calls it with a budget of one bucket per
    /// `frames_per_sweep` frames forwarded.
    /// Returns how many entries were freed.
    pub fn sweep(&mut self, now: u64, buckets: usize) -> usize {
        let n = self.buckets.len();
        let mut freed = 0;
        for _ in 0..buckets.min(n) {
            let bi = self.sweep_cursor;
            self.sweep_cursor = (bi + 1) & (n - 1);
            for i in 0..WAYS {
                let (w, seen) = (self.buckets[bi].keys[i], self.buckets[bi].seen[i]);
                if w != 0 && self.expired(seen, now) {
                    self.buckets[bi].keys[i] = 0;
                    self.buckets[bi].seen[i] = 0;
                    // Only learned entries expire.
                    *self.count_mut(key_port(w)) -= 1;
                    freed += 1;
                }
            }
        }
        self.stats.occupied -= freed;
        self.stats.expired += freed as u64;
        freed
    }

    /// Every live entry at `now`, in table order. Control path only.
    pub fn entries(&self, now: u64) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                let w = b.keys[i];
                if w == 0 || self.expired(b.seen[i], now) {
                    continue;
                }
                let is_static = w & STATIC_BIT != 0;
                out.push(FdbEntry {
                    mac: MacAddr::from_u64(w),
                    port: PortId(key_port(w)),
                    is_static,
                    age: (!is_static).then(|| Duration::from_nanos(now.saturating_sub(b.seen[i]))),
                });
            }
        }
        out
    }

    /// A copy of the table's counters.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    /// Number of slots (fixed).
    pub fn capacity(&self) -> usize {
        self.stats.capacity
    }

    /// Checks the structural invariants (no MAC twice in a bucket, every entry in its hash
    /// bucket, occupancy agreeing with the slots and with the learn/evict/expire/flush counters).
    /// For tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut occupied = 0;
        let mut per_port = vec![0u32; self.dyn_count.len().max(1)];
        for (bi, b) in self.buckets.iter().enumerate() {
            for i in 0..WAYS {
                let w = b.keys[i];
                if w == 0 {
                    continue;
                }
                occupied += 1;
                if w & STATIC_BIT == 0 {
                    let p = key_port(w) as usize;
                    if p >= per_port.len() {
                        return Err(format!("port {p} holds entries but has no count"));
                    }
                    per_port[p] += 1;
                }
                if self.bucket_of(w & MAC_MASK) != bi {
                    return Err(format!("entry {w:#x} in bucket {bi} hashes elsewhere"));
                }
                for j in i + 1..WAYS {
                    if b.keys[j] != 0 && (b.keys[j] ^ w) & MAC_MASK == 0 {
                        return Err(format!("MAC {:#x} twice in bucket {bi}", w & MAC_MASK));
                    }
                }
            }
        }
        let s = &self.stats;
        let expected = s
            .learned
            .wrapping_sub(s.evictions)
            .wrapping_sub(s.expired)
            .wrapping_sub(s.flushed);
        if expected != occupied as u64 {
            return Err(format!(
                "counters say {expected} entries (learned {} - evicted {} - expired {} - \
                 flushed {}) but {occupied} slots are in use",
                s.learned, s.evictions, s.expired, s.flushed
            ));
        }
        for (p, &want) in per_port.iter().enumerate() {
            let got = self.dyn_count.get(p).copied().unwrap_or(0);
            if want != got {
                return Err(format!(
                    "port {p} holds {want} learned entries but counts {got}"
                ));
            }
        }
        if occupied != self.stats.occupied {
            return Err(format!(
                "occupied count {} but {occupied} slots in use",
                self.stats.occupied
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn mac(n: u32) -> u64 {
        MacAddr::local(n).to_u64()
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let mut t = Fdb::new(64, Duration::from_secs(300), Some(1));
        assert_eq!(t.learn(mac(1), PortId(3), 0), Learned::New);
        assert_eq!(t.learn(mac(1), PortId(3), SEC), Learned::Refreshed);
        assert_eq!(t.lookup(mac(1), SEC), Some(PortId(3)));
        assert_eq!(
            t.learn(mac(1), PortId(4), 2 * SEC),
            Learned::Moved { from: PortId(3) }
        );
        assert_eq!(t.lookup(mac(1), 2 * SEC), Some(PortId(4)));
        assert_eq!(t.stats().moves, 1);
        assert_eq!(t.stats().learned, 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn entries_expire_exactly_after_the_ageing_time() {
        let mut t = Fdb::new(64, Duration::from_secs(10), Some(2));
        t.learn(mac(9), PortId(1), 5 * SEC);
        assert_eq!(t.lookup(mac(9), 15 * SEC), Some(PortId(1)));
        assert_eq!(t.lookup(mac(9), 15 * SEC + 1), None);
        // Re-learning an expired entry is a new learn, not a move, even on another port.
        assert_eq!(t.learn(mac(9), PortId(2), 16 * SEC), Learned::New);
        assert_eq!(t.stats().moves, 0);
        assert_eq!(t.stats().expired, 1);
        // A full sweep frees what expired and leaves the rest.
        t.learn(mac(10), PortId(2), 30 * SEC);
        let freed = t.sweep(30 * SEC, usize::MAX);
        assert_eq!(freed, 1);
        assert_eq!(t.stats().occupied, 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn full_bucket_evicts_least_recently_seen() {
        // Two buckets of 8: find 9 MACs sharing one bucket.
        let mut t = Fdb::new(16, Duration::from_secs(300), Some(3));
        let target = t.bucket_of(mac(0));
        let same: Vec<u64> = (0..10_000)
            .map(mac)
            .filter(|&m| t.bucket_of(m) == target)
            .take(WAYS + 1)
            .collect();
        assert_eq!(same.len(), WAYS + 1);
        for (k, &m) in same[..WAYS].iter().enumerate() {
            t.learn(m, PortId(1), k as u64 * SEC);
        }
        // Touch the oldest so the second oldest becomes the LRU victim.
        t.learn(same[0], PortId(1), 100 * SEC);
        let r = t.learn(same[WAYS], PortId(2), 101 * SEC);
        assert_eq!(
            r,
            Learned::Evicted {
                victim_port: PortId(1)
            }
        );
        assert_eq!(t.lookup(same[1], 101 * SEC), None, "LRU entry evicted");
        assert_eq!(t.lookup(same[0], 101 * SEC), Some(PortId(1)));
        assert_eq!(t.lookup(same[WAYS], 101 * SEC), Some(PortId(2)));
        assert_eq!(t.stats().evictions, 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn static_entries_do_not_age_move_or_get_evicted() {
        let mut t = Fdb::new(16, Duration::from_secs(1), Some(4));
        assert!(t.add_static(MacAddr::local(5), PortId(7)));
        assert_eq!(t.learn(mac(5), PortId(8), 0), Learned::StaticConflict);
        assert_eq!(t.lookup(mac(5), 1_000 * SEC), Some(PortId(7)));
        assert_eq!(t.flush_port(PortId(7), false), 0);
        assert_eq!(t.flush_port(PortId(7), true), 1);
        assert_eq!(t.lookup(mac(5), 0), None);
        t.check_invariants().unwrap();
    }
}
