//! The copy engine: how bytes move into, out of and between frames that other threads may be
//! accessing at the same time.
//!
//! # Why plain `memcpy` is not enough
//!
//! A frame is reachable through the hypervisor's direct map and through its domain's view, and
//! guests run on their own threads: a grant copy into a guest page can meet the guest writing
//! that page (a hostile guest does it on purpose). With `memcpy` or `ptr::copy_nonoverlapping`
//! that is a data race, undefined behaviour in the Rust abstract machine however harmless it is
//! on x86. So every access to a frame that another thread may touch concurrently goes through
//! the three primitives here ([`copy_shared`], [`read_shared`], [`write_shared`]); "shared"
//! names the frame side, "private" memory is a Rust slice (`&mut [u8]` or `&[u8]`) that the
//! borrow rules already protect.
//!
//! # The argument: an atomic memcpy
//!
//! The primitives are *per-byte relaxed atomic copies*: what `AtomicPerByte` in Rust RFC 3301
//! ("atomic memcpy", after C++'s P1478 `atomic_load_per_byte_memcpy`) specifies as "a series of
//! `AtomicU8` loads and stores", each byte atomic on its own, the whole copy tearable. Atomic
//! accesses never race, so a copy that meets a concurrent writer returns some mix of old and new
//! bytes (each byte one of the values written), never undefined behaviour. Nobody uses the copy
//! to publish anything: callers order copies with the grant entry's Release/Acquire pair and the
//! page-state word's AcqRel transitions, so every atomic here is `Relaxed`.
//!
//! Two engines implement this, chosen once per process (see [`engine_name`]):
//!
//! - **`avx2-64`** (x86_64 with AVX2, detected at run time; not under Miri): the loop is
//!   `core::arch::asm!` blocks of `vmovdqu`, 128 bytes per trip, with an overlapping last 32
//!   bytes, and overlapping pairs of plain moves below 32 bytes. An asm block is opaque to the
//!   compiler: it may do anything that some Rust code with the same effects could do, and the
//!   compiler must assume it did. Each block reads exactly the source bytes and writes exactly
//!   the destination bytes it names, and a sequence of `AtomicU8::load(Relaxed)` and
//!   `AtomicU8::store(Relaxed)` per byte has exactly those effects (x86 never tears a byte), so
//!   that is the program the block is explained by, and it is race-free against every other
//!   atomic access. This is the route the RFC itself names for a library ("platform specific
//!   inline assembly"), and it is why the loop is `asm!` and not intrinsics: the compiler treats
//!   `_mm256_loadu_si256` as an ordinary (non-atomic) read. Bytes the overlapping tail writes
//!   twice are just two atomic stores of that byte.
//!
//! - **`atomic-words`** (no AVX2, another architecture, or Miri, where `asm!` cannot run; or
//!   forced with `SPLITNET_COPY_ENGINE=atomic`): plain Rust over `AtomicU64`, aligned to the
//!   shared side. One rule makes it sound: on shared memory it only ever accesses whole aligned
//!   8-byte words. The middle of a range is word loads and stores; a misaligned shared source is
//!   read as aligned words and shifted together; a partial word at either edge of a destination
//!   is a compare-and-swap loop that replaces only its own bytes (so a concurrent writer's bytes
//!   in the rest of the word survive); a partial word at an edge of a source is a whole-word
//!   load of which only the wanted bytes are kept. The extra bytes read or swapped back belong
//!   to the same frame (an aligned word never leaves its 4 KiB page). Why not `AtomicU8` at the
//!   edges: Rust forbids racing *mixed-size* atomic accesses where one is a write ("every pair
//!   of non-synchronized atomic accesses must be either disjoint, access the exact same memory
//!   (including using the same access size), or both be reads", `core::sync::atomic`), and two
//!   copies into one page at different offsets would pit one's byte stores against the other's
//!   word stores. With one access size there is no such pair.
//!
//! The two engines must never both touch shared memory in one process (an asm copy, explained
//! per byte, racing a word-sized one would be the same mixed-size pair), so the choice is made
//! once and cached ([`engine`]); every path that touches a frame, whatever its length, goes
//! through the same engine.
//!
//! vm-memory (rust-vmm) faces the same problem for guest RAM shared with a VM, and its
//! `VolatileSlice` makes the same kind of argument with volatile accesses: no references to
//! guest memory, only accesses the compiler may neither elide nor invent, copies done in aligned
//! chunks. Volatile alone does not make racing accesses defined in the Rust model (they are
//! still non-atomic), which is why vm-memory also offers atomic accesses to guest memory and
//! why this module uses atomics (and asm explained as atomics) rather than volatile.
//!
//! # Speed
//!
//! glibc's `memcpy` uses `rep movsb` for mid-size copies, and on AMD Zen that path drops to a few
//! GB/s whenever `(dst - src) mod 4096` is 1..15 (glibc bug 30994), exactly the Ethernet case of
//! a payload landing at offset 2 in a page-aligned buffer. The AVX2 loop has no such pit, and the
//! asm loop is instruction for instruction the intrinsics loop it replaced.

use std::sync::atomic::{AtomicU8, Ordering};

/// The engines (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Avx2 = 1,
    Atomic = 2,
}

/// The process's engine; 0 until the first copy decides.
static ENGINE: AtomicU8 = AtomicU8::new(0);

/// Name of the engine this process uses, for reports: `avx2-64` or `atomic-words`.
pub fn engine_name() -> &'static str {
    match engine() {
        Engine::Avx2 => "avx2-64",
        Engine::Atomic => "atomic-words",
    }
}

/// The process's engine, decided once: AVX2 if the CPU has it (std caches CPUID), unless
/// `SPLITNET_COPY_ENGINE=atomic` asks for the portable one (for ThreadSanitizer, which cannot
/// see inside asm, and to measure the fallback on an AVX2 machine).
#[inline]
fn engine() -> Engine {
    // Relaxed: the value is the only thing published and it is immutable once set; a thread
    // that sees 0 decides below, and the compare-exchange makes the first decision everyone's.
    match ENGINE.load(Ordering::Relaxed) {
        1 => Engine::Avx2,
        2 => Engine::Atomic,
        _ => decide(),
    }
}

#[cold]
fn decide() -> Engine {
    let forced = std::env::var_os("SPLITNET_COPY_ENGINE").is_some_and(|v| v == "atomic");
    let e = if !forced && has_avx2() {
        Engine::Avx2
    } else {
        Engine::Atomic
    };
    // Relaxed: see `engine`; on failure another thread decided first and its choice stands.
    match ENGINE.compare_exchange(0, e as u8, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => e,
        Err(1) => Engine::Avx2,
        Err(_) => Engine::Atomic,
    }
}

#[inline]
fn has_avx2() -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        false
    }
}

/// Copies `len` bytes from shared memory at `src` to shared memory at `dst`.
///
/// # Safety
/// - `src..src + len` and `dst..dst + len` do not overlap, and each lies inside one mapped,
///   page-aligned 4 KiB frame (so the aligned 8-byte words covering it are readable and
///   writable; the `atomic-words` engine accesses whole words).
/// - Every concurrent access to those frames by other threads is through this module's
///   primitives, or a non-atomic read while no writer can exist (the `PageBorrow` rule); no
///   other atomic access sizes (ring and grant-entry atomics live on atomic-only frames).
#[inline]
pub(crate) unsafe fn copy_shared(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if engine() == Engine::Avx2 {
        // SAFETY: AVX2 is present (the engine is only Avx2 if detected); the caller's contract.
        unsafe { avx2::copy(dst, src, len) };
        return;
    }
    // SAFETY: the caller's contract, which is atomic::copy's.
    unsafe { atomic::copy(dst, src, len) };
}

/// Copies `buf.len()` bytes from shared memory at `src` into `buf`.
///
/// # Safety
/// As [`copy_shared`] for `src..src + buf.len()` (the `buf` side is private: the `&mut`
/// excludes every other access, and it cannot point into a frame since no `&mut` to frame
/// memory exists).
#[inline]
pub(crate) unsafe fn read_shared(buf: &mut [u8], src: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if engine() == Engine::Avx2 {
        // SAFETY: AVX2 is present; `buf` is valid for writes of its length and disjoint from
        // `src`'s frame (private memory); the caller's contract for `src`.
        unsafe { avx2::copy(buf.as_mut_ptr(), src, buf.len()) };
        return;
    }
    // SAFETY: as above.
    unsafe { atomic::read(buf.as_mut_ptr(), src, buf.len()) };
}

/// Copies `data` into shared memory at `dst`.
///
/// # Safety
/// As [`copy_shared`] for `dst..dst + data.len()`. `data` may itself be a borrowed page
/// (`PageBorrow`): that page has no writer while the borrow lives, and it is not `dst`'s page
/// (writing a page needs its borrow count at zero), so the two ranges are disjoint.
#[inline]
pub(crate) unsafe fn write_shared(dst: *mut u8, data: &[u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if engine() == Engine::Avx2 {
        // SAFETY: AVX2 is present; `data` is valid for reads and disjoint from `dst` (above).
        unsafe { avx2::copy(dst, data.as_ptr(), data.len()) };
        return;
    }
    // SAFETY: as above.
    unsafe { atomic::write(dst, data.as_ptr(), data.len()) };
}

/// The `avx2-64` engine: `vmovdqu` in `asm!` blocks, each explained as per-byte relaxed atomic
/// loads of the bytes it reads and stores of the bytes it writes (module docs).
///
/// Every block: touches memory only at the operands named (no stack: `nostack`), leaves flags
/// alone (`preserves_flags`), and is not `pure`/`readonly`/`nomem`, so the compiler assumes it
/// may read and write any memory it can reach and keeps it in program order with other memory
/// accesses. Scratch registers are `out(..) _`, never read before the block writes them.
#[cfg(all(target_arch = "x86_64", not(miri)))]
pub(super) mod avx2 {
    use core::arch::asm;

    /// Copies `len` bytes from `src` to `dst`.
    ///
    /// # Safety
    /// The CPU supports AVX2; `src` is valid for reads and `dst` for writes of `len` bytes; the
    /// ranges do not overlap; every concurrent access to them by another thread is atomic, or a
    /// read (the module's contract).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
        if len < 32 {
            // SAFETY: the caller's contract; len < 32.
            unsafe { small(dst, src, len) };
            return;
        }
        let mut i = 0;
        // Two 64-byte iterations per trip: four loads in flight before the stores.
        while i + 128 <= len {
            // SAFETY: i + 128 <= len, so [i, i + 128) of both ranges is the caller's; vmovdqu
            // has no alignment requirement. Effect: 128 relaxed byte loads from src + i, then
            // 128 relaxed byte stores to dst + i (the module's atomic-memcpy argument).
            unsafe {
                asm!(
                    "vmovdqu {a}, ymmword ptr [{s}]",
                    "vmovdqu {b}, ymmword ptr [{s} + 32]",
                    "vmovdqu {c}, ymmword ptr [{s} + 64]",
                    "vmovdqu {d}, ymmword ptr [{s} + 96]",
                    "vmovdqu ymmword ptr [{t}], {a}",
                    "vmovdqu ymmword ptr [{t} + 32], {b}",
                    "vmovdqu ymmword ptr [{t} + 64], {c}",
                    "vmovdqu ymmword ptr [{t} + 96], {d}",
                    s = in(reg) src.add(i),
                    t = in(reg) dst.add(i),
                    a = out(ymm_reg) _,
                    b = out(ymm_reg) _,
                    c = out(ymm_reg) _,
                    d = out(ymm_reg) _,
                    options(nostack, preserves_flags),
                );
            }
            i += 128;
        }
        if i + 64 <= len {
            // SAFETY: i + 64 <= len; as the trip above, for 64 bytes.
            unsafe {
                asm!(
                    "vmovdqu {a}, ymmword ptr [{s}]",
                    "vmovdqu {b}, ymmword ptr [{s} + 32]",
                    "vmovdqu ymmword ptr [{t}], {a}",
                    "vmovdqu ymmword ptr [{t} + 32], {b}",
                    s = in(reg) src.add(i),
                    t = in(reg) dst.add(i),
                    a = out(ymm_reg) _,
                    b = out(ymm_reg) _,
                    options(nostack, preserves_flags),
                );
            }
            i += 64;
        }
        if i + 32 <= len {
            // SAFETY: i + 32 <= len; as above, for 32 bytes.
            unsafe {
                asm!(
                    "vmovdqu {a}, ymmword ptr [{s}]",
                    "vmovdqu ymmword ptr [{t}], {a}",
                    s = in(reg) src.add(i),
                    t = in(reg) dst.add(i),
                    a = out(ymm_reg) _,
                    options(nostack, preserves_flags),
                );
            }
            i += 32;
        }
        if i < len {
            // SAFETY: the last 32 bytes, [len - 32, len): in range since len >= 32; they overlap
            // bytes already copied, which are stored again (two relaxed byte stores; src and dst
            // do not overlap each other, so the values are what the source holds).
            unsafe {
                asm!(
                    "vmovdqu {a}, ymmword ptr [{s}]",
                    "vmovdqu ymmword ptr [{t}], {a}",
                    s = in(reg) src.add(len - 32),
                    t = in(reg) dst.add(len - 32),
                    a = out(ymm_reg) _,
                    options(nostack, preserves_flags),
                );
            }
        }
        // The compiler inserts `vzeroupper` after intrinsics but cannot see that these blocks
        // dirtied the upper halves of the ymm registers; leaving them dirty makes later SSE
        // code pay a transition penalty (or a false dependency) on Intel cores.
        // SAFETY: touches no memory (`nomem`); every vector register is declared clobbered
        // (`clobber_abi("C")` covers all of them on x86_64 SysV), so no live value is lost.
        unsafe {
            asm!(
                "vzeroupper",
                clobber_abi("C"),
                options(nostack, preserves_flags, nomem)
            )
        };
    }

    /// Below 32 bytes: two overlapping moves of the largest size that fits (16, 8, 4, 2), both
    /// loads before both stores, or one byte. Same contract as [`copy`], with `len < 32`.
    #[target_feature(enable = "avx2")]
    unsafe fn small(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: every arm reads [0, n) and [len - n, len) of src and writes the same of dst,
        // with n <= len, so inside the caller's ranges; plain moves have no alignment
        // requirement; explained as relaxed byte loads then byte stores (module docs).
        unsafe {
            if len >= 16 {
                asm!(
                    "vmovdqu {a}, xmmword ptr [{s}]",
                    "vmovdqu {b}, xmmword ptr [{s} + {n} - 16]",
                    "vmovdqu xmmword ptr [{t}], {a}",
                    "vmovdqu xmmword ptr [{t} + {n} - 16], {b}",
                    s = in(reg) src,
                    t = in(reg) dst,
                    n = in(reg) len,
                    a = out(xmm_reg) _,
                    b = out(xmm_reg) _,
                    options(nostack, preserves_flags),
                );
            } else if len >= 8 {
                asm!(
                    "mov {a}, qword ptr [{s}]",
                    "mov {b}, qword ptr [{s} + {n} - 8]",
                    "mov qword ptr [{t}], {a}",
                    "mov qword ptr [{t} + {n} - 8], {b}",
                    s = in(reg) src,
                    t = in(reg) dst,
                    n = in(reg) len,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack, preserves_flags),
                );
            } else if len >= 4 {
                asm!(
                    "mov {a:e}, dword ptr [{s}]",
                    "mov {b:e}, dword ptr [{s} + {n} - 4]",
                    "mov dword ptr [{t}], {a:e}",
                    "mov dword ptr [{t} + {n} - 4], {b:e}",
                    s = in(reg) src,
                    t = in(reg) dst,
                    n = in(reg) len,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack, preserves_flags),
                );
            } else if len >= 2 {
                asm!(
                    "movzx {a:e}, word ptr [{s}]",
                    "movzx {b:e}, word ptr [{s} + {n} - 2]",
                    "mov word ptr [{t}], {a:x}",
                    "mov word ptr [{t} + {n} - 2], {b:x}",
                    s = in(reg) src,
                    t = in(reg) dst,
                    n = in(reg) len,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack, preserves_flags),
                );
            } else if len == 1 {
                asm!(
                    "movzx {a:e}, byte ptr [{s}]",
                    "mov byte ptr [{t}], {a:l}",
                    s = in(reg) src,
                    t = in(reg) dst,
                    a = out(reg) _,
                    options(nostack, preserves_flags),
                );
            }
        }
    }
}

/// The `atomic-words` engine: relaxed `AtomicU64` on whole aligned words of shared memory only
/// (module docs). Private memory (the `read` destination, the `write` source) is accessed with
/// plain reads and writes.
pub(super) mod atomic {
    use core::ptr;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    const W: usize = 8;

    // Every access below is Relaxed: a copy synchronises nothing by itself (callers order it
    // through the grant entry and page-state word); the atomics are there to make concurrent
    // access to the same word defined, not to order it.

    /// The aligned word holding the byte at `p`.
    ///
    /// # Safety
    /// The word is inside a mapped frame (any byte of a frame: frames are page-aligned) and, for
    /// as long as the reference is used, every concurrent access to it is a same-size atomic or
    /// a read.
    #[inline(always)]
    unsafe fn word<'a>(p: *const u8) -> &'a AtomicU64 {
        let w = p.wrapping_sub(p.addr() % W).cast_mut().cast::<u64>();
        // SAFETY: 8-aligned (rounded down), inside the frame holding `p`; the caller's contract
        // for the concurrent accesses.
        unsafe { AtomicU64::from_ptr(w) }
    }

    /// Bytes `k..k + 8` of the 16 bytes `lo` then `hi` (in memory order), for `k` in 1..8.
    #[inline(always)]
    pub(super) fn funnel(lo: u64, hi: u64, k: usize) -> u64 {
        let sh = 8 * k as u32;
        if cfg!(target_endian = "little") {
            (lo >> sh) | (hi << (64 - sh))
        } else {
            (lo << sh) | (hi >> (64 - sh))
        }
    }

    /// Shared `src` to private `dst`, aligned to the source: whole-word loads, keeping only the
    /// wanted bytes of the first and last.
    ///
    /// # Safety
    /// `dst` valid for writes of `len` private bytes; `src` as `super::copy_shared`.
    pub(crate) unsafe fn read(dst: *mut u8, src: *const u8, len: usize) {
        let mut i = 0;
        let k = src.addr() % W;
        if k != 0 && len > 0 {
            let n = (W - k).min(len);
            // SAFETY: src is inside the caller's range, so its word is inside its frame.
            let v = unsafe { word(src) }.load(Relaxed).to_ne_bytes();
            // SAFETY: dst..dst + n is inside the private destination (n <= len).
            unsafe { ptr::copy_nonoverlapping(v.as_ptr().add(k), dst, n) };
            i = n;
        }
        while i + W <= len {
            // SAFETY: src + i is 8-aligned here and [i, i + 8) is inside both ranges.
            unsafe {
                let v = word(src.add(i)).load(Relaxed);
                dst.add(i).cast::<u64>().write_unaligned(v);
            }
            i += W;
        }
        if i < len {
            // SAFETY: src + i is inside the caller's range (aligned), its word in its frame.
            let v = unsafe { word(src.add(i)) }.load(Relaxed).to_ne_bytes();
            // SAFETY: [i, len) is inside the private destination; len - i < 8.
            unsafe { ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i), len - i) };
        }
    }

    /// Where a destination word's bytes come from.
    trait Source {
        /// The 8 bytes at offset `i`.
        unsafe fn word_at(&self, i: usize) -> u64;
        /// `out.len()` (< 8) bytes at offset `i`.
        unsafe fn bytes(&self, i: usize, out: &mut [u8]);
    }

    /// Private memory: plain reads.
    struct Private(*const u8);

    impl Source for Private {
        #[inline(always)]
        unsafe fn word_at(&self, i: usize) -> u64 {
            // SAFETY: the caller stays inside the private source range.
            unsafe { self.0.add(i).cast::<u64>().read_unaligned() }
        }
        #[inline(always)]
        unsafe fn bytes(&self, i: usize, out: &mut [u8]) {
            // SAFETY: as above; `out` is a local.
            unsafe { ptr::copy_nonoverlapping(self.0.add(i), out.as_mut_ptr(), out.len()) };
        }
    }

    /// Shared memory: aligned word loads, shifted together when the source is misaligned.
    struct Shared(*const u8);

    impl Source for Shared {
        #[inline(always)]
        unsafe fn word_at(&self, i: usize) -> u64 {
            let p = self.0.wrapping_add(i);
            let k = p.addr() % W;
            // SAFETY: p is inside the caller's source range, so its word is in its frame.
            let lo = unsafe { word(p) }.load(Relaxed);
            if k == 0 {
                return lo;
            }
            // SAFETY: the next word holds p + 7 (k >= 1), also inside the range.
            let hi = unsafe { word(p.wrapping_add(W - k)) }.load(Relaxed);
            funnel(lo, hi, k)
        }
        #[inline(always)]
        unsafe fn bytes(&self, i: usize, out: &mut [u8]) {
            // SAFETY: inside the caller's source range; `out` is private.
            unsafe { read(out.as_mut_ptr(), self.0.wrapping_add(i), out.len()) };
        }
    }

    /// Stores `bytes` at byte `k` of the word `w`, leaving its other bytes as they are: a CAS
    /// loop, so a concurrent writer's bytes there are never overwritten with stale values.
    #[inline(always)]
    fn store_partial(w: &AtomicU64, k: usize, bytes: &[u8]) {
        let mut cur = w.load(Relaxed);
        loop {
            let mut b = cur.to_ne_bytes();
            b[k..k + bytes.len()].copy_from_slice(bytes);
            match w.compare_exchange_weak(cur, u64::from_ne_bytes(b), Relaxed, Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Fills shared `dst..dst + len` from `src`, aligned to the destination.
    ///
    /// # Safety
    /// `dst` as `super::copy_shared`; `src` valid for `len` bytes of its kind.
    #[inline(always)]
    unsafe fn store(dst: *mut u8, src: &impl Source, len: usize) {
        let mut i = 0;
        let k = dst.addr() % W;
        if k != 0 && len > 0 {
            let n = (W - k).min(len);
            let mut b = [0u8; W];
            // SAFETY: [0, n) is inside both ranges; the word is dst's first, in its frame.
            unsafe {
                src.bytes(0, &mut b[..n]);
                store_partial(word(dst), k, &b[..n]);
            }
            i = n;
        }
        while i + W <= len {
            // SAFETY: dst + i is 8-aligned here and [i, i + 8) is inside both ranges.
            unsafe {
                let v = src.word_at(i);
                word(dst.add(i)).store(v, Relaxed);
            }
            i += W;
        }
        if i < len {
            let n = len - i;
            let mut b = [0u8; W];
            // SAFETY: [i, len) is inside both ranges; dst + i is aligned, its word in its frame.
            unsafe {
                src.bytes(i, &mut b[..n]);
                store_partial(word(dst.add(i)), 0, &b[..n]);
            }
        }
    }

    /// Private `src` to shared `dst`.
    ///
    /// # Safety
    /// `src` valid for reads of `len` private bytes; `dst` as `super::copy_shared`.
    pub(crate) unsafe fn write(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe { store(dst, &Private(src), len) }
    }

    /// Shared `src` to shared `dst` (not overlapping).
    ///
    /// # Safety
    /// As `super::copy_shared`.
    pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe { store(dst, &Shared(src), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned buffer, like a frame (the atomic engine accesses whole aligned words).
    #[repr(C, align(4096))]
    struct Pages([u8; 8192]);

    fn pages(f: impl Fn(usize) -> u8) -> Box<Pages> {
        let mut p = Box::new(Pages([0; 8192]));
        for (i, b) in p.0.iter_mut().enumerate() {
            *b = f(i);
        }
        p
    }

    type Copier = unsafe fn(*mut u8, *const u8, usize);

    /// The engines available here, each as shared-to-shared, shared-to-private and
    /// private-to-shared copiers.
    fn engines() -> Vec<(&'static str, Copier)> {
        let v: Vec<(&'static str, Copier)> = vec![
            ("atomic copy", atomic::copy),
            ("atomic read", atomic::read),
            ("atomic write", atomic::write),
        ];
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        let v = {
            let mut v = v;
            if has_avx2() {
                v.push(("avx2", avx2_copy));
            }
            v
        };
        v
    }

    #[cfg(all(target_arch = "x86_64", not(miri)))]
    unsafe fn avx2_copy(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: only listed when AVX2 is present; the test's ranges are valid and disjoint.
        unsafe { avx2::copy(dst, src, len) }
    }

    /// Copies with `f` into `dst` (refilled with a canary first) and checks it holds exactly
    /// the source bytes in range and the canary around them (up to 64 bytes past the range:
    /// every engine's widest access is 32 bytes).
    fn check(
        name: &str,
        f: Copier,
        dst: &mut Pages,
        src: &mut Pages,
        so: usize,
        doff: usize,
        len: usize,
    ) {
        let end = (doff + len + 64).min(dst.0.len());
        dst.0[..end].fill(0xAA);
        // SAFETY: both buffers are 8192 bytes, page-aligned; offsets + len stay inside; the
        // test is single-threaded. The source pointer comes from `&mut` like a frame's (from
        // the mapping): a shared source is read through `&AtomicU64`, which Miri's aliasing
        // model treats as a possible write and so refuses on a pointer from `&`.
        unsafe {
            f(
                dst.0.as_mut_ptr().add(doff),
                src.0.as_mut_ptr().add(so),
                len,
            )
        };
        assert_eq!(
            &dst.0[doff..doff + len],
            &src.0[so..so + len],
            "{name}: len {len} so {so} do {doff}"
        );
        assert!(
            dst.0[..doff].iter().all(|b| *b == 0xAA),
            "{name}: wrote before the range (len {len} so {so} do {doff})"
        );
        assert!(
            dst.0[doff + len..end].iter().all(|b| *b == 0xAA),
            "{name}: wrote after the range (len {len} so {so} do {doff})"
        );
    }

    #[test]
    fn copies_every_length_and_offset_exactly() {
        let mut src = pages(|i| (i * 7 + 3) as u8);
        let mut dst = pages(|_| 0);
        for (name, f) in engines() {
            for len in [0, 1, 31, 32, 33, 63, 64, 65, 100, 1500, 4094, 4096] {
                for (so, doff) in [(0, 0), (0, 2), (3, 0), (5, 17)] {
                    check(name, f, &mut dst, &mut src, so, doff, len);
                }
            }
        }
    }

    /// Every source and destination alignment against every length up to a few words past the
    /// 32-byte asm threshold, plus some longer ones: the atomic engine's head, middle, tail and
    /// shifted source all meet every case, and so do the asm engine's small moves.
    #[test]
    fn copies_at_every_alignment() {
        let mut src = pages(|i| (i * 13 + 5) as u8);
        let mut dst = pages(|_| 0);
        let lens: Vec<usize> = if cfg!(miri) {
            (0..=20).chain([31, 32, 33, 47]).collect()
        } else {
            (0..=80).chain([127, 128, 129, 200, 1500, 4095]).collect()
        };
        for (name, f) in engines() {
            for so in 0..16 {
                for doff in 0..16 {
                    for &len in &lens {
                        check(name, f, &mut dst, &mut src, so, doff, len);
                    }
                }
            }
        }
    }

    #[test]
    fn funnel_takes_the_middle_bytes() {
        let bytes: Vec<u8> = (1..=16).collect();
        let lo = u64::from_ne_bytes(bytes[..8].try_into().unwrap());
        let hi = u64::from_ne_bytes(bytes[8..].try_into().unwrap());
        for k in 1..8 {
            let want = u64::from_ne_bytes(bytes[k..k + 8].try_into().unwrap());
            assert_eq!(atomic::funnel(lo, hi, k), want, "k {k}");
        }
    }

    /// Writers at different offsets into one page, and a reader, at the same time: under Miri
    /// this checks the atomic engine is free of data races and of mixed-size atomic accesses
    /// (its edge CASes and middle stores are all whole words); everywhere it checks that a
    /// writer's edge never puts back stale bytes over its neighbour's range.
    #[test]
    fn concurrent_writers_keep_to_their_ranges() {
        struct Shared(*mut u8);
        // SAFETY: the pointer is to a page every thread accesses only through the atomic engine.
        unsafe impl Sync for Shared {}
        let mut page = pages(|_| 0);
        let base = Shared(page.0.as_mut_ptr());
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        // Two writers with adjacent ranges meeting inside one word (at 13), and a reader over
        // both.
        std::thread::scope(|s| {
            let base = &base;
            for (lo, hi, tag) in [(3usize, 13usize, 1u8), (13, 29, 2)] {
                s.spawn(move || {
                    let mut src = [0u8; 32];
                    for r in 0..rounds {
                        src.fill(tag.wrapping_add((r as u8) << 2));
                        // SAFETY: inside the page; every access to it is the atomic engine's.
                        unsafe { atomic::write(base.0.add(lo), src.as_ptr(), hi - lo) };
                    }
                });
            }
            s.spawn(move || {
                let mut buf = [0u8; 40];
                for _ in 0..rounds {
                    // SAFETY: as above.
                    unsafe { atomic::read(buf.as_mut_ptr(), base.0, buf.len()) };
                }
            });
        });
        let last = |tag: u8| tag.wrapping_add(((rounds - 1) as u8) << 2);
        assert!(page.0[..3].iter().all(|b| *b == 0));
        assert!(
            page.0[3..13].iter().all(|b| *b == last(1)),
            "{:?}",
            &page.0[..32]
        );
        assert!(
            page.0[13..29].iter().all(|b| *b == last(2)),
            "{:?}",
            &page.0[..32]
        );
        assert!(page.0[29..].iter().all(|b| *b == 0));
    }
}
