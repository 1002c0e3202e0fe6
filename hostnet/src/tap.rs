//! A Linux TAP device: an Ethernet interface of the host whose wire is a file descriptor.
//!
//! Frames read from the TAP are what the host's stack transmits on it; frames written to it are
//! received by the host's stack. One frame per `recv`/`send`, with no packet-information
//! prefix (`IFF_NO_PI`), and with the [virtio-net header](crate::vnet) first when
//! [`TapConfig::vnet_hdr`] is set.
//!
//! A TAP lives in the network namespace of the thread that opens it; [`Tap`] keeps an rtnetlink
//! socket from that namespace, so its configuration methods work from any thread.
//!
//! A TAP goes when its last descriptor closes, unless it is persistent ([`TapConfig::persist`],
//! [`Tap::set_persist`]): then it stays, with no carrier, for the next [`Tap::open`] or
//! [`Tap::attach`] of its name, until [`delete`] (or `ip tuntap del`) removes it.

use std::io::{self, IoSlice};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::denied;
use crate::netlink::Route;
use crate::sys::{self, IfReq};
use crate::vnet::HdrLen;
use crate::{Error, iface};

/// `TUN_F_*` flags for [`TapConfig::offload`]: what this reader can take from the host's stack.
pub mod offload {
    /// `TUN_F_CSUM`: frames may carry a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub const CSUM: u32 = 0x01;
    /// `TUN_F_TSO4`: TCP/IPv4 frames may be GSO super-frames (needs `CSUM`).
    pub const TSO4: u32 = 0x02;
    /// `TUN_F_TSO6`: TCP/IPv6 frames may be GSO super-frames (needs `CSUM`).
    pub const TSO6: u32 = 0x04;
    /// `TUN_F_TSO_ECN`: TSO frames may have CWR set (needs a TSO flag).
    pub const TSO_ECN: u32 = 0x08;
    /// `TUN_F_UFO`: UDP fragmentation offload (needs `CSUM`; most kernels refuse it now).
    pub const UFO: u32 = 0x10;
    /// `TUN_F_USO4`: UDP/IPv4 segmentation offload (needs `CSUM`; Linux 6.2+).
    pub const USO4: u32 = 0x20;
    /// `TUN_F_USO6`: UDP/IPv6 segmentation offload (needs `CSUM`; Linux 6.2+).
    pub const USO6: u32 = 0x40;
    /// Every flag this module knows.
    pub const ALL: u32 = CSUM | TSO4 | TSO6 | TSO_ECN | UFO | USO4 | USO6;
}

const IFF_TAP: u16 = libc::IFF_TAP as u16;
const IFF_NO_PI: u16 = libc::IFF_NO_PI as u16;
const IFF_VNET_HDR: u16 = libc::IFF_VNET_HDR as u16;
const IFF_TUN_EXCL: u16 = libc::IFF_TUN_EXCL as u16;

/// How to open a [`Tap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapConfig {
    /// Put a virtio-net header of this size before every frame (`IFF_VNET_HDR`,
    /// `TUNSETVNETHDRSZ`); `None` for bare Ethernet frames.
    pub vnet_hdr: Option<HdrLen>,
    /// The [`offload`] flags (`TUNSETOFFLOAD`); non-zero needs `vnet_hdr`. Always applied, so
    /// an attached persistent TAP does not keep a previous user's offloads.
    pub offload: u32,
    /// Set this MTU after opening.
    pub mtu: Option<u32>,
    /// Make the device persistent (`TUNSETPERSIST`): it outlives this process, and a later
    /// open of the same name attaches to it. Remove it with [`delete`].
    pub persist: bool,
}

impl TapConfig {
    fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| {
            Err(Error::BadConfig {
                what: what.to_owned(),
            })
        };
        let o = self.offload;
        if o & !offload::ALL != 0 {
            return bad("unknown TUN_F_* offload bits: use the constants in hostnet::tap::offload");
        }
        if o != 0 && self.vnet_hdr.is_none() {
            return bad("offloads need the virtio-net header to describe them: set vnet_hdr");
        }
        if o & !offload::CSUM != 0 && o & offload::CSUM == 0 {
            return bad("TSO, UFO and USO offloads need offload::CSUM as well");
        }
        if o & offload::TSO_ECN != 0 && o & (offload::TSO4 | offload::TSO6) == 0 {
            return bad("offload::TSO_ECN needs offload::TSO4 or offload::TSO6");
        }
        Ok(())
    }
}

/// An open TAP device (see the [module docs](self)).
///
/// Dropping it closes the file descriptor: a TAP that is not [persistent](Tap::set_persist)
/// then disappears; a persistent one stays (down to no carrier) for the next open.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    route: Mutex<Route>,
    name: String,
    ifindex: u32,
    created: bool,
    vnet_hdr: Option<HdrLen>,
}

impl Tap {
    /// A receive buffer this long holds any frame a TAP hands out, with any header and offload
    /// (a 64 KiB GSO super-frame plus Ethernet, VLAN tag and a 12-byte header).
    pub const RECV_BUF_LEN: usize = 12 + 14 + 4 + 65535;

    /// Creates TAP `name`, or attaches to an existing persistent TAP of that name, in the calling
    /// thread's network namespace. The descriptor is non-blocking.
    ///
    /// Errors: [`Error::BadName`], [`Error::NoTunDevice`], [`Error::NotPermitted`],
    /// [`Error::NameInUse`] (a non-TAP device has the name), [`Error::TapBusy`] (someone else
    /// is attached), [`Error::BadConfig`], or [`Error::Io`].
    pub fn open(name: &str, config: &TapConfig) -> Result<Tap, Error> {
        iface::check_name(name)?;
        config.check()?;
        let fd = open_tun(name)?;
        // First ask for a new device only (IFF_TUN_EXCL): success means we created it. EBUSY
        // means the name exists; then attach, which succeeds only for a free TAP.
        let mut req = IfReq::new(name.as_bytes());
        req.set_flags(tap_flags(config) | IFF_TUN_EXCL);
        let created = match sys::tun_set_iff(fd.as_fd(), &mut req) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                req = attach_iff(&fd, name, config)?;
                false
            }
            Err(e) => return Err(Error::io("creating TAP", name, e, denied::NET_ADMIN)),
        };
        let route = Route::open()
            .map_err(|e| Error::io("opening rtnetlink", name, e, denied::NET_ADMIN))?;
        Tap::set_up_fd(fd, route, &req, created, config)
    }

    /// Attaches to the existing TAP `name` and never creates one: for a TAP someone else made
    /// (QEMU's `vif<domid>.<devid>-emu`, or a persistent one a previous run left). The
    /// descriptor is non-blocking.
    ///
    /// Errors: [`Error::NoSuchTap`] when there is none, otherwise as [`Tap::open`].
    pub fn attach(name: &str, config: &TapConfig) -> Result<Tap, Error> {
        iface::check_name(name)?;
        config.check()?;
        let route = Route::open()
            .map_err(|e| Error::io("opening rtnetlink", name, e, denied::NET_ADMIN))?;
        let no_tap = |e| match e {
            Error::NoSuchInterface { name } => Error::NoSuchTap { name },
            e => e,
        };
        let before = iface::index(&route, name, denied::NET_ADMIN).map_err(no_tap)?;
        let fd = open_tun(name)?;
        // Without IFF_TUN_EXCL, TUNSETIFF would also create the device had it gone since the
        // lookup: a new device has a new index, and closing our descriptor removes it again.
        let req = attach_iff(&fd, name, config)?;
        if iface::index(&route, name, denied::NET_ADMIN).ok() != Some(before) {
            return Err(Error::NoSuchTap {
                name: name.to_owned(),
            });
        }
        Tap::set_up_fd(fd, route, &req, false, config)
    }

    /// The rest of opening, once `fd` is attached to the device `req` names.
    fn set_up_fd(
        fd: OwnedFd,
        route: Route,
        req: &IfReq,
        created: bool,
        config: &TapConfig,
    ) -> Result<Tap, Error> {
        // The kernel writes back the final name (it expands a `%d` pattern).
        let name = String::from_utf8_lossy(req.name()).into_owned();

        if let Some(len) = config.vnet_hdr {
            let size = len.bytes() as libc::c_int;
            sys::tun_set_vnet_hdr_sz(fd.as_fd(), size)
                .map_err(|e| Error::io("TUNSETVNETHDRSZ", &name, e, denied::NET_ADMIN))?;
            sys::tun_set_vnet_le(fd.as_fd())
                .map_err(|e| Error::io("TUNSETVNETLE", &name, e, denied::NET_ADMIN))?;
        }
        sys::tun_set_offload(fd.as_fd(), config.offload).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => Error::BadConfig {
                what: format!("the kernel refused offloads {:#x} on {name}: drop the ones it lacks (UFO, USO)", config.offload),
            },
            _ => Error::io("TUNSETOFFLOAD", &name, e, denied::NET_ADMIN),
        })?;

        let ifindex = iface::index(&route, &name, denied::NET_ADMIN)?;
        let tap = Tap {
            fd,
            route: Mutex::new(route),
            name,
            ifindex,
            created,
            vnet_hdr: config.vnet_hdr,
        };
        if let Some(mtu) = config.mtu {
            tap.set_mtu(mtu)?;
        }
        // Last: a device this call created and then failed to set up goes with the descriptor.
        if config.persist {
            tap.set_persist(true)?;
        }
        Ok(tap)
    }

    /// The interface's name as the kernel has it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index in its network namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether this handle created the device rather than attaching to an existing persistent
    /// one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The virtio-net header before each frame, if any.
    pub fn vnet_hdr(&self) -> Option<HdrLen> {
        self.vnet_hdr
    }

    /// The virtio-net header's length in bytes (0 without one).
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr.map_or(0, HdrLen::bytes)
    }

    /// The interface's MAC address (the host side's; a frame for the host carries it).
    pub fn mac(&self) -> Result<[u8; 6], Error> {
        sys::hw_addr(self.route().as_fd(), self.name.as_bytes())
            .map_err(|e| Error::io("SIOCGIFHWADDR", &self.name, e, denied::NET_ADMIN))
    }

    /// Brings the interface up (`ip link set NAME up`).
    pub fn set_up(&self) -> Result<(), Error> {
        self.route()
            .set_up(self.ifindex, true)
            .map_err(|e| Error::io("setting interface up", &self.name, e, denied::NET_ADMIN))
    }

    /// Makes the device outlive its last descriptor (`TUNSETPERSIST`), or not: a persistent
    /// TAP stays, down to no carrier, when this handle closes, and a later [`Tap::open`] or
    /// [`Tap::attach`] of the name finds it; clearing it makes the device go when the last
    /// descriptor closes (see [`delete`]).
    pub fn set_persist(&self, persist: bool) -> Result<(), Error> {
        sys::tun_set_persist(self.fd.as_fd(), persist)
            .map_err(|e| Error::io("TUNSETPERSIST", &self.name, e, denied::NET_ADMIN))
    }

    /// Sets the interface's MAC address (`ip link set NAME address MAC`): the host side's.
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), Error> {
        self.route()
            .set_address(self.ifindex, mac)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EADDRNOTAVAIL | libc::EINVAL) => Error::BadConfig {
                    what: format!(
                        "the kernel refused MAC {} for {}: use a unicast address",
                        mac.map(|b| format!("{b:02x}")).join(":"),
                        self.name
                    ),
                },
                _ => Error::io("setting MAC address", &self.name, e, denied::NET_ADMIN),
            })
    }

    /// Sets the interface's MTU (`ip link set NAME mtu MTU`).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), Error> {
        self.route()
            .set_mtu(self.ifindex, mtu)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => Error::BadConfig {
                    what: format!(
                        "MTU {mtu} is out of range for {}: use 68 to 65521",
                        self.name
                    ),
                },
                _ => Error::io("setting MTU", &self.name, e, denied::NET_ADMIN),
            })
    }

    /// Adds an IPv4 address to the interface (`ip addr add ADDR/PREFIX dev NAME`).
    pub fn add_ipv4(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), Error> {
        if prefix_len > 32 {
            return Err(Error::BadConfig {
                what: format!("prefix length {prefix_len} for {addr}: use 0 to 32"),
            });
        }
        self.route()
            .add_ipv4(self.ifindex, addr, prefix_len)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) => Error::AddressInUse {
                    name: self.name.clone(),
                    addr,
                    prefix_len,
                },
                _ => Error::io("adding address", &self.name, e, denied::NET_ADMIN),
            })
    }

    fn route(&self) -> std::sync::MutexGuard<'_, Route> {
        self.route.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads one frame (virtio-net header first, if enabled) into `buf`. `Ok(None)` when none
    /// is waiting. Linux cuts a frame longer than `buf` without any sign, so `buf` must hold the
    /// largest frame: the header + MTU + 18 (Ethernet and a VLAN tag), or
    /// [`RECV_BUF_LEN`](Tap::RECV_BUF_LEN) with TSO offloads.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match rustix::io::read(&self.fd, buf) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes one frame (virtio-net header first, if enabled). Fails with EIO while the
    /// interface is down.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(&self.fd, frame)?)
    }

    /// Writes one frame gathered from `parts` (for example the header and the frame).
    pub fn send_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(&self.fd, parts)?)
    }
}

/// Opens `/dev/net/tun`, non-blocking (for device `name`, in errors).
fn open_tun(name: &str) -> Result<OwnedFd, Error> {
    rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::NODEV | Errno::NXIO => Error::NoTunDevice,
        e => Error::io("opening /dev/net/tun", name, e, denied::TUN_DEVICE),
    })
}

/// The `TUNSETIFF` flags for `config`: a TAP without packet information, with the virtio-net
/// header if asked.
fn tap_flags(config: &TapConfig) -> u16 {
    let mut flags = IFF_TAP | IFF_NO_PI;
    if config.vnet_hdr.is_some() {
        flags |= IFF_VNET_HDR;
    }
    flags
}

/// `TUNSETIFF` without `IFF_TUN_EXCL` on `fd`: attaches to TAP `name` (which the caller knows
/// exists). Returns the request as the kernel wrote it back.
fn attach_iff(fd: &OwnedFd, name: &str, config: &TapConfig) -> Result<IfReq, Error> {
    let mut req = IfReq::new(name.as_bytes());
    req.set_flags(tap_flags(config));
    sys::tun_set_iff(fd.as_fd(), &mut req).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => Error::NameInUse {
            name: name.to_owned(),
        },
        Some(libc::EBUSY) => Error::TapBusy {
            name: name.to_owned(),
        },
        _ => Error::io("attaching to TAP", name, e, denied::NET_ADMIN),
    })?;
    Ok(req)
}

/// Deletes the persistent TAP `name` (one made with [`TapConfig::persist`], or by `ip tuntap
/// add`): attaches to it, clears its persistence and closes it, and the kernel deletes a
/// TAP that is not persistent when its last descriptor closes. `Ok(false)` when there is no
/// TAP of that name. It must be free: [`Error::TapBusy`] while someone is attached.
pub fn delete(name: &str) -> Result<bool, Error> {
    match Tap::attach(name, &TapConfig::default()) {
        Ok(tap) => {
            tap.set_persist(false)?;
            Ok(true)
        }
        Err(Error::NoSuchTap { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_the_kernel_would_refuse_are_caught_first() {
        let vnet = Some(HdrLen::Legacy);
        let cases = [
            (
                TapConfig {
                    offload: offload::CSUM,
                    ..Default::default()
                },
                false,
            ),
            (
                TapConfig {
                    vnet_hdr: vnet,
                    offload: offload::TSO4,
                    ..Default::default()
                },
                false,
            ),
            (
                TapConfig {
                    vnet_hdr: vnet,
                    offload: 0x100,
                    ..Default::default()
                },
                false,
            ),
            (
                TapConfig {
                    vnet_hdr: vnet,
                    offload: offload::CSUM | offload::TSO_ECN,
                    ..Default::default()
                },
                false,
            ),
            (
                TapConfig {
                    vnet_hdr: vnet,
                    offload: offload::CSUM | offload::TSO4 | offload::TSO6,
                    ..Default::default()
                },
                true,
            ),
            (
                TapConfig {
                    vnet_hdr: vnet,
                    ..Default::default()
                },
                true,
            ),
            (TapConfig::default(), true),
        ];
        for (config, ok) in cases {
            assert_eq!(config.check().is_ok(), ok, "{config:?}");
        }
    }
}
