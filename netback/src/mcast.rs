//! Multicast control (netif.h's `feature-multicast-control`, Linux's `xenvif_mcast_*`): a
//! frontend that writes `request-multicast-control=1` gets only the multicast frames whose group
//! it subscribed to with `XEN_NETIF_EXTRA_TYPE_MCAST_ADD` requests on its tx ring, instead of
//! every multicast frame the switch floods. Broadcast always passes, and so does unicast.
//!
//! As Linux: the list is kept whether or not the frontend asked for filtering (its add and
//! remove requests are answered either way); it holds at most [`MCAST_MAX`] addresses, an add
//! beyond that is refused (answered `NETIF_RSP_ERROR`) and changes nothing; an add does not
//! look for duplicates and a remove takes out one entry; the key is watched
//! (`feature-dynamic-multicast-control`), so filtering follows it while connected. The filter is
//! applied where a frame from the switch is handed to the vif, and is a single flag test for a
//! vif that never asked for it.

/// Addresses a vif's list holds (Linux's `XEN_NETBK_MCAST_MAX`).
pub const MCAST_MAX: usize = 64;

/// A vif's multicast list and whether its frontend asked for filtering.
#[derive(Debug, Clone, Default)]
pub(crate) struct McastFilter {
    /// `request-multicast-control`.
    control: bool,
    addrs: Vec<[u8; 6]>,
}

impl McastFilter {
    /// Follows the frontend's `request-multicast-control`.
    pub(crate) fn set_control(&mut self, on: bool) {
        self.control = on;
    }

    /// Whether frames are filtered.
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.control
    }

    /// `xenvif_mcast_add`: false if the list is full (nothing added).
    pub(crate) fn add(&mut self, addr: [u8; 6]) -> bool {
        if self.addrs.len() >= MCAST_MAX {
            return false;
        }
        self.addrs.push(addr);
        true
    }

    /// `xenvif_mcast_del`: removes the first entry equal to `addr`, if any.
    pub(crate) fn del(&mut self, addr: [u8; 6]) {
        if let Some(i) = self.addrs.iter().position(|a| *a == addr) {
            self.addrs.remove(i);
        }
    }

    /// Whether a frame whose destination MAC is `dst` reaches the guest: anything but
    /// multicast, broadcast, or a multicast group on the list (`xenvif_mcast_match`, applied
    /// to `PACKET_MULTICAST` frames only).
    pub(crate) fn passes(&self, dst: &[u8]) -> bool {
        let Some(d) = dst.get(..6) else {
            return true;
        };
        let multicast = d[0] & 1 != 0;
        if !multicast || d == [0xff; 6] {
            return true;
        }
        self.addrs.iter().any(|a| a == d)
    }

    /// The subscribed groups.
    pub(crate) fn groups(&self) -> &[[u8; 6]] {
        &self.addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    const OTHER: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];

    #[test]
    fn only_subscribed_groups_pass_broadcast_and_unicast_always() {
        let mut m = McastFilter::default();
        m.set_control(true);
        assert!(m.passes(&[0xff; 6]));
        assert!(m.passes(&[0x02, 0, 0, 0, 0, 1]));
        assert!(!m.passes(&GROUP));
        assert!(m.add(GROUP));
        assert!(m.passes(&GROUP));
        assert!(!m.passes(&OTHER));
        m.del(GROUP);
        assert!(!m.passes(&GROUP));
    }

    #[test]
    fn the_list_holds_64_duplicates_count_and_a_remove_takes_one() {
        let mut m = McastFilter::default();
        for i in 0..MCAST_MAX {
            assert!(m.add([0x01, 0, 0x5e, 0, 0, i as u8]), "{i}");
        }
        assert!(!m.add(GROUP), "the 65th is refused");
        assert_eq!(m.groups().len(), MCAST_MAX);
        let mut d = McastFilter::default();
        d.set_control(true);
        assert!(d.add(GROUP) && d.add(GROUP));
        d.del(GROUP);
        assert!(d.passes(&GROUP), "one of the two entries remains");
        d.del(GROUP);
        assert!(!d.passes(&GROUP));
        d.del(GROUP); // removing what is not there changes nothing
        assert!(d.groups().is_empty());
    }
}
