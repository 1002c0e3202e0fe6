//! The caller-owned per-port output queues a forwarded batch lands in.

use crate::port::PortId;

/// Per-port output queues of frame handles, filled by [`crate::Bridge::forward`]. The caller owns it,
/// drains the queues it cares about and reuses it for the next batch (queues keep their
/// capacity, so steady-state forwarding does not allocate).
#[derive(Debug)]
pub struct Output<H> {
    pub(crate) queues: Vec<Vec<H>>,
}

impl<H> Default for Output<H> {
    fn default() -> Self {
        Self { queues: Vec::new() }
    }
}

impl<H> Output<H> {
    /// Empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frames queued for `port`.
    pub fn queue(&self, port: PortId) -> &[H] {
        self.queues.get(port.index()).map_or(&[], |q| q.as_slice())
    }

    /// Takes the frames queued for `port`, keeping the queue's capacity.
    pub fn drain(&mut self, port: PortId) -> std::vec::Drain<'_, H> {
        if self.queues.len() <= port.index() {
            self.queues.resize_with(port.index() + 1, Vec::new);
        }
        self.queues[port.index()].drain(..)
    }

    /// Every port with frames queued, with its frames.
    pub fn iter(&self) -> impl Iterator<Item = (PortId, &[H])> {
        self.queues
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(i, q)| (PortId(i as u16), q.as_slice()))
    }

    /// Frames queued over all ports.
    pub fn len(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// True when no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(Vec::is_empty)
    }

    /// Drops every queued handle.
    pub fn clear(&mut self) {
        self.queues.iter_mut().for_each(Vec::clear);
    }
}
