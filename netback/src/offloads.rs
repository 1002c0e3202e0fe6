//! Offloads at the switch's egress: a frame leaves as it came (a partial checksum, a 64 KiB TCP
//! super-frame) when the port takes it so, and is fixed up only for a port that does not, as
//! Linux's `validate_xmit_skb` does at a device: the checksum completed in place, or the
//! super-frame cut into MSS-sized segments in software.

use hypervisor::{BackendDomain, PAGE_SIZE};
use offload::gso::{MAX_FRAME_LEN, SegCsum, segment};
use offload::{Csum, GsoKind, OffloadMeta};

use crate::pool::{BufPool, NetFrame};
use crate::vif::FrontendOffloads;

/// What a port takes as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepts {
    /// Frames longer than one page (a frontend's `feature-sg`; every uplink).
    pub sg: bool,
    /// IPv4 TCP/UDP frames carrying only a partial checksum.
    pub csum: bool,
    /// IPv6 ones.
    pub ipv6_csum: bool,
    /// TCPv4 super-frames.
    pub gso_tcpv4: bool,
    /// TCPv6 super-frames.
    pub gso_tcpv6: bool,
}

impl Accepts {
    /// A port that wants every frame whole and checksummed, at most its MTU (a plain NIC).
    pub const NONE: Accepts = Accepts {
        sg: true,
        csum: false,
        ipv6_csum: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
    };

    /// A port that takes everything (a TAP with a virtio-net header and TSO offloads).
    pub const ALL: Accepts = Accepts {
        sg: true,
        csum: true,
        ipv6_csum: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
    };

    fn gso(&self, kind: GsoKind) -> bool {
        match kind {
            GsoKind::Tcpv4 => self.gso_tcpv4,
            GsoKind::Tcpv6 => self.gso_tcpv6,
        }
    }
}

impl From<FrontendOffloads> for Accepts {
    fn from(o: FrontendOffloads) -> Accepts {
        Accepts {
            sg: o.sg,
            csum: o.csum,
            ipv6_csum: o.ipv6_csum,
            gso_tcpv4: o.gso_tcpv4,
            gso_tcpv6: o.gso_tcpv6,
        }
    }
}

/// Why a frame could not be made to fit its egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Longer than a page for a frontend without `feature-sg`.
    TooBig,
    /// Its offload metadata does not match its headers (or a page could not be read).
    Offload,
    /// No backend buffers for its segments.
    NoBuffer,
}

/// Reused storage for software segmentation: the super-frame gathered from its pages, and one
/// segment.
pub(crate) struct SegScratch {
    frame: Vec<u8>,
    seg: Vec<u8>,
}

impl SegScratch {
    pub fn new() -> Self {
        Self {
            frame: Vec::new(),
            seg: vec![0; MAX_FRAME_LEN],
        }
    }
}

/// Whether the frame is IPv6 (its EtherType, behind at most one 802.1Q tag).
fn is_ipv6<D: BackendDomain>(f: &NetFrame<D>) -> bool {
    let b = bridge_lite::Frame::bytes(f);
    let et = |at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    match et(12) {
        Some(0x8100) => et(16) == Some(0x86dd),
        t => t == Some(0x86dd),
    }
}

/// Hands `frame` to `out` in a form `to` takes: as it is, with its checksum completed, or cut
/// into segments (each a new frame of `pool`).
pub(crate) fn fit<D: BackendDomain>(
    mut frame: NetFrame<D>,
    to: Accepts,
    pool: &BufPool<D>,
    scratch: &mut SegScratch,
    out: &mut impl FnMut(NetFrame<D>),
) -> Result<(), Unfit> {
    let meta = frame.meta();
    if let Some(g) = meta.gso
        && (!to.gso(g.kind) || !to.sg)
    {
        return segment_into(frame, meta, to, pool, scratch, out);
    }
    if let Csum::Partial { .. } = meta.csum {
        let ok = if is_ipv6(&frame) {
            to.ipv6_csum
        } else {
            to.csum
        };
        if !ok {
            // A frame other ports share keeps its partial sum for them: this port gets a
            // completed copy.
            let buf = frame.make_mut().ok_or(Unfit::Offload)?;
            buf.complete_csum().map_err(|_| Unfit::Offload)?;
        }
    }
    if !to.sg && frame.len() > PAGE_SIZE {
        return Err(Unfit::TooBig);
    }
    out(frame);
    Ok(())
}

/// Software GSO: the super-frame gathered into one buffer, cut with `offload::gso::segment`,
/// each segment written into backend pages of its own.
fn segment_into<D: BackendDomain>(
    frame: NetFrame<D>,
    meta: OffloadMeta,
    to: Accepts,
    pool: &BufPool<D>,
    scratch: &mut SegScratch,
    out: &mut impl FnMut(NetFrame<D>),
) -> Result<(), Unfit> {
    let _s = xenoprof::scope(xenoprof::Class::NETBACK);
    frame
        .0
        .read_into(&mut scratch.frame)
        .map_err(|_| Unfit::Offload)?;
    let partial = if is_ipv6(&frame) {
        to.ipv6_csum
    } else {
        to.csum
    };
    drop(frame);
    let mode = if partial {
        SegCsum::Partial
    } else {
        SegCsum::Complete
    };
    let mut failed = None;
    segment(
        &scratch.frame,
        &meta,
        mode,
        &mut scratch.seg,
        &mut |seg, m| {
            if failed.is_some() {
                return;
            }
            match pool.alloc(seg.len()) {
                Some(mut buf) => {
                    if buf.fill(seg).is_ok() {
                        buf.set_meta(*m);
                        out(NetFrame::new(buf));
                    } else {
                        failed = Some(Unfit::Offload);
                    }
                }
                None => failed = Some(Unfit::NoBuffer),
            }
        },
    )
    .map_err(|_| Unfit::Offload)?;
    failed.map_or(Ok(()), Err)
}
