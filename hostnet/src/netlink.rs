//! Just enough rtnetlink to configure an interface: bring it up, set its MTU or MAC address,
//! put it into a bridge, add an IPv4 address. Safe code over a rustix netlink socket; the socket belongs to the network
//! namespace of the thread that opened it, so a [`Route`] made with a device configures that
//! device's namespace whichever thread calls it later.
//!
//! Netlink rather than `SIOCSIFADDR`: an address is *added* (as `ip addr add` does, and
//! `NLM_F_EXCL` reports a duplicate), where the ioctl replaces the interface's first address.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 0x1;

/// `struct nlmsghdr` (native endian, as all of netlink).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct ifinfomsg`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct IfInfoMsg {
    family: u8,
    pad: u8,
    ty: u16,
    index: i32,
    flags: u32,
    change: u32,
}

/// `struct ifaddrmsg`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct IfAddrMsg {
    family: u8,
    prefixlen: u8,
    flags: u8,
    scope: u8,
    index: u32,
}

const _: () = assert!(size_of::<NlMsgHdr>() == 16);
const _: () = assert!(size_of::<IfInfoMsg>() == 16);
const _: () = assert!(size_of::<IfAddrMsg>() == 8);

/// An rtnetlink socket that sends one request at a time and waits for its acknowledgement.
#[derive(Debug)]
pub(crate) struct Route {
    fd: OwnedFd,
    seq: u32,
}

/// One request being built: header, fixed body, attributes (each padded to 4 bytes).
struct Request(Vec<u8>);

impl Request {
    fn new(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Self {
        let hdr = NlMsgHdr {
            len: 0,
            ty,
            flags: NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            pid: 0,
        };
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(hdr.as_bytes());
        buf.extend_from_slice(body);
        Request(buf)
    }

    fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

impl Route {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Route { fd, seq: 0 })
    }

    /// Sets (or clears) `IFF_UP` on `ifindex`.
    pub(crate) fn set_up(&mut self, ifindex: u32, up: bool) -> io::Result<()> {
        let body = link_msg(ifindex, if up { IFF_UP } else { 0 }, IFF_UP)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWLINK, 0, seq, body.as_bytes()).finish();
        self.transact(&req, seq)
    }

    /// Sets the MTU of `ifindex`.
    pub(crate) fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> io::Result<()> {
        let body = link_msg(ifindex, 0, 0)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWLINK, 0, seq, body.as_bytes())
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .finish();
        self.transact(&req, seq)
    }

    /// Sets the MAC address of `ifindex` (`ip link set DEV address MAC`).
    pub(crate) fn set_address(&mut self, ifindex: u32, mac: [u8; 6]) -> io::Result<()> {
        let body = link_msg(ifindex, 0, 0)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWLINK, 0, seq, body.as_bytes())
            .attr(IFLA_ADDRESS, &mac)
            .finish();
        self.transact(&req, seq)
    }

    /// Makes `master` (a bridge's index) the master of `ifindex` (`ip link set DEV master
    /// BRIDGE`); `EOPNOTSUPP` if `master` takes no ports.
    pub(crate) fn set_master(&mut self, ifindex: u32, master: u32) -> io::Result<()> {
        let body = link_msg(ifindex, 0, 0)?;
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWLINK, 0, seq, body.as_bytes())
            .attr(IFLA_MASTER, &master.to_ne_bytes())
            .finish();
        self.transact(&req, seq)
    }

    /// Adds `addr/prefix_len` to `ifindex`; `EEXIST` if it is already there.
    pub(crate) fn add_ipv4(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> io::Result<()> {
        let body = IfAddrMsg {
            family: libc::AF_INET as u8,
            prefixlen: prefix_len,
            flags: 0,
            scope: 0, // RT_SCOPE_UNIVERSE
            index: ifindex,
        };
        let seq = self.next_seq();
        let req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body.as_bytes())
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
            .finish();
        self.transact(&req, seq)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` and reads until the acknowledgement carrying `seq`: `Ok` for errno 0.
    fn transact(&self, req: &[u8], seq: u32) -> io::Result<()> {
        rustix::net::send(&self.fd, req, SendFlags::empty())?;
        let mut buf = [0u8; 8192];
        loop {
            let (got, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            if let Some(errno) = find_ack(&buf[..got], seq)? {
                return match errno {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
        }
    }
}

impl AsFd for Route {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn link_msg(ifindex: u32, flags: u32, change: u32) -> io::Result<IfInfoMsg> {
    let index = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    Ok(IfInfoMsg {
        family: libc::AF_UNSPEC as u8,
        pad: 0,
        ty: 0,
        index,
        flags,
        change,
    })
}

/// Walks the messages in one datagram; returns the positive errno of the `NLMSG_ERROR` that
/// acknowledges `seq` (0 = success), or `None` when this datagram holds no such message.
fn find_ack(mut dgram: &[u8], seq: u32) -> io::Result<Option<i32>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
    while !dgram.is_empty() {
        let (hdr, _) = NlMsgHdr::read_from_prefix(dgram).map_err(|_| bad())?;
        let len = hdr.len as usize;
        if len < size_of::<NlMsgHdr>() || len > dgram.len() {
            return Err(bad());
        }
        if hdr.ty == NLMSG_ERROR && hdr.seq == seq {
            let payload = &dgram[size_of::<NlMsgHdr>()..len];
            let (error, _) = i32::read_from_prefix(payload).map_err(|_| bad())?;
            return Ok(Some(error.saturating_neg()));
        }
        dgram = dgram.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let req = Request::new(RTM_NEWLINK, 0, 7, &[0xaa; 16])
            .attr(IFLA_MTU, &9000u32.to_ne_bytes())
            .attr(99, &[1])
            .finish();
        // 16 header + 16 body + 8 (MTU attr) + 8 (5-byte attr padded to 8).
        assert_eq!(req.len(), 48);
        let (hdr, _) = NlMsgHdr::read_from_prefix(&req[..]).unwrap();
        assert_eq!(hdr.len, 48);
        assert_eq!(hdr.seq, 7);
        assert_eq!(hdr.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(&req[32..34], &8u16.to_ne_bytes());
        assert_eq!(&req[36..40], &9000u32.to_ne_bytes());
        assert_eq!(&req[40..42], &5u16.to_ne_bytes());
        assert_eq!(&req[45..48], &[0, 0, 0]);
    }

    fn ack(seq: u32, error: i32) -> Vec<u8> {
        let hdr = NlMsgHdr {
            len: 36,
            ty: NLMSG_ERROR,
            flags: 0,
            seq,
            pid: 0,
        };
        let mut v = hdr.as_bytes().to_vec();
        v.extend_from_slice(&error.to_ne_bytes());
        v.extend_from_slice(&[0; 16]);
        v
    }

    #[test]
    fn acks_are_matched_by_sequence() {
        let mut dgram = ack(3, 0);
        dgram.extend(ack(4, -libc::EEXIST));
        assert_eq!(find_ack(&dgram, 4).unwrap(), Some(libc::EEXIST));
        assert_eq!(find_ack(&dgram, 3).unwrap(), Some(0));
        assert_eq!(find_ack(&dgram, 5).unwrap(), None);
        // A length running past the datagram is refused, not followed.
        let mut bad = ack(1, 0);
        bad[0] = 200;
        assert!(find_ack(&bad, 1).is_err());
    }
}
