//! The two things the xen layer needs from Linux that std does not wrap: ioctl request numbers
//! (`_IOC` from `include/uapi/asm-generic/ioctl.h`) and `poll(2)` on one descriptor.
//!
//! The ioctls themselves live next to their argument structs (`gntdev`, `evtchn`), so each
//! `unsafe` call sits beside the layout it depends on.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// `_IOC_NONE`: the direction every Xen device ioctl uses (the drivers copy in and out by hand).
pub(crate) const IOC_NONE: u32 = 0;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEBITS: u32 = 14;

/// `_IOC(dir, type, nr, size)` for the asm-generic encoding (x86, arm, arm64, riscv): direction
/// in bits 30-31, argument size in bits 16-29, type in 8-15, number in 0-7.
pub(crate) const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(
        size < (1 << IOC_SIZEBITS),
        "ioctl argument too large for _IOC"
    );
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}

/// The argument size encoded in an ioctl request number.
#[cfg(test)]
pub(crate) const fn ioc_size(req: u32) -> usize {
    ((req >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// Waits until `fd` is readable (or has hung up or failed: a read then reports why), for at most
/// `timeout` (`None`: forever). Returns whether it is. `EINTR` restarts with the time left.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a 0.5 ms wait does not become a busy 0 ms poll.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised `pollfd` that lives across the call, and the
        // count passed is 1; `fd` is borrowed, so it stays open for the duration.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ioc_matches_the_asm_generic_layout() {
        // _IOC(_IOC_NONE, 'E', 5, 0) is IOCTL_EVTCHN_RESET.
        assert_eq!(ioc(IOC_NONE, b'E', 5, 0), 0x0000_4505);
        // Direction 3 (read|write) lands in the top two bits.
        assert_eq!(ioc(3, b'G', 0, 24), 0xC018_4700);
        assert_eq!(ioc_size(0x0018_4700), 24);
    }

    #[test]
    fn poll_readable_times_out_then_sees_data() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!poll_readable(b.as_fd(), Some(Duration::ZERO)).unwrap());
        a.write_all(b"x").unwrap();
        assert!(poll_readable(b.as_fd(), None).unwrap());
    }
}
