//! Uplinks into Linux as bridge-lite ports: a TAP device (the dom0 stack, like `xenbr0`) and an
//! `AF_PACKET` socket on an existing interface (guests reach a real network, as Xen's bridge
//! setups do). Both wake the backend through their descriptor.
//!
//! Both carry offloads by default, as a virtio-net header before every frame (`vnet.rs`): what
//! Linux hands up (a partial checksum, a TCP super-frame of up to 64 KiB) becomes the frame's
//! [`OffloadMeta`], and a frame leaving with a partial checksum or as a super-frame goes to
//! Linux as it is, with a header saying so; Linux completes or segments it only if the
//! interface behind needs it. With `offload=off` frames cross whole and checksummed (netback
//! completes checksums and segments super-frames in software for such a port).

mod gro;
mod nic;
mod tap;
mod vnet;

use std::io::IoSlice;

use hostnet::{PacketConfig, PacketSocket, Tap, TapConfig};
use netback::UplinkStats;
use netback::pool::NetFrame;
use netif_ring::netif::{ETH_HLEN, MAX_FRAME};
use offload::OffloadMeta;

use crate::cli::UplinkSpec;

pub use nic::NicUplink;
pub(crate) use tap::OFFLOADS as TAP_OFFLOADS;
pub use tap::TapUplink;

/// Frames one receive call may take at most (then the switch runs).
const RX_BURST: usize = 256;

/// Opens the uplink `spec` names.
pub fn open<D: hypervisor::BackendDomain>(
    spec: &UplinkSpec,
    default_mtu: u32,
) -> Result<Box<dyn netback::Uplink<D>>, hostnet::Error> {
    Ok(match spec {
        UplinkSpec::Tap {
            name,
            addr,
            mtu,
            offload,
            ..
        } => {
            let mtu = mtu.unwrap_or(default_mtu);
            let cfg = TapConfig {
                vnet_hdr: offload.then_some(hostnet::vnet::HdrLen::Legacy),
                offload: if *offload { tap::OFFLOADS } else { 0 },
                mtu: Some(mtu),
                // An uplink goes with netbackd; vif netdevs persist (netdevs.rs).
                persist: false,
            };
            let tap = Tap::open(name, &cfg)?;
            tap.set_up()?;
            if let Some(a) = addr {
                tap.add_ipv4(a.addr(), a.prefix_len())?;
            }
            log::info!(
                "{}: {} TAP {name} (ifindex {}){}, offloads {}",
                spec.port_name(),
                if tap.created() {
                    "created"
                } else {
                    "attached to"
                },
                tap.ifindex(),
                addr.map_or(String::new(), |a| format!(", address {a}")),
                if *offload {
                    "on (checksum, TSO4, TSO6)"
                } else {
                    "off"
                }
            );
            Box::new(TapUplink::new(spec.port_name(), tap, cfg.offload, mtu))
        }
        UplinkSpec::Nic { name, offload, .. } => {
            Box::new(open_nic(spec.port_name(), name, *offload)?)
        }
    })
}

/// Binds an AF_PACKET socket on the existing interface `name` as port `port` (with the
/// virtio-net header if `offload` and the kernel has it).
pub(crate) fn open_nic(
    port: String,
    name: &str,
    offload: bool,
) -> Result<NicUplink, hostnet::Error> {
    let sock = if offload {
        match PacketSocket::bind_with(name, &PacketConfig { vnet_hdr: true }) {
            Err(hostnet::Error::BadConfig { what }) => {
                log::warn!("{port}: {what}; offloads off");
                PacketSocket::bind(name)?
            }
            r => r?,
        }
    } else {
        PacketSocket::bind(name)?
    };
    log::info!(
        "{port}: AF_PACKET on {name} (ifindex {}), promiscuous, offloads {}",
        sock.ifindex(),
        if sock.vnet_hdr().is_some() {
            "on (checksum, TSO4, TSO6)"
        } else {
            "off"
        }
    );
    Ok(NicUplink::new(port, sock))
}

/// Copies one frame from outside into backend buffers with its offload metadata, counting what
/// fails.
fn take_in<D: hypervisor::BackendDomain>(
    io: &netback::UplinkIo<'_, D>,
    data: &[u8],
    meta: OffloadMeta,
    stats: &mut UplinkStats,
    out: &mut Vec<NetFrame<D>>,
) {
    if data.len() < ETH_HLEN || data.len() > MAX_FRAME {
        stats.rx_errors += 1;
        return;
    }
    match io.pool.alloc(data.len()) {
        Some(mut buf) => {
            if buf.fill(data).is_ok() {
                buf.set_meta(meta);
                stats.rx_frames += 1;
                stats.rx_bytes += data.len() as u64;
                out.push(NetFrame::new(buf));
            } else {
                stats.rx_fill_errors += 1;
            }
        }
        None => stats.rx_no_buffer += 1,
    }
}

/// Takes one received buffer (`hdr_len` bytes of virtio-net header, then the frame) in, its
/// header mapped to the frame's metadata; a header that does not fit its frame is an error.
fn take_in_with_hdr<D: hypervisor::BackendDomain>(
    io: &netback::UplinkIo<'_, D>,
    buf: &[u8],
    hdr_len: usize,
    stats: &mut UplinkStats,
    out: &mut Vec<NetFrame<D>>,
) {
    if hdr_len == 0 {
        take_in(io, buf, OffloadMeta::NONE, stats, out);
        return;
    }
    match vnet::split_rx(buf) {
        Ok((meta, frame)) => take_in(io, frame, meta, stats, out),
        Err(e) => {
            stats.rx_errors += 1;
            log::debug!("dropped a frame whose virtio-net header does not fit it: {e}");
        }
    }
}

/// Sends `frames` out, one per `send` call: the virtio-net header first when `hdr_len` says the
/// port carries one (the frame goes as it is, the header saying what is left to do), else the
/// bare frame. A full kernel queue (`WouldBlock`) is a drop, as a NIC drops; other failures
/// are errors.
fn send_out<D: hypervisor::BackendDomain>(
    frames: &mut Vec<NetFrame<D>>,
    tx_buf: &mut Vec<u8>,
    hdr_len: usize,
    stats: &mut UplinkStats,
    send: impl Fn(&[IoSlice<'_>]) -> std::io::Result<usize>,
) {
    for f in frames.drain(..) {
        if f.0.read_into(tx_buf).is_err() {
            stats.tx_errors += 1;
            continue;
        }
        send_one(tx_buf, &f.meta(), hdr_len, stats, &send);
    }
}

/// Sends one frame (with the virtio-net header for `meta` when `hdr_len` says the port carries
/// one) in one `send` call, counting what became of it.
fn send_one(
    frame: &[u8],
    meta: &OffloadMeta,
    hdr_len: usize,
    stats: &mut UplinkStats,
    send: &dyn Fn(&[IoSlice<'_>]) -> std::io::Result<usize>,
) {
    let sent = if hdr_len == vnet::HDR_LEN {
        let Ok(hdr) = vnet::tx_header(meta, frame) else {
            stats.tx_errors += 1;
            return;
        };
        send(&[IoSlice::new(&hdr), IoSlice::new(frame)])
    } else {
        send(&[IoSlice::new(frame)])
    };
    match sent {
        Ok(_) => {
            stats.tx_frames += 1;
            stats.tx_bytes += frame.len() as u64;
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stats.tx_dropped += 1,
        Err(_) => stats.tx_errors += 1,
    }
}
