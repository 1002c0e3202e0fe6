//! Offload metadata on the netif rings, both directions, as Linux lays it out.
//!
//! | direction | sender (Linux) | reader (Linux) | here |
//! |---|---|---|---|
//! | guest → backend (tx ring) | netfront `xennet_start_xmit` | netback `xenvif_tx_submit` + `checksum_setup` | [`to_tx`] / [`from_tx`] |
//! | backend → guest (rx ring) | netback `xenvif_rx_data_slot` + `xenvif_rx_next_skb` | netfront `xennet_poll` + `checksum_setup` | [`to_rx`] / [`from_rx`] |
//!
//! Flags: `csum_blank` means the checksum field holds the pseudo-header sum ([`Csum::Partial`]);
//! `data_validated` alone means the data is known good ([`Csum::Validated`]); a sender sets both
//! for a partial checksum. A GSO frame carries one extra-info slot
//! `{ type 1, flags 0, gso { size: MSS, type: 1 TCPv4 | 2 TCPv6, pad 0, features 0 } }` after its
//! first slot, which carries `extra_info`.
//!
//! The readers need the frame's headers (the L4 checksum's position is not on the ring): pass the
//! frame's first bytes, at least through the TCP/UDP header; headers that straddle two pages must
//! be copied into one slice first, as netback copies them into the skb's linear area.

use netif_ring::netif::{
    ExtraInfo, ExtraRepr, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO,
    XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};

use crate::parse;
use crate::{Csum, Error, Gso, GsoKind, OffloadMeta, csum};

/// Bytes of frame data netback puts in each rx slot: one page, from offset 0.
pub const RX_SLOT_DATA: usize = 4096;

/// Reads a tx request's offload flags and optional GSO extra-info slot, as Linux netback does.
///
/// A malformed extra-info slot (type 0 or ≥ MAX, GSO size 0, unknown GSO type) is an error for
/// which [`Error::is_fatal`] is true: netback disables the vif. `csum_blank` on a frame that is
/// not TCP/UDP over IPv4/IPv6 (or is a fragment), or a GSO type that does not match the frame,
/// is an ordinary error: netback answers the request OK and drops the packet. A GSO frame whose
/// sender forgot `csum_blank` has its pseudo-header sum written into `frame` and becomes partial
/// (netback's `rx_gso_checksum_fixup`).
pub fn from_tx(
    flags: u16,
    gso_extra: Option<&ExtraInfo>,
    frame: &mut [u8],
) -> Result<OffloadMeta, Error> {
    checksum_setup(
        flags & NETTXF_CSUM_BLANK != 0,
        flags & NETTXF_DATA_VALIDATED != 0,
        gso_extra,
        frame,
    )
}

/// Reads an rx response's offload flags and optional GSO extra-info slot, as Linux netfront
/// does; same rules as [`from_tx`].
pub fn from_rx(
    flags: u16,
    gso_extra: Option<&ExtraInfo>,
    frame: &mut [u8],
) -> Result<OffloadMeta, Error> {
    checksum_setup(
        flags & NETRXF_CSUM_BLANK != 0,
        flags & NETRXF_DATA_VALIDATED != 0,
        gso_extra,
        frame,
    )
}

/// The first rx response's flags and the GSO extra-info slot for a frame of `frame_len` bytes,
/// exactly as Linux netback lays them out: `csum_blank|data_validated` for a partial checksum,
/// `data_validated` for a validated one, `more_data` when the frame does not fit the first slot's
/// page, `extra_info` and the GSO slot for a GSO frame.
///
/// The backend must only send GSO to a frontend that wrote `feature-gso-tcpv4`/`-tcpv6`;
/// segment the frame ([`crate::gso::segment`]) for one that did not.
pub fn to_rx(meta: &OffloadMeta, frame_len: usize) -> (u16, Option<ExtraInfo>) {
    let mut flags = match meta.csum {
        Csum::Partial { .. } => NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
        Csum::Validated => NETRXF_DATA_VALIDATED,
        Csum::None => 0,
    };
    if frame_len > RX_SLOT_DATA {
        flags |= NETRXF_MORE_DATA;
    }
    let extra = meta.gso.map(|g| {
        flags |= NETRXF_EXTRA_INFO;
        gso_extra(g)
    });
    (flags, extra)
}

/// The first tx request's offload flags and the GSO extra-info slot, as Linux netfront lays them
/// out. `more_data` depends on where the frame's bytes sit in the sender's pages, so the caller
/// adds it.
pub fn to_tx(meta: &OffloadMeta) -> (u16, Option<ExtraInfo>) {
    let mut flags = match meta.csum {
        Csum::Partial { .. } => NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        Csum::Validated => NETTXF_DATA_VALIDATED,
        Csum::None => 0,
    };
    let extra = meta.gso.map(|g| {
        flags |= NETTXF_EXTRA_INFO;
        gso_extra(g)
    });
    (flags, extra)
}

fn gso_extra(g: Gso) -> ExtraInfo {
    let gso_type = match g.kind {
        GsoKind::Tcpv4 => XEN_NETIF_GSO_TYPE_TCPV4,
        GsoKind::Tcpv6 => XEN_NETIF_GSO_TYPE_TCPV6,
    };
    ExtraRepr::Gso {
        size: g.size,
        gso_type,
        features: 0,
    }
    .emit(false)
}

/// Linux's netback/netfront `checksum_setup` after the flags are read.
fn checksum_setup(
    mut blank: bool,
    validated: bool,
    gso_extra: Option<&ExtraInfo>,
    frame: &mut [u8],
) -> Result<OffloadMeta, Error> {
    let gso = match gso_extra {
        None => None,
        Some(info) => match ExtraRepr::parse(info)? {
            ExtraRepr::Gso { size, gso_type, .. } => {
                let kind = if gso_type == XEN_NETIF_GSO_TYPE_TCPV4 {
                    GsoKind::Tcpv4
                } else {
                    GsoKind::Tcpv6
                };
                Some(Gso::new(kind, size))
            }
            _ => {
                return Err(Error::NotGsoExtra {
                    extra_type: info.type_,
                });
            }
        },
    };
    // A GSO frame must be partial; a sender that did not say so gets its pseudo-header sum
    // recalculated.
    let recalculate = gso.is_some() && !blank;
    blank |= recalculate;
    if !blank {
        let csum = if validated {
            Csum::Validated
        } else {
            Csum::None
        };
        return Ok(OffloadMeta { csum, gso });
    }
    let loc = if recalculate {
        csum::set_partial(frame)?
    } else {
        parse::locate(frame)?
    };
    if let Some(g) = gso
        && loc.gso_kind() != Some(g.kind)
    {
        return Err(Error::GsoMismatch { kind: g.kind });
    }
    Ok(OffloadMeta {
        csum: Csum::Partial {
            start: loc.csum_start as u16,
            offset: loc.csum_offset as u16,
        },
        gso,
    })
}
