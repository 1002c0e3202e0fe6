//! The crate's audited module: the TUN/TAP ioctls and AF_PACKET calls that have no safe wrapper
//! in rustix or std. Everything else (open, read/write, sockets, netlink, setns, poll) goes
//! through rustix.
//!
//! Each function takes typed, borrowed arguments, hands the kernel pointers only to memory it
//! owns or borrows for the call, and returns `io::Result`. None keeps a pointer past its return.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// `IFNAMSIZ`: an interface name with its NUL.
pub(crate) const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// `SIOCGIFHWADDR` (linux/sockios.h); the libc crate exports it only for Android.
const SIOCGIFHWADDR: libc::Ioctl = 0x8927;

/// `struct ifreq`: the interface name, then a union (flags, a sockaddr, ...) viewed as bytes.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct IfReq {
    /// NUL-terminated interface name.
    pub name: [u8; IFNAMSIZ],
    /// `ifr_ifru`: `ifr_flags` is its first two bytes, `ifr_hwaddr` a `struct sockaddr`.
    pub data: [u8; size_of::<libc::ifreq>() - IFNAMSIZ],
}

const _: () = assert!(size_of::<IfReq>() == size_of::<libc::ifreq>());
const _: () = assert!(size_of::<libc::sockaddr>() <= size_of::<libc::ifreq>() - IFNAMSIZ);

impl IfReq {
    /// A request naming `name` (already validated to fit with its NUL), union zeroed.
    pub(crate) fn new(name: &[u8]) -> Self {
        let mut req = IfReq::new_zeroed();
        let n = name.len().min(IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name[..n]);
        req
    }

    /// Sets `ifr_flags`.
    pub(crate) fn set_flags(&mut self, flags: u16) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    /// The name up to its NUL.
    pub(crate) fn name(&self) -> &[u8] {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        &self.name[..end]
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `TUNSETIFF`: create or attach the device named in `req`; the kernel writes the final name back.
pub(crate) fn tun_set_iff(tun: BorrowedFd<'_>, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is exactly that size (asserted
    // above) and is exclusively borrowed for the call.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, req as *mut IfReq) })?;
    Ok(())
}

/// `TUNSETOFFLOAD`: the `TUN_F_*` offloads this reader accepts; the argument is passed by value.
pub(crate) fn tun_set_offload(tun: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument as an integer, not a pointer; no memory is shared.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    })?;
    Ok(())
}

/// `TUNSETPERSIST`: whether the device outlives its last open descriptor; the argument is
/// passed by value. Clearing it on an attached descriptor makes the device go when that
/// descriptor closes.
pub(crate) fn tun_set_persist(tun: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument as an integer, not a pointer; no memory is
    // shared.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETPERSIST,
            libc::c_ulong::from(persist),
        )
    })?;
    Ok(())
}

/// `TUNSETVNETHDRSZ`: the size of the virtio-net header before each frame.
pub(crate) fn tun_set_vnet_hdr_sz(tun: BorrowedFd<'_>, size: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points at a live local.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &size as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// `TUNSETVNETLE`: little-endian header fields whatever the host's byte order.
pub(crate) fn tun_set_vnet_le(tun: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: TUNSETVNETLE reads one `int` through the pointer, which points at a live local.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETVNETLE,
            &on as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// `SIOCGIFHWADDR` on any socket of the interface's namespace: its MAC address.
pub(crate) fn hw_addr(sock: BorrowedFd<'_>, name: &[u8]) -> io::Result<[u8; 6]> {
    let mut req = IfReq::new(name);
    // SAFETY: SIOCGIFHWADDR reads the name from and writes a `struct sockaddr` into one
    // `struct ifreq`, which `req` is (size asserted above), exclusively borrowed for the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR, &mut req as *mut IfReq) })?;
    // `struct sockaddr`: a 2-byte family, then the address bytes.
    let mut mac = [0; 6];
    mac.copy_from_slice(&req.data[2..8]);
    Ok(mac)
}

/// `setsockopt` of a plain `int` option.
pub(crate) fn set_int_opt(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_opt(sock, level, name, &value)
}

/// `PACKET_ADD_MEMBERSHIP` of type `mr_type` on `ifindex` (no address: promiscuous, all-multi).
pub(crate) fn packet_add_membership(
    sock: BorrowedFd<'_>,
    ifindex: u32,
    mr_type: libc::c_int,
) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex_c(ifindex)?,
        mr_type: mr_type as libc::c_ushort,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    set_opt(sock, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

fn set_opt<T: Copy>(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes from `value`, a live borrowed `T`; callers
    // pass the C type the option is defined with (int, packet_mreq).
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `PACKET_STATISTICS`: `(packets, drops)` since the last read (reading resets them);
/// `packets` includes the drops.
pub(crate) fn packet_statistics(sock: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `st`, a live local of that size, and
    // writes the length it used into `len`, also a live local.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok((st.tp_packets, st.tp_drops))
}

fn ifindex_c(ifindex: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))
}

/// Binds an AF_PACKET socket to `ifindex`, receiving `protocol` (host order, e.g. `ETH_P_ALL`).
pub(crate) fn packet_bind(sock: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain integers and bytes; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex_c(ifindex)?;
    // SAFETY: the kernel reads `size_of::<sockaddr_ll>()` bytes from `sll`, a live local.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The most messages one `recvmmsg`/`sendmmsg` call here handles (the arrays live on the stack).
pub(crate) const MMSG_MAX: usize = 64;

/// What `recvmmsg` reports for one frame.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecvMeta {
    /// The frame's length on the wire (more than its slot when truncated).
    pub len: usize,
    /// `MSG_TRUNC`: the slot was too short and the frame was cut.
    pub truncated: bool,
    /// `sll_pkttype` (`PACKET_HOST`, `PACKET_BROADCAST`, ...).
    pub pkttype: u8,
}

/// Non-blocking `recvmmsg` into consecutive `slot`-byte slots of `buf`, one frame per slot, at
/// most `meta.len()` (and [`MMSG_MAX`]) frames. Returns how many arrived; 0 when none was waiting.
pub(crate) fn recvmmsg(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    slot: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    if slot == 0 {
        return Ok(0);
    }
    // SAFETY: these C structs are plain integers and pointers; all-zero is a valid value (null
    // pointers, zero lengths), and every field the kernel reads is set below.
    let mut iov: [libc::iovec; MMSG_MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut addr: [libc::sockaddr_ll; MMSG_MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { zeroed() };
    let mut n = 0;
    for ((chunk, (iov, addr)), msg) in buf
        .chunks_exact_mut(slot)
        .zip(iov.iter_mut().zip(addr.iter_mut()))
        .zip(msgs.iter_mut())
        .take(meta.len())
    {
        iov.iov_base = chunk.as_mut_ptr().cast();
        iov.iov_len = chunk.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_ll).cast();
        msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: the first `n` headers each point at one iovec covering a distinct `slot`-byte
    // chunk of `buf` (exclusively borrowed for the call) and at their own sockaddr_ll; the
    // arrays outlive the call and nothing keeps the pointers afterwards. MSG_TRUNC makes each
    // `msg_len` the frame's full length; the kernel writes at most `iov_len` bytes into a slot.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => Ok(0),
            _ => Err(err),
        };
    }
    let got = got as usize;
    for ((m, msg), addr) in meta.iter_mut().zip(&msgs).zip(&addr).take(got) {
        *m = RecvMeta {
            len: msg.msg_len as usize,
            truncated: msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            pkttype: addr.sll_pkttype,
        };
    }
    Ok(got)
}

/// Non-blocking `sendmmsg` of up to [`MMSG_MAX`] frames on a bound socket. Returns how many the
/// kernel took (it stops at the first that fails; that error is returned only if it was the first).
pub(crate) fn sendmmsg(sock: BorrowedFd<'_>, frames: &[&[u8]]) -> io::Result<usize> {
    // SAFETY: plain integers and pointers; all-zero is valid, and the fields read are set below.
    let mut iov: [libc::iovec; MMSG_MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { zeroed() };
    let n = frames.len().min(MMSG_MAX);
    if n == 0 {
        return Ok(0);
    }
    for ((frame, iov), msg) in frames.iter().zip(iov.iter_mut()).zip(msgs.iter_mut()) {
        // The kernel only reads through this pointer (sendmmsg), so a shared slice is enough.
        iov.iov_base = frame.as_ptr().cast_mut().cast();
        iov.iov_len = frame.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers each point at one iovec covering one borrowed frame, which
    // sendmmsg only reads; no address (the socket is bound); the arrays outlive the call.
    let sent = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    check(sent).map(|s| s as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_matches_libc() {
        assert_eq!(size_of::<IfReq>(), size_of::<libc::ifreq>());
        assert_eq!(std::mem::offset_of!(libc::ifreq, ifr_ifru), IFNAMSIZ);
        let mut req = IfReq::new(b"tap-x");
        req.set_flags(0x9002);
        assert_eq!(req.name(), b"tap-x");
        // `ifr_flags` is the union's first field: the two bytes right after the name.
        assert_eq!(
            &req.as_bytes()[IFNAMSIZ..IFNAMSIZ + 2],
            &0x9002u16.to_ne_bytes()
        );
    }

    #[test]
    fn sockaddr_ll_and_mreq_sizes() {
        // The sizes the kernel's uapi headers give on every Linux ABI.
        assert_eq!(size_of::<libc::sockaddr_ll>(), 20);
        assert_eq!(size_of::<libc::packet_mreq>(), 16);
        assert_eq!(size_of::<libc::tpacket_stats>(), 8);
    }
}
