//! An eventfd: how the model's event-channel handles and xenstore connections become pollable,
//! like the descriptors of `/dev/xen/evtchn` and xenstored's socket on real Xen.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use rustix::event::{EventfdFlags, eventfd};

/// A non-blocking eventfd used as a readiness flag.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// A new one, or `None` if the process is out of descriptors (callers then have no fd).
    pub fn new() -> Option<Self> {
        eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .ok()
            .map(Self)
    }

    /// The descriptor in `cell`, created on first use (`None` if creation failed, then and from
    /// then on). The call that creates it runs `catch_up` on it, so a readiness that arose
    /// before the descriptor existed is signalled rather than lost.
    pub fn get_or_create(
        cell: &OnceLock<Option<Self>>,
        catch_up: impl FnOnce(&Self),
    ) -> Option<&Self> {
        let mut created = false;
        let efd = cell
            .get_or_init(|| {
                created = true;
                Self::new()
            })
            .as_ref()?;
        if created {
            catch_up(efd);
        }
        Some(efd)
    }

    /// Makes it readable. Cannot block (non-blocking, far from the counter's limit); a failure
    /// leaves a poller to its timeout, never loses the event it announces.
    pub fn signal(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Makes it unreadable again.
    pub fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut b);
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
