//! Frame buffers as the NIC's driver uses them: shortened after the device filled them, given
//! their length back for reuse, merged into (GRO) across page boundaries, checksummed in place.

use netback::pool::{Buf, BufPool};
use xen_model::{DomainHandle, Hypervisor};

fn pool(limit: usize) -> (Hypervisor, BufPool<DomainHandle>) {
    let xen = Hypervisor::new(4096).unwrap();
    let dom0 = xen.create_domain(1024).unwrap();
    (xen, BufPool::new(dom0, limit))
}

fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[track_caller]
fn filled(pool: &BufPool<DomainHandle>, data: &[u8]) -> Buf<DomainHandle> {
    let mut b = pool.alloc(data.len()).unwrap();
    b.fill(data).unwrap();
    b
}

fn read(b: &Buf<DomainHandle>) -> Vec<u8> {
    let mut v = Vec::new();
    b.read_into(&mut v).unwrap();
    v
}

#[test]
fn truncate_gives_pages_back_and_set_len_restores_within_the_pages() {
    let (_xen, pool) = pool(64);
    let data = bytes(9014, 1);
    let mut b = filled(&pool, &data);
    assert_eq!(b.pages().len(), 3);
    let free = pool.free_pages();
    assert!(b.truncate(5000));
    assert_eq!((b.len(), b.pages().len()), (5000, 2));
    assert_eq!(pool.free_pages(), free + 1, "the third page went back");
    assert_eq!(read(&b), data[..5000]);
    assert!(
        !b.truncate(0) && !b.truncate(5001),
        "only shorter, never empty"
    );
    assert!(!b.set_len(9014), "3 pages' worth does not fit 2 pages");
    assert!(b.set_len(8192) && b.len() == 8192);
    assert!(!b.set_len(4096), "would leave a page unused");
}

#[test]
fn append_from_crosses_both_page_boundaries_byte_exact() {
    let (_xen, pool) = pool(64);
    let head = bytes(1514, 2);
    let mut b = filled(&pool, &head);
    let mut want = head.clone();
    // Segments whose payload sits at offset 66 of their own buffer; the merged frame passes
    // page boundaries at odd offsets.
    for i in 0..20u8 {
        let seg = bytes(66 + 1448, 40 + i);
        let s = filled(&pool, &seg);
        assert!(b.append_from(&s, 66..seg.len()));
        want.extend_from_slice(&seg[66..]);
    }
    assert_eq!(b.len(), want.len());
    assert_eq!(b.pages().len(), want.len().div_ceil(4096));
    assert_eq!(read(&b), want);
    // A source spanning pages (a jumbo segment) too.
    let big = bytes(9014, 7);
    let s = filled(&pool, &big);
    assert!(b.append_from(&s, 66..9014));
    want.extend_from_slice(&big[66..]);
    assert_eq!(read(&b), want);
}

#[test]
fn a_failed_append_leaves_the_frame_and_the_pool_as_they_were() {
    let (_xen, pool) = pool(3);
    let mut b = filled(&pool, &bytes(4000, 3));
    let s = filled(&pool, &bytes(4000, 4));
    let other = filled(&pool, &bytes(100, 5));
    // The pool is exhausted: the frame cannot grow into a second page.
    assert!(!b.append_from(&s, 0..200));
    assert_eq!((b.len(), b.pages().len()), (4000, 1));
    assert_eq!(read(&b), bytes(4000, 3));
    // Out of the source's range, or past the largest frame.
    assert!(!b.append_from(&other, 50..101));
    drop(other);
    assert!(
        b.append_from(&s, 0..96),
        "fits the first page without growing"
    );
    assert_eq!(b.len(), 4096);
    assert_eq!(pool.free_pages(), 1);
}

#[test]
fn l4_checksum_is_checked_across_pages() {
    let (_xen, pool) = pool(64);
    for len in [100usize, 5000, 9014] {
        let mut f = bytes(len, 9);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[20..22].copy_from_slice(&[0x40, 0]);
        f[22] = 64;
        f[23] = 6;
        f[46] = 5 << 4;
        offload::csum::fill_ipv4_header(&mut f, 14, 20);
        let loc = offload::csum::fill(&mut f).unwrap();
        let good = filled(&pool, &f);
        assert!(good.l4_csum_ok(&loc), "len {len}");
        let mut bad = f.clone();
        bad[len - 1] ^= 0x10;
        assert!(!filled(&pool, &bad).l4_csum_ok(&loc), "len {len}");
    }
}

#[test]
fn read_range_reads_across_page_boundaries_and_refuses_past_the_end() {
    let (_xen, pool) = pool(64);
    let data = bytes(9014, 3);
    let b = filled(&pool, &data);
    for (at, n) in [
        (0, 9014),
        (4000, 200),
        (4095, 4098),
        (8191, 823),
        (9013, 1),
        (17, 0),
    ] {
        let mut out = vec![0u8; n];
        assert!(b.read_range(at, &mut out), "{at}+{n}");
        assert_eq!(out, data[at..at + n], "{at}+{n}");
    }
    let mut out = vec![0u8; 2];
    assert!(!b.read_range(9013, &mut out), "one byte past the end");
    assert!(
        !b.read_range(usize::MAX, &mut out),
        "an offset that overflows"
    );
}
