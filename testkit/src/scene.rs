//! Scenes: the machine (hypervisor and dom0), netback on the calling thread, guests.
//!
//! [`Machine`] is what the toolstack builds and is `Send`: the benchmark builds it on its main
//! thread and runs netback on a dom0 vCPU thread of its own. [`Scene`] adds netback on the
//! calling thread, as netback's tests and the fuzz targets drive it, one pass at a time. Guests
//! come one call at a time, in the order a test needs: raw frontends ([`Scene::guest`],
//! [`Scene::front`]) or, for a netfront, a domain with its vif written by the toolstack
//! ([`Machine::vif_guest`]), which `Netfront::connect` then brings up against a running
//! backend.

use hypervisor::DomId;
use netback::{Config, Netback};
use xen_model::nic::Wire;
use xen_model::{DomainHandle, Hypervisor};

use crate::Nb;
use crate::frame::mac_string;
use crate::front::{Guest, RawFront};

/// Machine frames of [`Machine::builder`]'s default machine.
pub const FRAMES: u64 = 16 * 1024;
/// dom0's reservation in [`Machine::builder`]'s default machine.
pub const DOM0_PAGES: u64 = 4096;
/// Netback's frame pool in [`Scene::new`].
pub const POOL_PAGES: usize = 2048;
/// The reservation of the remote host's pseudo-domain, whose only job is to own the simulated
/// NIC's event channel.
pub const REMOTE_PAGES: u64 = 16;

/// Why a machine could not be assembled: what was being made, and the hypervisor's error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Error {
    /// The step: `machine`, `dom0`, `guest`, `add_vif`, `remote host`.
    pub what: &'static str,
    /// The hypervisor's error.
    pub source: hypervisor::Error,
}

fn step(what: &'static str) -> impl FnOnce(hypervisor::Error) -> Error {
    move |source| Error { what, source }
}

/// The sizes of a [`Machine`]; see [`Machine::builder`].
#[derive(Debug, Clone, Copy)]
pub struct MachineBuilder {
    frames: u64,
    dom0: Option<DomId>,
    dom0_pages: u64,
}

impl MachineBuilder {
    /// Machine frames (4 KiB each).
    pub fn frames(mut self, frames: u64) -> Self {
        self.frames = frames;
        self
    }

    /// dom0's reservation.
    pub fn dom0_pages(mut self, pages: u64) -> Self {
        self.dom0_pages = pages;
        self
    }

    /// dom0's domain id (by default the first: 0).
    pub fn dom0_id(mut self, domid: DomId) -> Self {
        self.dom0 = Some(domid);
        self
    }

    /// The machine with dom0.
    pub fn build(self) -> Result<Machine, Error> {
        let xen = Hypervisor::new(self.frames).map_err(step("machine"))?;
        let dom0 = match self.dom0 {
            Some(id) => xen.create_domain_with_id(id, self.dom0_pages),
            None => xen.create_domain(self.dom0_pages),
        }
        .map_err(step("dom0"))?;
        Ok(Machine { xen, dom0 })
    }
}

/// The hypervisor and dom0, as the toolstack builds them.
#[derive(Debug)]
pub struct Machine {
    /// The machine.
    pub xen: Hypervisor,
    /// The driver domain.
    pub dom0: DomainHandle,
}

impl Machine {
    /// [`FRAMES`] frames, dom0 with [`DOM0_PAGES`] pages as domain 0.
    pub fn builder() -> MachineBuilder {
        MachineBuilder {
            frames: FRAMES,
            dom0: None,
            dom0_pages: DOM0_PAGES,
        }
    }

    /// A guest as the toolstack makes one for a netfront: domain `domid` with `pages` pages, and
    /// its vif 0 on dom0 with `mac` (`add_vif`: the libxl-style directories).
    pub fn vif_guest(&self, domid: DomId, pages: u64, mac: [u8; 6]) -> Result<DomainHandle, Error> {
        let guest = self
            .xen
            .create_domain_with_id(domid, pages)
            .map_err(step("guest"))?;
        self.xen
            .add_vif(domid, self.dom0.domid(), 0, &mac_string(mac))
            .map_err(step("add_vif"))?;
        Ok(guest)
    }

    /// The remote host's pseudo-domain `domid`, the far end of the simulated NIC
    /// (`xen_model::nic`).
    pub fn remote(&self, domid: DomId) -> Result<DomainHandle, Error> {
        self.xen
            .create_domain_with_id(domid, REMOTE_PAGES)
            .map_err(step("remote host"))
    }

    /// netback on dom0, on the calling thread, with `cfg` and a frame pool of `pool_pages`.
    #[track_caller]
    pub fn with_netback(self, cfg: Config, pool_pages: usize) -> Scene {
        let nb = Netback::new(self.dom0.clone(), cfg, pool_pages).expect("netback starts");
        Scene {
            xen: self.xen,
            dom0: self.dom0,
            nb,
        }
    }
}

/// A machine with dom0 and netback on the calling thread.
#[derive(Debug)]
pub struct Scene {
    /// The machine.
    pub xen: Hypervisor,
    /// The driver domain.
    pub dom0: DomainHandle,
    /// The backend under test.
    pub nb: Nb,
}

impl Scene {
    /// The default machine ([`Machine::builder`]) and netback with `cfg` and [`POOL_PAGES`].
    #[track_caller]
    pub fn new(cfg: Config) -> Scene {
        Scene::with_pool(cfg, POOL_PAGES)
    }

    /// The default machine and netback with `cfg` and a pool of `pool_pages`.
    #[track_caller]
    pub fn with_pool(cfg: Config, pool_pages: usize) -> Scene {
        Machine::builder()
            .build()
            .expect("the machine")
            .with_netback(cfg, pool_pages)
    }

    /// A new guest with a raw frontend, its rings granted to dom0; not connected.
    #[track_caller]
    pub fn guest(&self, guest: Guest) -> RawFront {
        RawFront::new(&self.xen, self.dom0.domid(), guest)
    }

    /// A new guest with a raw frontend, connected directly (no xenbus).
    #[track_caller]
    pub fn front(&mut self, guest: Guest) -> RawFront {
        let f = self.guest(guest);
        f.connect(&mut self.nb);
        f
    }

    /// The simulated NIC on the backend as an uplink, frames of up to `mtu` bytes (header
    /// included): a remote host's pseudo-domain (the next free id) and the wire's far end, which
    /// a test sends through and then flushes.
    #[track_caller]
    pub fn nic(&mut self, mtu: usize) -> Wire<DomainHandle> {
        let remote = self
            .xen
            .create_domain(REMOTE_PAGES)
            .expect("the remote host's pseudo-domain");
        let (_, wire) =
            xen_model::nic::attach(&mut self.nb, &remote, mtu).expect("the NIC attaches");
        wire
    }
}
