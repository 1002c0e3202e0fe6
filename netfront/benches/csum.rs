//! The per-frame checksum work of the two designs netfront could use with smoltcp, whose
//! checksum capabilities are per protocol and direction, not per frame.
//!
//! - **A** (smoltcp keeps TCP rx verification on): netfront completes the partial checksum of a
//!   `csum_blank` frame (one pass) so smoltcp's verification (a second pass) passes; a
//!   `data_validated` or plain frame is verified by smoltcp (one pass). On transmit smoltcp
//!   computes every checksum (one pass) and the frame goes out `data_validated`.
//! - **B** (what netfront does): smoltcp's TCP/UDP checksums are off both ways. A `csum_blank`
//!   frame costs a header copy and `checksum_setup` (no pass over the data), a `data_validated`
//!   frame nothing, a plain frame one pass by netfront over its pages. On transmit netfront
//!   writes the pseudo-header sum (`set_partial`) and sends `csum_blank|data_validated`.
//!
//! The cases run the same calls `rxcheck`/`tx` make on a TCP frame held in 4 KiB pages:
//! 1514 B (one page) and 65549 B (a GSO super-frame, 17 pages).
//!
//! Run: `cargo bench -p netfront --bench csum`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use netif_ring::netif::{NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};
use offload::csum::{self, Checksum};
use smoltcp::wire::{IpAddress, TcpPacket};

/// An IPv4 TCP frame of `len` bytes with a correct checksum.
fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 13 + 7) as u8).collect();
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[20..22].copy_from_slice(&[0x40, 0]);
    f[23] = 6;
    f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f[46] = 5 << 4;
    csum::fill_ipv4_header(&mut f, 14, 20);
    csum::fill(&mut f).expect("TCP");
    f
}

const SRC: IpAddress = IpAddress::v4(10, 0, 0, 1);
const DST: IpAddress = IpAddress::v4(10, 0, 0, 2);

fn smoltcp_verify(f: &[u8]) -> bool {
    TcpPacket::new_unchecked(&f[34..]).verify_checksum(&SRC, &DST)
}

/// rxcheck's verification of a plain frame: header copy, locate, pseudo-header, sum over pages.
fn netfront_verify(pages: &[&[u8]], hdr: &mut [u8; 256]) -> bool {
    let mut at = 0;
    for p in pages {
        let n = p.len().min(hdr.len() - at);
        hdr[at..at + n].copy_from_slice(&p[..n]);
        at += n;
        if at == hdr.len() {
            break;
        }
    }
    let Ok(loc) = offload::parse::locate(&hdr[..at]) else {
        return false;
    };
    let mut c: Checksum = csum::pseudo(&hdr[..at], &loc, loc.l4_len());
    let mut pos = 0;
    for p in pages {
        let (lo, hi) = (pos, pos + p.len());
        pos = hi;
        if hi > loc.csum_start && lo < loc.ip_end {
            c.add(&p[loc.csum_start.max(lo) - lo..loc.ip_end.min(hi) - lo]);
        }
    }
    c.sum() == 0xFFFF
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rx_csum");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for len in [1514usize, 65549] {
        let whole = frame(len);
        let mut blank = whole.clone();
        csum::set_partial(&mut blank).expect("partial");
        let pages: Vec<&[u8]> = whole.chunks(4096).collect();
        g.throughput(Throughput::Bytes(len as u64));
        let mut scratch = blank.clone();
        g.bench_with_input(BenchmarkId::new("A_csum_blank", len), &len, |b, _| {
            b.iter(|| {
                scratch[50..52].copy_from_slice(&blank[50..52]);
                csum::complete(black_box(&mut scratch)).expect("completes");
                assert!(smoltcp_verify(black_box(&scratch)));
            })
        });
        g.bench_with_input(
            BenchmarkId::new("A_validated_or_plain", len),
            &len,
            |b, _| b.iter(|| assert!(smoltcp_verify(black_box(&whole)))),
        );
        let mut hdr = [0u8; 256];
        g.bench_with_input(BenchmarkId::new("B_csum_blank", len), &len, |b, _| {
            b.iter(|| {
                hdr.copy_from_slice(&blank[..256]);
                let flags = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
                offload::netif::from_rx(black_box(flags), None, &mut hdr).expect("setup")
            })
        });
        g.bench_with_input(BenchmarkId::new("B_plain", len), &len, |b, _| {
            b.iter(|| assert!(netfront_verify(black_box(&pages), &mut hdr)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tx_csum");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for len in [1514usize, 65549] {
        let mut f = frame(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("A_smoltcp_fills", len), &len, |b, _| {
            b.iter(|| {
                let mut p = TcpPacket::new_unchecked(&mut f[34..]);
                p.fill_checksum(&SRC, &DST);
            })
        });
        g.bench_with_input(BenchmarkId::new("B_set_partial", len), &len, |b, _| {
            b.iter(|| csum::set_partial(black_box(&mut f)).expect("TCP"))
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
