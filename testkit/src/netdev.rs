//! Host-mode vifs without Linux: [`MemNetdevs`] gives netback in-memory netdevs whose frames a
//! test injects and reads, and records what netback asked for (names, MTUs, removals).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use netback::pool::NetFrame;
use netback::{Netdevs, Uplink, UplinkIo, UplinkStats, VifId, Wakeup};
use rustix::event::{EventfdFlags, eventfd};
use xen_model::DomainHandle;

/// One netdev's traffic, shared between netback's uplink and the test.
#[derive(Debug, Default)]
pub struct Wire {
    /// Frames the host sends into the vif (the test pushes, netback takes).
    pub inbox: VecDeque<Vec<u8>>,
    /// Frames netback sent out of the vif to the host.
    pub sent: Vec<Vec<u8>>,
}

/// What netback asked of the netdevs, and each netdev's traffic by name.
#[derive(Debug, Default)]
pub struct Record {
    /// `open` calls: vif, name, MTU.
    pub opened: Vec<(VifId, String, u32)>,
    /// `open_emulated` calls: vif, name.
    pub emulated: Vec<(VifId, String)>,
    /// `remove` calls: vif, name.
    pub removed: Vec<(VifId, String)>,
    /// Traffic by netdev name (made on `open`).
    pub wires: HashMap<String, Rc<RefCell<Wire>>>,
    /// Names `open_emulated` finds (an HVM guest's QEMU TAPs the test says exist).
    pub emulated_present: Vec<String>,
}

/// [`netback::Netdevs`] in memory; clone it to keep a handle for the test.
#[derive(Debug, Clone, Default)]
pub struct MemNetdevs(pub Rc<RefCell<Record>>);

impl MemNetdevs {
    /// The traffic of netdev `name` (panics if netback never opened it).
    #[track_caller]
    pub fn wire(&self, name: &str) -> Rc<RefCell<Wire>> {
        self.0
            .borrow()
            .wires
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("netback opened no netdev {name:?}"))
    }

    fn uplink(&self, name: &str) -> Result<Box<dyn Uplink<DomainHandle>>, String> {
        let wire = Rc::new(RefCell::new(Wire::default()));
        self.0
            .borrow_mut()
            .wires
            .insert(name.to_string(), wire.clone());
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| format!("eventfd: {e}"))?;
        Ok(Box::new(MemNetdev {
            name: name.to_string(),
            wire,
            wake,
            stats: UplinkStats::default(),
        }))
    }
}

impl Netdevs<DomainHandle> for MemNetdevs {
    fn open(
        &mut self,
        id: VifId,
        name: &str,
        mtu: u32,
    ) -> Result<Box<dyn Uplink<DomainHandle>>, String> {
        self.0.borrow_mut().opened.push((id, name.to_string(), mtu));
        self.uplink(name)
    }

    fn open_emulated(
        &mut self,
        id: VifId,
        name: &str,
    ) -> Result<Box<dyn Uplink<DomainHandle>>, String> {
        if !self.0.borrow().emulated_present.iter().any(|n| n == name) {
            return Err(format!("no {name}"));
        }
        self.0.borrow_mut().emulated.push((id, name.to_string()));
        self.uplink(name)
    }

    fn remove(&mut self, id: VifId, name: &str) {
        let mut r = self.0.borrow_mut();
        r.removed.push((id, name.to_string()));
        r.wires.remove(name);
    }
}

/// One in-memory netdev as netback's uplink.
#[derive(Debug)]
struct MemNetdev {
    name: String,
    wire: Rc<RefCell<Wire>>,
    /// Never signalled: tests drive netback with `poll`.
    wake: OwnedFd,
    stats: UplinkStats,
}

impl Uplink<DomainHandle> for MemNetdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame(&self) -> usize {
        netif_ring::netif::MAX_FRAME
    }

    fn receive(
        &mut self,
        io: &UplinkIo<'_, DomainHandle>,
        out: &mut Vec<NetFrame<DomainHandle>>,
        budget: usize,
    ) -> bool {
        let mut taken = 0;
        let mut any = false;
        while let Some(f) = self.wire.borrow_mut().inbox.pop_front() {
            any = true;
            let Some(mut buf) = io.pool.alloc(f.len()) else {
                self.stats.rx_no_buffer += 1;
                continue;
            };
            if buf.fill(&f).is_err() {
                self.stats.rx_fill_errors += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += f.len() as u64;
            taken += f.len();
            out.push(NetFrame::new(buf));
            if taken >= budget {
                break;
            }
        }
        any
    }

    fn transmit(
        &mut self,
        _io: &UplinkIo<'_, DomainHandle>,
        frames: &mut Vec<NetFrame<DomainHandle>>,
    ) {
        for f in frames.drain(..) {
            let mut bytes = Vec::new();
            if f.0.read_into(&mut bytes).is_ok() {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += bytes.len() as u64;
                self.wire.borrow_mut().sent.push(bytes);
            } else {
                self.stats.tx_errors += 1;
            }
        }
    }

    fn arm(&mut self) -> bool {
        !self.wire.borrow().inbox.is_empty()
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Fd(self.wake.as_fd())
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }
}
