//! Two guests, each a smoltcp Interface on a Netfront, talk TCP through the test backend.

mod common;

use std::time::Duration;

use common::{Opts, Route, TestBackend, machine};
use netfront::{FrontConfig, Netfront, RxMode};
use netif_ring::netif::{NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_MORE_DATA};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use xen_model::DomainHandle;

struct Guest {
    nf: Netfront<DomainHandle>,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: smoltcp::iface::SocketHandle,
}

fn guest(dom: DomainHandle, mac: [u8; 6], ip: [u8; 4], cfg: FrontConfig, now: Instant) -> Guest {
    let mut nf = Netfront::connect(dom, 0, cfg).unwrap();
    let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    c.random_seed = u64::from(ip[3]);
    let mut iface = Interface::new(c, &mut nf, now);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .unwrap();
    });
    let mut sockets = SocketSet::new(vec![]);
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
    );
    let tcp = sockets.add(sock);
    Guest {
        nf,
        iface,
        sockets,
        tcp,
    }
}

/// Moves `total` bytes from guest A to guest B over TCP; returns the transfer time. Checks that
/// every TCP segment travelled with the checksum state `csum_offload` implies.
fn tcp_transfer(mode: RxMode, mtu: usize, total: usize, csum_offload: bool) -> Duration {
    let (xen, dom0, g) = machine(2);
    let frames_before = xen.free_frames();
    let opts = Opts {
        route: Route::Cross,
        ..Opts::default()
    };
    let be = TestBackend::start(&xen, dom0, &[(g[0].domid(), 0), (g[1].domid(), 0)], opts);
    let start = std::time::Instant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as i64);
    let cfg = FrontConfig {
        rx_mode: mode,
        mtu,
        timeout: Duration::from_secs(10),
        csum_offload,
        ..FrontConfig::default()
    };
    // Connect both frontends in parallel threads: each handshake blocks.
    let (d0, d1) = (g[0].clone(), g[1].clone());
    let c0 = cfg.clone();
    let h =
        std::thread::spawn(move || guest(d0, [2, 0, 0, 0, 0, 1], [10, 0, 0, 1], c0, Instant::ZERO));
    let mut b = guest(d1, [2, 0, 0, 0, 0, 2], [10, 0, 0, 2], cfg, Instant::ZERO);
    let mut a = h.join().unwrap();
    a.sockets
        .get_mut::<tcp::Socket<'_>>(a.tcp)
        .set_nagle_enabled(false);
    b.sockets
        .get_mut::<tcp::Socket<'_>>(b.tcp)
        .listen(5000)
        .unwrap();
    {
        let cx = a.iface.context();
        a.sockets
            .get_mut::<tcp::Socket<'_>>(a.tcp)
            .connect(cx, (Ipv4Address::new(10, 0, 0, 2), 5000), 40000)
            .unwrap();
    }
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::with_capacity(total);
    let mut idle = 0;
    let xfer = std::time::Instant::now();
    for _ in 0..200_000 {
        let t = now();
        let mut progress =
            a.iface.poll(t, &mut a.nf, &mut a.sockets) != smoltcp::iface::PollResult::None;
        progress |= b.iface.poll(t, &mut b.nf, &mut b.sockets) != smoltcp::iface::PollResult::None;
        {
            let s = a.sockets.get_mut::<tcp::Socket<'_>>(a.tcp);
            if s.can_send() && sent < total {
                let n = s.send_slice(&data[sent..]).unwrap();
                sent += n;
                progress |= n > 0;
            }
        }
        {
            let s = b.sockets.get_mut::<tcp::Socket<'_>>(b.tcp);
            while s.can_recv() {
                let n = s
                    .recv(|buf| {
                        got.extend_from_slice(buf);
                        (buf.len(), buf.len())
                    })
                    .unwrap();
                if n == 0 {
                    break;
                }
                progress = true;
            }
        }
        progress |= a.nf.poll().unwrap();
        progress |= b.nf.poll().unwrap();
        if got.len() >= total {
            break;
        }
        if progress {
            idle = 0;
        } else {
            idle += 1;
            // Nothing moved: sleep briefly on one guest's channel (bounded), then the other.
            a.nf.wait(Some(Duration::from_micros(500))).unwrap();
            b.nf.wait(Some(Duration::from_micros(500))).unwrap();
        }
        assert!(
            idle < 5000,
            "transfer stalled at {} of {total} bytes",
            got.len()
        );
    }
    let took = xfer.elapsed();
    assert_eq!(got.len(), total);
    assert!(got == data, "bytes differ");
    // Checksums: with offload every TCP segment left with csum_blank|data_validated and only the
    // pseudo-header sum, and arrived as csum_blank, so nobody summed a payload; without it every
    // segment left whole and was verified by smoltcp.
    let frames = be.frames();
    let flags = be.tx_flags();
    let mut tcp = 0;
    for (i, (_, f)) in frames.iter().enumerate() {
        let Ok(loc) = offload::parse::locate(f) else {
            continue;
        };
        tcp += 1;
        let blank = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
        if csum_offload {
            assert_eq!(flags[i] & !NETTXF_MORE_DATA, blank, "segment {i}");
            let mut whole = f.clone();
            offload::csum::complete(&mut whole).unwrap();
            assert!(offload::csum::verify(&whole), "segment {i} completes");
        } else {
            assert_eq!(flags[i] & !NETTXF_MORE_DATA, 0, "segment {i}");
            assert!(offload::csum::verify(f), "segment {i} is checksummed");
        }
        assert_eq!(loc.l4, offload::parse::L4Kind::Tcp);
    }
    assert!(tcp > 100, "{tcp} TCP segments");
    for s in [a.nf.stats(), b.nf.stats()] {
        if csum_offload {
            assert!(s.rx_csum_blank > 0 && s.tx_csum_blank > 0, "{s:?}");
            assert_eq!(s.rx_csum_verified, 0, "{s:?}");
        } else {
            assert_eq!(
                s.rx_csum_blank + s.tx_csum_blank + s.rx_csum_verified,
                0,
                "{s:?}"
            );
        }
        assert_eq!(s.rx_dropped(), 0, "{s:?}");
    }
    drop((a.iface, a.sockets, b.iface, b.sockets));
    a.nf.close().unwrap();
    b.nf.close().unwrap();
    be.stop();
    assert_eq!(xen.free_frames(), frames_before);
    took
}

#[test]
fn tcp_between_two_guests_copy_mode() {
    tcp_transfer(RxMode::Copy, 1500, 1 << 20, true);
}

#[test]
fn tcp_between_two_guests_without_checksum_offload() {
    tcp_transfer(RxMode::Copy, 1500, 1 << 20, false);
}

/// Prints throughput (no threshold): run with
/// `cargo test --release -p netfront --test smoltcp_tcp -- --ignored --nocapture`.
#[test]
#[ignore]
fn tcp_10mib_throughput_report() {
    for (mode, mtu) in [
        (RxMode::Copy, 1500),
        (RxMode::Flip, 1500),
        (RxMode::Copy, 9000),
        (RxMode::Copy, 65521),
    ] {
        for csum_offload in [false, true] {
            let total = 10 << 20;
            let t = tcp_transfer(mode, mtu, total, csum_offload);
            println!(
                "{mode:?} mtu {mtu} csum_offload {csum_offload}: 10 MiB in {t:?} = {:.2} Gbit/s \
                 (one thread drives both guests)",
                total as f64 * 8.0 / t.as_secs_f64() / 1e9
            );
        }
    }
}

#[test]
fn tcp_between_two_guests_flip_mode() {
    tcp_transfer(RxMode::Flip, 1500, 1 << 20, true);
}

#[test]
fn tcp_between_two_guests_jumbo_multi_slot() {
    tcp_transfer(RxMode::Copy, 9000, 1 << 20, true);
}
