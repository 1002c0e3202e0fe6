//! Uplinks into Linux as bridge-lite ports: a TAP device (the dom0 stack, like `xenbr0`) and an
//! `AF_PACKET` socket on an existing interface (guests reach a real network, as Xen's bridge
//! setups do). Both wake the backend through their descriptor.

use std::os::fd::AsFd;

use hostnet::{PacketSocket, RecvBatch, Tap, TapConfig};
use netback::pool::NetFrame;
use netback::{Uplink, UplinkIo, UplinkStats, Wakeup};
use ring::netif::{ETH_HLEN, MAX_FRAME};

use crate::cli::UplinkSpec;

/// Frames one receive call may take at most (then the switch runs).
const RX_BURST: usize = 256;
/// Frames per `recvmmsg` on a NIC uplink.
const NIC_BATCH: usize = 4;

/// Opens the uplink `spec` names.
pub fn open<D: hypervisor::BackendDomain>(
    spec: &UplinkSpec,
    default_mtu: u32,
) -> Result<Box<dyn Uplink<D>>, hostnet::Error> {
    Ok(match spec {
        UplinkSpec::Tap { name, addr, mtu } => {
            let cfg = TapConfig {
                vnet_hdr: None,
                offload: 0,
                mtu: Some(mtu.unwrap_or(default_mtu)),
            };
            let tap = Tap::open(name, &cfg)?;
            tap.set_up()?;
            if let Some(a) = addr {
                tap.add_ipv4(a.addr(), a.prefix_len())?;
            }
            log::info!(
                "{}: {} TAP {name} (ifindex {}){}",
                spec.port_name(),
                if tap.created() {
                    "created"
                } else {
                    "attached to"
                },
                tap.ifindex(),
                addr.map_or(String::new(), |a| format!(", address {a}"))
            );
            Box::new(TapUplink::new(
                spec.port_name(),
                tap,
                mtu.unwrap_or(default_mtu),
            ))
        }
        UplinkSpec::Nic { name } => {
            let sock = PacketSocket::bind(name)?;
            log::info!(
                "{}: AF_PACKET on {name} (ifindex {}), promiscuous",
                spec.port_name(),
                sock.ifindex()
            );
            Box::new(NicUplink::new(spec.port_name(), sock))
        }
    })
}

/// Copies one frame from outside into backend buffers, counting what fails.
fn take_in<D: hypervisor::BackendDomain>(
    io: &UplinkIo<'_, D>,
    data: &[u8],
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

/// A TAP device as a switch port.
#[derive(Debug)]
pub struct TapUplink {
    name: String,
    tap: Tap,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    max_frame: usize,
    stats: UplinkStats,
}

impl TapUplink {
    fn new(name: String, tap: Tap, mtu: u32) -> Self {
        Self {
            name,
            tap,
            rx_buf: vec![0; Tap::RECV_BUF_LEN],
            tx_buf: Vec::with_capacity(MAX_FRAME),
            max_frame: (mtu as usize + ETH_HLEN + 4).min(MAX_FRAME),
            stats: UplinkStats::default(),
        }
    }
}

impl<D: hypervisor::BackendDomain> Uplink<D> for TapUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
        let mut taken = 0usize;
        let mut n = 0;
        while n < RX_BURST && taken + self.max_frame <= budget {
            match self.tap.recv(&mut self.rx_buf) {
                Ok(Some(len)) => {
                    n += 1;
                    taken += len;
                    take_in(io, &self.rx_buf[..len], &mut self.stats, out);
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.rx_errors += 1;
                    log::warn!("{}: read failed: {e}", self.name);
                    break;
                }
            }
        }
        n > 0
    }

    fn transmit(&mut self, _io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>) {
        for f in frames.drain(..) {
            if f.0.read_into(&mut self.tx_buf).is_err() {
                self.stats.tx_errors += 1;
                continue;
            }
            match self.tap.send(&self.tx_buf) {
                Ok(_) => {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += self.tx_buf.len() as u64;
                }
                // The kernel's queue is full (or the link is down): dropped, as a NIC drops.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.stats.tx_dropped += 1,
                Err(_) => self.stats.tx_errors += 1,
            }
        }
    }

    fn arm(&mut self) -> bool {
        // The descriptor is level-triggered: the backend's poll sees waiting frames itself.
        false
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Fd(self.tap.as_fd())
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }
}

/// An existing interface, through an `AF_PACKET` socket, as a switch port.
#[derive(Debug)]
pub struct NicUplink {
    name: String,
    sock: PacketSocket,
    batch: RecvBatch,
    tx_buf: Vec<u8>,
    stats: UplinkStats,
}

impl NicUplink {
    fn new(name: String, sock: PacketSocket) -> Self {
        Self {
            name,
            sock,
            // Slots for a full-size frame: a NIC with GRO hands packet sockets its 64 KiB
            // super-frames. Four per call keep one call within a vif queue's room.
            batch: RecvBatch::new(NIC_BATCH, MAX_FRAME),
            tx_buf: Vec::with_capacity(MAX_FRAME),
            stats: UplinkStats::default(),
        }
    }
}

impl<D: hypervisor::BackendDomain> Uplink<D> for NicUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame(&self) -> usize {
        // One receive call takes up to a batch of full-size frames.
        MAX_FRAME * NIC_BATCH
    }

    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
        let mut taken = 0usize;
        let mut any = false;
        let mut calls = 0;
        while calls < RX_BURST / NIC_BATCH && taken + MAX_FRAME * NIC_BATCH <= budget {
            calls += 1;
            match self.sock.recv_batch(&mut self.batch) {
                Ok(0) => break,
                Ok(_) => {
                    any = true;
                    for f in self.batch.iter() {
                        taken += f.len;
                        if f.truncated {
                            self.stats.rx_errors += 1;
                            continue;
                        }
                        take_in(io, f.data, &mut self.stats, out);
                    }
                    if self.batch.len() < self.batch.capacity() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.stats.rx_errors += 1;
                    log::warn!("{}: receive failed: {e}", self.name);
                    break;
                }
            }
        }
        any
    }

    fn transmit(&mut self, _io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>) {
        for f in frames.drain(..) {
            if f.0.read_into(&mut self.tx_buf).is_err() {
                self.stats.tx_errors += 1;
                continue;
            }
            match self.sock.send(&self.tx_buf) {
                Ok(_) => {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += self.tx_buf.len() as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.stats.tx_dropped += 1,
                Err(_) => self.stats.tx_errors += 1,
            }
        }
    }

    fn arm(&mut self) -> bool {
        false
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Fd(self.sock.as_fd())
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }
}
