//! The forwarding database (Linux's name for the MAC learning table), shared by every
//! forwarding thread of a bridge.
//!
//! Layout: a fixed array of 8-way set-associative buckets, 128 bytes each (eight packed keys in
//! one cache line, their last-seen times in the next), allocated once at construction. A MAC
//! hashes to exactly one bucket, so a lookup reads at most two adjacent cache lines and never
//! follows a chain; nothing allocates after construction.
//!
//! - **Key word**: the 48-bit MAC in bits 0..48, the port in bits 48..63, bit 63 marks a static
//!   entry; 0 is an empty slot (the all-zero MAC is never learned: it is not a valid source).
//!   The key word is the whole entry and one atomic, so a reader never sees a MAC with another
//!   entry's port or static flag.
//! - **Hash**: multiply-shift with a random odd multiplier chosen per table, so a guest cannot
//!   aim MACs at one bucket to evict another guest's entries without knowing the multiplier.
//! - **Ageing**: each entry keeps the caller's `now` of the batch that last refreshed it. An
//!   entry older than the ageing time is ignored by lookups at once and its slot is reclaimed by
//!   the next learn into its bucket or by [`Fdb::sweep`]. A known MAC on its known port
//!   rewrites its time at most once per *granule* (the ageing time / 1024, 0.29 s at 300 s),
//!   not per frame or batch, so forwarders on other cores that look the MAC up keep the line
//!   in their caches; an entry refreshed within a granule of its recorded time may therefore
//!   expire up to one granule early. An entry learned once expires exactly.
//! - **Eviction when full**: a new MAC whose bucket has no free or expired slot replaces the
//!   bucket's least recently seen dynamic entry (LRU within the set, as hardware CAMs do).
//!   Static entries are never evicted or aged; a bucket of only static entries refuses to learn.
//! - **Moves**: a known MAC seen on another port is re-pointed in place and counted.
//!
//! # Threads
//!
//! The table is shared (`Arc`); each thread works through its own handle ([`Fdb`], made by
//! [`Fdb::handle`]), which holds that thread's event counters and sweep cursor. Nothing is
//! locked. A lookup is loads only. A learn writes only when something changes (a new entry, a
//! move, a refresh after a granule), each change is one compare-and-swap of a key word, and
//! whoever wins a compare-and-swap counts that change, so the counters add up at quiescence
//! (`occupied == learned - evictions - expired - flushed - duplicates`, checked by
//! [`Fdb::check_invariants`]).
//!
//! - **Per-port learned counts** are atomics touched only when an entry is learned, moved or
//!   forgotten. A learner *reserves* a place under its port's cap (`fetch_update`: below the cap,
//!   add one) before it writes the entry and gives it back if it loses the race, so a port never
//!   holds more learned entries than its cap, however many threads learn for it.
//! - **Port removal** ([`Fdb::close_port`]) bumps the port's generation, then (full barrier)
//!   scans for its entries. A learner publishes its entry, then (full barrier) re-reads the
//!   generation of its port and withdraws the entry if it changed. Of the two, at least one sees
//!   the other, so no entry of a removed port survives the learners that were running when it
//!   was removed. Reusing the port number safely also needs those learners to be finished: the
//!   bridge quarantines removed numbers until no forwarder can still be in a batch that saw the
//!   port (see `Bridge::add_port`).
//! - **Two learners of one new MAC** may claim two slots of its bucket at once. Each then
//!   (full barrier) re-scans the bucket: a static entry beats a learned one and otherwise the
//!   lower slot wins; the loser is withdrawn (by itself or by the winner, whichever gets there
//!   first) and counted in `duplicates`. The entry ends up on one of the two ports: the race is
//!   lost harmlessly, as if the frames had come one after the other.
//! - **Benign races**, by design: a slot's key and time are two words, so a reader can pair a
//!   freshly claimed key with the time of the slot's previous entry (the lookup then misses or
//!   hits once by that old time: one frame flooded, or sent where the MAC now is); a sweep can
//!   free an entry refreshed a moment before (the next frame from that MAC learns it again).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::frame::{MAC_MASK, MacAddr};
use crate::port::PortId;
use crate::sync::{
    AtomicU32, AtomicU64, Counter, Ordering::Relaxed, SeededBug, control_barrier, learn_barrier,
    seeded,
};

/// Slots per bucket (two under loom, to keep the models' state space small; the logic is the
/// same).
pub const WAYS: usize = if cfg!(loom) { 2 } else { 8 };
const STATIC_BIT: u64 = 1 << 63;
const PORT_SHIFT: u32 = 48;
/// Ports are 15 bits in the key word.
pub(crate) const MAX_PORT_ID: u16 = 0x7fff;
const STATIC_SEEN: u64 = u64::MAX;

#[repr(C, align(64))]
struct Bucket {
    keys: [AtomicU64; WAYS],
    seen: [AtomicU64; WAYS],
}

impl Bucket {
    fn new() -> Self {
        Self {
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            seen: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

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

/// Table-wide counters (summed over every handle of the table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FdbStats {
    /// Slots in the table (fixed at construction).
    pub capacity: usize,
    /// Slots holding an entry, expired or not (expired ones are reclaimed lazily). Derived from
    /// the counters below; exact whenever no learn is in flight.
    pub occupied: usize,
    /// New entries learned (static ones included). At quiescence
    /// `occupied == learned - evictions - expired - flushed - duplicates`.
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
    /// Entries withdrawn because another thread learned the same MAC into another slot of its
    /// bucket at the same moment (one of the two stays).
    pub duplicates: u64,
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

/// One handle's event counters.
#[derive(Debug, Default)]
struct Counters {
    learned: Counter,
    moves: Counter,
    evictions: Counter,
    expired: Counter,
    flushed: Counter,
    refused: Counter,
    duplicates: Counter,
}

/// Event totals, as plain numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Totals([u64; 7]);

impl Totals {
    fn add(&mut self, c: &Counters) {
        let v = [
            &c.learned,
            &c.moves,
            &c.evictions,
            &c.expired,
            &c.flushed,
            &c.refused,
            &c.duplicates,
        ];
        for (t, c) in self.0.iter_mut().zip(v) {
            *t = t.wrapping_add(c.get());
        }
    }
}

/// Every live handle's counters, plus the totals of handles dropped. Locked only when a handle
/// is made or dropped and when the counters are summed: never by learning or lookups.
#[derive(Debug, Default)]
struct Registry {
    live: Vec<Arc<CachePadded<Counters>>>,
    retired: Totals,
}

/// Per port: learned entries held (reservations included), the cap, and the generation (odd:
/// the port exists; bumped when it is opened and when it is closed).
struct PortSlot {
    count: AtomicU32,
    limit: AtomicU32,
    life: AtomicU32,
}

/// The shared part besides the buckets: per-port atomics and the handles' counters.
struct Table {
    ports: Box<[PortSlot]>,
    capacity: usize,
    registry: Mutex<Registry>,
}

/// A handle on a MAC learning table: the table itself is shared with every other handle made
/// from it by [`Fdb::handle`]; the handle holds its thread's event counters and sweep cursor.
/// See the module docs for layout, policies and the rules between threads.
pub struct Fdb {
    t: Arc<Table>,
    /// The buckets (shared) and the hash and ageing parameters (fixed at construction),
    /// held by every handle itself: a lookup follows one pointer, not two.
    buckets: Arc<[Bucket]>,
    shift: u32,
    mul: u64,
    ageing_ns: u64,
    granule_ns: u64,
    /// Padded: handles of different threads are made one after the other and would otherwise
    /// share a line (false sharing on every sweep).
    ctr: Arc<CachePadded<Counters>>,
    sweep_cursor: usize,
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("buckets", &self.buckets.len())
            .field("ageing_ns", &self.ageing_ns)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Fdb {
    fn drop(&mut self) {
        // Fold this handle's counts into the retired totals so the table's counters keep
        // adding up after its threads are gone.
        let mut r = self.t.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.live.retain(|c| !Arc::ptr_eq(c, &self.ctr));
        r.retired.add(&self.ctr);
    }
}

/// Why an entry this handle published is taken back out.
#[derive(Clone, Copy)]
enum Withdraw {
    /// Its port was removed meanwhile.
    PortGone,
    /// A twin of the same MAC beat it.
    Twin,
}

impl Fdb {
    /// A table with room for at least `capacity` entries (rounded up to a power-of-two number
    /// of 8-way buckets, at least two), entries ageing out after `ageing`, and the hash
    /// multiplier derived from `seed` (random when `None`), for port numbers up to the most
    /// the key word holds (32768). Every port number starts open.
    pub fn new(capacity: usize, ageing: Duration, seed: Option<u64>) -> Self {
        Self::with_ports(capacity, ageing, seed, MAX_PORT_ID as usize + 1)
    }

    /// As [`Fdb::new`], for port numbers below `max_ports` only (the per-port counts, caps and
    /// generations are allocated once, for that many ports).
    pub fn with_ports(
        capacity: usize,
        ageing: Duration,
        seed: Option<u64>,
        max_ports: usize,
    ) -> Self {
        let nbuckets = capacity.div_ceil(WAYS).next_power_of_two().max(2);
        let seed = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        // Any odd multiplier gives a valid multiply-shift hash; mixing the seed first keeps a
        // small seed (tests use 1, 2, ...) from giving a weak multiplier.
        let mul = (seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1;
        let ageing_ns = u64::try_from(ageing.as_nanos()).unwrap_or(u64::MAX);
        let ports = max_ports.clamp(1, MAX_PORT_ID as usize + 1);
        let ctr = Arc::new(CachePadded::new(Counters::default()));
        let t = Table {
            ports: (0..ports)
                .map(|_| PortSlot {
                    count: AtomicU32::new(0),
                    limit: AtomicU32::new(u32::MAX),
                    life: AtomicU32::new(1),
                })
                .collect(),
            capacity: nbuckets * WAYS,
            registry: Mutex::new(Registry {
                live: vec![ctr.clone()],
                retired: Totals::default(),
            }),
        };
        Self {
            t: Arc::new(t),
            buckets: (0..nbuckets).map(|_| Bucket::new()).collect(),
            shift: 64 - nbuckets.trailing_zeros(),
            mul,
            ageing_ns,
            granule_ns: (ageing_ns >> 10).max(1),
            ctr,
            sweep_cursor: 0,
        }
    }

    /// Another handle on the same table, with its own (zero) counters and sweep cursor: one
    /// per thread that learns, sweeps or changes the table.
    pub fn handle(&self) -> Fdb {
        let ctr = Arc::new(CachePadded::new(Counters::default()));
        self.t
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .push(ctr.clone());
        Fdb {
            t: self.t.clone(),
            buckets: self.buckets.clone(),
            shift: self.shift,
            mul: self.mul,
            ageing_ns: self.ageing_ns,
            granule_ns: self.granule_ns,
            ctr,
            sweep_cursor: 0,
        }
    }

    #[inline(always)]
    fn bucket_of(&self, mac: u64) -> usize {
        (mac.wrapping_mul(self.mul) >> self.shift) as usize
    }

    #[inline(always)]
    fn expired(&self, seen: u64, now: u64) -> bool {
        // A clock that went backwards (now < seen) counts as fresh rather than ancient.
        now.saturating_sub(seen) > self.ageing_ns
    }

    #[inline(always)]
    fn port(&self, port: u16) -> Option<&PortSlot> {
        self.t.ports.get(port as usize)
    }

    /// Takes a place under `port`'s cap; false when it is full (or the port number is out of
    /// range).
    fn reserve(&self, port: u16) -> bool {
        let Some(p) = self.port(port) else {
            return false;
        };
        // Relaxed: the count is a number, not a flag publishing anything; the read-modify-
        // write alone keeps two learners from both taking the last place. The cap is read
        // Relaxed too: a cap being changed applies from the next learn that sees it.
        let limit = p.limit.load(Relaxed);
        if seeded(SeededBug::CapCheckThenAdd) {
            if p.count.load(Relaxed) >= limit {
                return false;
            }
            p.count.fetch_add(1, Relaxed);
            return true;
        }
        p.count
            .fetch_update(Relaxed, Relaxed, |c| (c < limit).then_some(c + 1))
            .is_ok()
    }

    /// Gives back one learned entry (or reservation) of `port`.
    fn release(&self, port: u16) {
        if let Some(p) = self.port(port) {
            // Relaxed: as in `reserve`. Every release matches one successful reserve, so the
            // count never wraps.
            p.count.fetch_sub(1, Relaxed);
        }
    }

    /// After [`learn_barrier`]: whether `port` is still the generation `generation` the caller learns
    /// for.
    #[inline]
    fn still_open(&self, port: u16, generation: u32) -> bool {
        if seeded(SeededBug::NoPortRecheck) {
            return true;
        }
        // Relaxed: ordered by the learn barrier before it, which pairs with the control
        // barrier in `close_port` between the generation bump and the scan.
        self.port(port)
            .is_some_and(|p| p.life.load(Relaxed) == generation)
    }

    /// Caps how many learned entries `port` may hold (`None`: no cap). Static entries do not
    /// count. Entries that expired count until reclaimed by a learn into their bucket or a
    /// sweep ([`Fdb::sweep`]; [`crate::Bridge::age`] forces a full one). A port holding more
    /// than a new cap keeps them and learns nothing new until below it.
    pub fn set_port_limit(&mut self, port: PortId, limit: Option<u32>) {
        if let Some(p) = self.port(port.0) {
            // Relaxed: read by learners' next `reserve`; nothing else rides on it.
            p.limit.store(limit.unwrap_or(u32::MAX), Relaxed);
        }
    }

    /// Learned entries `port` holds now (expired ones included until reclaimed; a learn in
    /// flight on another thread may be counted a moment early).
    pub fn port_entries(&self, port: PortId) -> u32 {
        // Relaxed: a report.
        self.port(port.0).map_or(0, |p| p.count.load(Relaxed))
    }

    /// The generation of `port`: odd while it is open, bumped by [`Fdb::open_port`] and
    /// [`Fdb::close_port`]. A forwarder learns for the generation its port table names.
    pub fn port_generation(&self, port: PortId) -> u32 {
        // Relaxed: callers compare it with a generation they hold; the protocol's ordering is
        // the barriers in `learn` and `close_port`.
        self.port(port.0).map_or(0, |p| p.life.load(Relaxed))
    }

    /// Opens `port` (a new port on this number) and returns its generation; its cap is reset
    /// to none. Control path. The number must be closed and no forwarder may still be learning
    /// for its previous generation (the bridge's quarantine ensures that).
    pub fn open_port(&mut self, port: PortId) -> u32 {
        let Some(p) = self.port(port.0) else {
            return 0;
        };
        // Relaxed: the cap and generation reach forwarders through the port table they load
        // (published after this), and the generation is only compared for equality.
        p.limit.store(u32::MAX, Relaxed);
        let life = p.life.load(Relaxed);
        let next = if life % 2 == 1 {
            life
        } else {
            life.wrapping_add(1)
        };
        p.life.store(next, Relaxed);
        next
    }

    /// Closes `port`: bumps its generation, so learners for the old one withdraw what they
    /// publish from now on, then forgets every entry pointing at it, static ones too. Control
    /// path; scans the whole table. Returns how many entries it removed.
    pub fn close_port(&mut self, port: PortId) -> usize {
        let Some(p) = self.port(port.0) else {
            return 0;
        };
        let life = p.life.load(Relaxed);
        if life % 2 == 1 {
            // Relaxed store, then the control barrier: the store is ordered before the scan's
            // loads by the SeqCst fence, which pairs with the learner's `learn_barrier`.
            p.life.store(life.wrapping_add(1), Relaxed);
        }
        control_barrier();
        self.flush_port(port, true)
    }

    /// The port a live entry for `mac` (packed, see [`MacAddr::to_u64`]) points at. Loads
    /// only.
    #[inline(always)]
    pub fn lookup(&self, mac: u64, now: u64) -> Option<PortId> {
        let b = &self.buckets[self.bucket_of(mac)];
        for i in 0..WAYS {
            // Relaxed: the key word is the whole entry and publishes nothing else (the time
            // beside it is advisory: see "Benign races" in the module docs).
            let w = b.keys[i].load(Relaxed);
            if w & MAC_MASK == mac && w != 0 {
                // The static flag is in the key word: a static entry never reads as expired,
                // whatever time its slot holds.
                let live = w & STATIC_BIT != 0 || !self.expired(b.seen[i].load(Relaxed), now);
                return live.then_some(PortId(key_port(w)));
            }
        }
        None
    }

    /// Learns that `mac` (a valid unicast source, packed) was seen on `port` at `now`, for
    /// the port's current generation.
    pub fn learn(&mut self, mac: u64, port: PortId, now: u64) -> Learned {
        let generation = self.port_generation(port);
        self.learn_for(mac, port, generation, now)
    }

    /// Learns that `mac` was seen on `port` at `now`, `generation` being the port's generation in
    /// the caller's port table: if the port is closed meanwhile, the entry is withdrawn again.
    #[inline(always)]
    pub fn learn_for(&mut self, mac: u64, port: PortId, generation: u32, now: u64) -> Learned {
        loop {
            let bi = self.bucket_of(mac);
            let b = &self.buckets[bi];
            let mut hit = None;
            for i in 0..WAYS {
                // Relaxed: as in `lookup`.
                let w = b.keys[i].load(Relaxed);
                if w & MAC_MASK == mac && w != 0 {
                    hit = Some((i, w));
                    break;
                }
            }
            let Some((i, w)) = hit else {
                match self.insert_miss(bi, mac, port, generation, now) {
                    Some(r) => return r,
                    None => continue,
                }
            };
            if w & STATIC_BIT != 0 {
                if key_port(w) == port.0 {
                    return Learned::Refreshed;
                }
                self.ctr.refused.add(1);
                return Learned::StaticConflict;
            }
            // Relaxed: advisory time (module docs).
            let seen = b.seen[i].load(Relaxed);
            let was_expired = self.expired(seen, now);
            let from = key_port(w);
            if from == port.0 {
                // At most one store per granule: other cores reading this bucket keep it.
                if now.saturating_sub(seen) >= self.granule_ns {
                    b.seen[i].store(now, Relaxed);
                }
                if was_expired {
                    self.ctr.expired.add(1);
                    self.ctr.learned.add(1);
                    return Learned::New;
                }
                return Learned::Refreshed;
            }
            match self.move_entry(bi, i, w, port, generation, now, was_expired) {
                Some(r) => return r,
                None => continue,
            }
        }
    }

    /// A known MAC appeared on another port: re-point it, within the new port's cap. `None`:
    /// the slot changed under us; look again.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn move_entry(
        &mut self,
        bi: usize,
        i: usize,
        old: u64,
        port: PortId,
        generation: u32,
        now: u64,
        was_expired: bool,
    ) -> Option<Learned> {
        if !self.reserve(port.0) {
            self.ctr.refused.add(1);
            return Some(Learned::LimitReached);
        }
        let b = &self.buckets[bi];
        let new = make_key(old & MAC_MASK, port.0);
        // Relaxed: the key word is self-contained; the re-check below is ordered by the learn
        // barrier.
        if b.keys[i]
            .compare_exchange(old, new, Relaxed, Relaxed)
            .is_err()
        {
            self.release(port.0);
            return None;
        }
        b.seen[i].store(now, Relaxed);
        let from = key_port(old);
        self.release(from);
        let outcome = if was_expired {
            self.ctr.expired.add(1);
            self.ctr.learned.add(1);
            Learned::New
        } else {
            self.ctr.moves.add(1);
            Learned::Moved { from: PortId(from) }
        };
        learn_barrier();
        if !self.still_open(port.0, generation) {
            self.withdraw(bi, i, new, Withdraw::PortGone);
        }
        Some(outcome)
    }

    /// A MAC the bucket does not hold: claim a free slot, else the least recently seen dynamic
    /// one (an expired one whenever the bucket holds any). `None`: the slot changed under us.
    #[cold]
    fn insert_miss(
        &mut self,
        bi: usize,
        mac: u64,
        port: PortId,
        generation: u32,
        now: u64,
    ) -> Option<Learned> {
        if !self.reserve(port.0) {
            self.ctr.refused.add(1);
            return Some(Learned::LimitReached);
        }
        let b = &self.buckets[bi];
        let Some((i, old, old_seen)) = self.victim(bi) else {
            self.release(port.0);
            self.ctr.refused.add(1);
            return Some(Learned::Full);
        };
        let new = make_key(mac, port.0);
        // Relaxed: as in `move_entry`.
        if b.keys[i]
            .compare_exchange(old, new, Relaxed, Relaxed)
            .is_err()
        {
            self.release(port.0);
            return None;
        }
        b.seen[i].store(now, Relaxed);
        let outcome = if old == 0 {
            Learned::New
        } else {
            // The victim is dynamic: static entries are never chosen.
            self.release(key_port(old));
            if self.expired(old_seen, now) {
                self.ctr.expired.add(1);
                Learned::New
            } else {
                self.ctr.evictions.add(1);
                Learned::Evicted {
                    victim_port: PortId(key_port(old)),
                }
            }
        };
        self.ctr.learned.add(1);
        learn_barrier();
        if !self.still_open(port.0, generation) {
            self.withdraw(bi, i, new, Withdraw::PortGone);
        } else if !seeded(SeededBug::NoTwinRecheck) {
            self.settle_twins(bi, i, new);
        }
        Some(outcome)
    }

    /// The slot a new entry goes into: a free one, else the least recently seen dynamic one.
    /// Returns (slot, its key word, its time).
    fn victim(&self, bi: usize) -> Option<(usize, u64, u64)> {
        let b = &self.buckets[bi];
        let mut victim = None;
        let mut oldest = u64::MAX;
        for i in 0..WAYS {
            // Relaxed: a candidate; the compare-and-swap that claims it checks it again.
            let w = b.keys[i].load(Relaxed);
            if w == 0 {
                return Some((i, 0, 0));
            }
            let seen = b.seen[i].load(Relaxed);
            if w & STATIC_BIT == 0 && seen < oldest {
                victim = Some((i, w, seen));
                oldest = seen;
            }
        }
        victim
    }

    /// After the learn barrier, with `mine` just published in slot `i`: resolves twins of the
    /// same MAC. A static entry beats a learned one, otherwise the lower slot wins; the loser
    /// is withdrawn by whichever of the two gets there first.
    fn settle_twins(&self, bi: usize, i: usize, mine: u64) {
        let b = &self.buckets[bi];
        let mac = mine & MAC_MASK;
        for j in 0..WAYS {
            if j == i {
                continue;
            }
            // Relaxed: ordered after our claim by the learn (or control) barrier, which pairs
            // with the twin learner's own barrier.
            let w = b.keys[j].load(Relaxed);
            if w == 0 || w & MAC_MASK != mac {
                continue;
            }
            let (ws, ms) = (w & STATIC_BIT != 0, mine & STATIC_BIT != 0);
            let twin_wins = (ws && !ms) || (ws == ms && j < i);
            if twin_wins {
                self.withdraw(bi, i, mine, Withdraw::Twin);
                return;
            }
            self.withdraw(bi, j, w, Withdraw::Twin);
        }
    }

    /// Takes `w` out of slot `i` if it is still there, counting it under `why`.
    fn withdraw(&self, bi: usize, i: usize, w: u64, why: Withdraw) {
        let b = &self.buckets[bi];
        // Relaxed: whoever wins this compare-and-swap counts the removal; nothing else is
        // published by an empty slot.
        if b.keys[i].compare_exchange(w, 0, Relaxed, Relaxed).is_ok() {
            if w & STATIC_BIT == 0 {
                self.release(key_port(w));
            }
            match why {
                Withdraw::PortGone => self.ctr.flushed.add(1),
                Withdraw::Twin => self.ctr.duplicates.add(1),
            }
        }
    }

    /// Pins `mac` to `port`: the entry never ages, moves or gets evicted. Replaces a dynamic
    /// entry for the same MAC. Returns false when the bucket has no non-static slot left.
    /// Control path.
    pub fn add_static(&mut self, mac: MacAddr, port: PortId) -> bool {
        let key = mac.to_u64();
        self.remove(mac);
        let bi = self.bucket_of(key);
        let new = make_key(key, port.0) | STATIC_BIT;
        loop {
            let b = &self.buckets[bi];
            let Some((i, old, _)) = self.victim(bi) else {
                return false;
            };
            // Relaxed: as in `insert_miss`; the control barrier below orders the re-scan.
            if b.keys[i]
                .compare_exchange(old, new, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            b.seen[i].store(STATIC_SEEN, Relaxed);
            if old != 0 {
                self.ctr.evictions.add(1);
                self.release(key_port(old));
            }
            self.ctr.learned.add(1);
            // A learner may have put a dynamic twin in meanwhile: the static entry beats it.
            control_barrier();
            self.settle_twins(bi, i, new);
            return true;
        }
    }

    /// Removes every entry for `mac`, static or dynamic. Returns whether one existed.
    pub fn remove(&mut self, mac: MacAddr) -> bool {
        let key = mac.to_u64();
        let bi = self.bucket_of(key);
        let mut found = false;
        for i in 0..WAYS {
            // Relaxed: the compare-and-swap decides.
            let w = self.buckets[bi].keys[i].load(Relaxed);
            if w != 0 && w & MAC_MASK == key && self.clear(bi, i, w) {
                self.ctr.flushed.add(1);
                found = true;
            }
        }
        found
    }

    /// Empties slot `i` if it still holds `w`; the caller counts the removal.
    fn clear(&self, bi: usize, i: usize, w: u64) -> bool {
        // Relaxed: as in `withdraw`.
        let ok = self.buckets[bi].keys[i]
            .compare_exchange(w, 0, Relaxed, Relaxed)
            .is_ok();
        if ok && w & STATIC_BIT == 0 {
            self.release(key_port(w));
        }
        ok
    }

    /// Removes every entry pointing at `port` (static ones too when `include_static`).
    /// Scans the whole table: control path only. To remove a port use [`Fdb::close_port`],
    /// which also stops learners still running for it.
    pub fn flush_port(&mut self, port: PortId, include_static: bool) -> usize {
        let mut n = 0;
        for bi in 0..self.buckets.len() {
            for i in 0..WAYS {
                // Relaxed: after `close_port`'s barrier; the compare-and-swap decides.
                let w = self.buckets[bi].keys[i].load(Relaxed);
                if w != 0
                    && key_port(w) == port.0
                    && (include_static || w & STATIC_BIT == 0)
                    && self.clear(bi, i, w)
                {
                    n += 1;
                }
            }
        }
        if n != 0 {
            self.ctr.flushed.add(n as u64);
        }
        n
    }

    /// Frees expired entries in the next `buckets` buckets (wrapping) of this handle's cursor,
    /// so occupancy tracks live entries without a full scan. A forwarder calls it with a
    /// budget of one bucket per `frames_per_sweep` frames forwarded.
    /// Returns how many entries were freed.
    pub fn sweep(&mut self, now: u64, buckets: usize) -> usize {
        let n = self.buckets.len();
        let mut freed = 0;
        for _ in 0..buckets.min(n) {
            let bi = self.sweep_cursor;
            self.sweep_cursor = (bi + 1) & (n - 1);
            for i in 0..WAYS {
                let b = &self.buckets[bi];
                // Relaxed: the compare-and-swap decides; a refresh racing with it is benign
                // (module docs).
                let w = b.keys[i].load(Relaxed);
                if w != 0
                    && w & STATIC_BIT == 0
                    && self.expired(b.seen[i].load(Relaxed), now)
                    && self.clear(bi, i, w)
                {
                    freed += 1;
                }
            }
        }
        if freed != 0 {
            self.ctr.expired.add(freed as u64);
        }
        freed
    }

    /// Every live entry at `now`, in table order. Control path only.
    pub fn entries(&self, now: u64) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for i in 0..WAYS {
                // Relaxed: a report.
                let w = b.keys[i].load(Relaxed);
                let seen = b.seen[i].load(Relaxed);
                let is_static = w & STATIC_BIT != 0;
                if w == 0 || (!is_static && self.expired(seen, now)) {
                    continue;
                }
                out.push(FdbEntry {
                    mac: MacAddr::from_u64(w),
                    port: PortId(key_port(w)),
                    is_static,
                    age: (!is_static).then(|| Duration::from_nanos(now.saturating_sub(seen))),
                });
            }
        }
        out
    }

    /// The table's counters, summed over every handle (live and dropped).
    pub fn stats(&self) -> FdbStats {
        let t = {
            let r = self.t.registry.lock().unwrap_or_else(|e| e.into_inner());
            let mut t = r.retired;
            r.live.iter().for_each(|c| t.add(c));
            t
        };
        let [
            learned,
            moves,
            evictions,
            expired,
            flushed,
            refused,
            duplicates,
        ] = t.0;
        let occupied = learned
            .wrapping_sub(evictions)
            .wrapping_sub(expired)
            .wrapping_sub(flushed)
            .wrapping_sub(duplicates);
        FdbStats {
            capacity: self.t.capacity,
            occupied: occupied as usize,
            learned,
            moves,
            evictions,
            expired,
            flushed,
            refused,
            duplicates,
        }
    }

    /// Number of slots (fixed).
    pub fn capacity(&self) -> usize {
        self.t.capacity
    }

    /// Checks the structural invariants (no MAC twice in a bucket, every entry in its hash
    /// bucket, per-port counts and occupancy agreeing with the slots and with the
    /// learn/evict/expire/flush counters). Meaningful when no thread is changing the table.
    /// For tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut occupied = 0;
        let mut per_port = vec![0u32; self.t.ports.len()];
        for (bi, b) in self.buckets.iter().enumerate() {
            let keys: [u64; WAYS] = std::array::from_fn(|i| b.keys[i].load(Relaxed));
            for (i, &w) in keys.iter().enumerate() {
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
                for &v in &keys[i + 1..] {
                    if v != 0 && (v ^ w) & MAC_MASK == 0 {
                        return Err(format!("MAC {:#x} twice in bucket {bi}", w & MAC_MASK));
                    }
                }
            }
        }
        let s = self.stats();
        if s.occupied != occupied {
            return Err(format!(
                "counters say {} entries (learned {} - evicted {} - expired {} - flushed {} - \
                 duplicates {}) but {occupied} slots are in use",
                s.occupied as i64, s.learned, s.evictions, s.expired, s.flushed, s.duplicates
            ));
        }
        for (p, &want) in per_port.iter().enumerate() {
            let got = self.t.ports[p].count.load(Relaxed);
            if want != got {
                return Err(format!(
                    "port {p} holds {want} learned entries but counts {got}"
                ));
            }
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

    #[test]
    fn a_known_mac_rewrites_its_time_once_per_granule_not_per_learn() {
        let mut t = Fdb::new(64, Duration::from_secs(1024), Some(5));
        let granule = SEC; // 1024 s / 1024
        assert_eq!(t.learn(mac(1), PortId(1), 10 * SEC), Learned::New);
        // Within a granule: the recorded time stays.
        t.learn(mac(1), PortId(1), 10 * SEC + granule - 1);
        let age = |t: &Fdb, now| t.entries(now)[0].age;
        assert_eq!(age(&t, 20 * SEC), Some(Duration::from_secs(10)));
        // A granule later it moves.
        t.learn(mac(1), PortId(1), 10 * SEC + granule);
        assert_eq!(age(&t, 20 * SEC), Some(Duration::from_secs(9)));
        t.check_invariants().unwrap();
    }

    #[test]
    fn an_entry_learned_for_a_closed_port_generation_is_withdrawn() {
        let mut ctl = Fdb::with_ports(64, Duration::from_secs(300), Some(6), 8);
        let mut fwd = ctl.handle();
        let g = ctl.open_port(PortId(2));
        assert_eq!(fwd.learn_for(mac(1), PortId(2), g, SEC), Learned::New);
        ctl.close_port(PortId(2));
        assert_eq!(ctl.lookup(mac(1), SEC), None);
        // A forwarder still holding the old port table learns for the old generation: the
        // entry goes in, sees the generation changed, and comes out again.
        fwd.learn_for(mac(2), PortId(2), g, SEC);
        assert_eq!(ctl.lookup(mac(2), SEC), None);
        assert_eq!(ctl.port_entries(PortId(2)), 0);
        let g2 = ctl.open_port(PortId(2));
        assert_ne!(g2, g);
        assert_eq!(fwd.learn_for(mac(2), PortId(2), g2, SEC), Learned::New);
        assert_eq!(ctl.stats().flushed, 2);
        ctl.check_invariants().unwrap();
        // Counters of a dropped handle still count.
        drop(fwd);
        assert_eq!(ctl.stats().learned, 3);
        ctl.check_invariants().unwrap();
    }
}
