//! The backend's control plane over xenstore (Linux's `xenbus.c`, with the lifecycle rules of
//! QEMU's `xen-bus.c` and libxl).
//!
//! The toolstack creates `/local/domain/<be>/backend/vif/<fe>/<devid>` with `online=1` and
//! `state=1` (Initialising); only such a device is picked up. The backend writes its features,
//! goes to InitWait and watches the frontend's `state` node (only that node, as Linux does).
//! When the frontend reaches Initialised or Connected (its ring refs and event channel
//! written), the backend reads the keys, maps the rings, binds the channel and goes to
//! Connected. Frontend Closing/Closed tears the vif down (unmapped and unbound *before* the
//! backend's state says so, which netfront's close waits for); a frontend that returns to
//! Initialising after Closed is offered the device again (also when its Closed was overwritten
//! by the Initialising before the backend read it: watches carry no values). The toolstack
//! detaches a device by writing `online=0` or `state=5`: the vif goes Closing then Closed at
//! once (libxl waits 10 s). A removed backend directory (no `frontend` node) forgets the
//! device, so a re-attach with the same devid is a fresh device; the backend never writes into
//! a removed directory (which would recreate it). A frontend whose keys are missing or ask for
//! what this backend does not do gets a clear `error` node and Closed.

use std::collections::HashMap;
use std::time::Duration;

use hypervisor::{DomId, GrantRef, Port, XenStore};
use netif_ring::netif::RxMode;

use crate::device::{DeviceConfig, ModePolicy, VifMode, read_device_config};
use crate::error::{Error, FrontendError};
use crate::rate::Rate;
use crate::vif::{FrontendKeys, FrontendOffloads, QueueKeys, VifId};

pub use hypervisor::XenbusState;

/// Watch token of the backend tree.
const BE_TOKEN: &str = "netback";
/// A node this backend writes into every device it offers, so a later instance (a restart)
/// takes over only devices a splitnet backend served, never one another backend (Linux's
/// xen-netback) holds.
pub const OWNER_NODE: &str = "splitnet-backend";
/// Watch events handled per pass: a guest writing junk cannot stall the data path.
const EVENTS_PER_PASS: usize = 64;

/// The features this backend offers, written to its directory before InitWait.
pub fn features(allow_flip: bool, max_queues: u32) -> [(&'static str, String); 13] {
    let s = |v: &str| v.to_string();
    [
        ("feature-sg", s("1")),
        ("feature-gso-tcpv4", s("1")),
        ("feature-gso-tcpv6", s("1")),
        ("feature-ipv6-csum-offload", s("1")),
        ("feature-rx-copy", s("1")),
        ("feature-rx-flip", s(if allow_flip { "1" } else { "0" })),
        ("feature-rx-notify", s("1")),
        ("feature-split-event-channels", s("1")),
        ("multi-queue-max-queues", max_queues.to_string()),
        ("feature-ctrl-ring", s("1")),
        ("feature-multicast-control", s("1")),
        ("feature-dynamic-multicast-control", s("1")),
        ("feature-xdp-headroom", s("1")),
    ]
}

/// What the control plane asks of the data path.
pub(crate) trait VifControl {
    /// Prepares a device before InitWait: in host mode makes its netdev (which the toolstack's
    /// script then finds), in builtin mode finds its switch. `Err` says why the device is
    /// refused and what to do.
    fn prepare(&mut self, id: VifId, cfg: &DeviceConfig) -> Result<(), String>;
    /// Connects a prepared device's vif with the keys its frontend wrote.
    fn connect(&mut self, id: VifId, keys: FrontendKeys) -> Result<(), FrontendError>;
    /// Disconnects a vif (unmaps, unbinds, unplugs); nothing if it is not connected. The
    /// device stays prepared.
    fn disconnect(&mut self, id: VifId);
    /// The device is gone: disconnect, and undo `prepare` (a host netdev is removed).
    fn release(&mut self, id: VifId);
    /// The `rate` key changed: applies at once to a connected vif, and to later connects.
    fn set_rate(&mut self, id: VifId, rate: Option<Rate>);
    /// The frontend reconfigured its `xdp-headroom` (a connected vif; nothing otherwise).
    fn set_xdp_headroom(&mut self, id: VifId, headroom: u16);
    /// The frontend's `request-multicast-control` changed (a connected vif; nothing otherwise).
    fn set_multicast_control(&mut self, id: VifId, on: bool);
}

/// One vif device as the control plane tracks it.
#[derive(Debug, Clone)]
struct Device {
    be_path: String,
    fe_path: String,
    fe_token: String,
    /// The state this backend last wrote.
    state: XenbusState,
    /// What the toolstack configured.
    cfg: DeviceConfig,
    /// Connected on the data path, but Connected waits for the hotplug script to write
    /// `hotplug-status=connected` (as Linux's netback waits when libxl wrote the node).
    awaiting_hotplug: bool,
    /// The data path holds what the device needs (its netdev, its switch). A refused device
    /// is tracked but not prepared, and is offered again only once a new preparation works.
    prepared: bool,
    /// The state node says Reconfigured (the frontend's `xdp-headroom` was applied) while the
    /// device is Connected; Connected is written back when the frontend returns to Connected.
    reconfigured: bool,
    /// Taken over from a previous backend instance, whose multicast list is lost with it:
    /// filtering stays off (every multicast frame reaches the guest) until the frontend
    /// connects again.
    mcast_list_lost: bool,
}

/// The control plane's xenstore connection: it remembers when xenstore stopped answering (the
/// connection broke, or a request passed its deadline), so that no decision is taken on what a
/// failed read seemed to say (a device that looks removed, a frontend that looks gone). Once
/// broken, the control plane connects again and resynchronises ([`Xenbus::reconnect`]).
#[derive(Debug)]
pub(crate) struct Conn<S: XenStore> {
    xs: S,
    broken: std::sync::Mutex<Option<hypervisor::Error>>,
}

impl<S: XenStore> Conn<S> {
    fn new(xs: S) -> Self {
        Self {
            xs,
            broken: std::sync::Mutex::new(None),
        }
    }

    /// Why the connection is unusable, if it is.
    pub(crate) fn broken(&self) -> Option<hypervisor::Error> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note<T>(&self, r: hypervisor::Result<T>) -> hypervisor::Result<T> {
        if let Err(e @ (hypervisor::Error::XsDisconnected | hypervisor::Error::XsTimeout { .. })) =
            &r
        {
            self.broken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e.clone());
        }
        r
    }
}

impl<S: XenStore> XenStore for Conn<S> {
    fn read(&self, path: &str) -> hypervisor::Result<String> {
        self.note(self.xs.read(path))
    }
    fn write(&self, path: &str, value: &str) -> hypervisor::Result<()> {
        self.note(self.xs.write(path, value))
    }
    fn mkdir(&self, path: &str) -> hypervisor::Result<()> {
        self.note(self.xs.mkdir(path))
    }
    fn rm(&self, path: &str) -> hypervisor::Result<()> {
        self.note(self.xs.rm(path))
    }
    fn directory(&self, path: &str) -> hypervisor::Result<Vec<String>> {
        self.note(self.xs.directory(path))
    }
    fn set_permissions(&self, path: &str, perms: &[hypervisor::XsPerm]) -> hypervisor::Result<()> {
        self.note(self.xs.set_permissions(path, perms))
    }
    fn watch(&self, path: &str, token: &str) -> hypervisor::Result<()> {
        self.note(self.xs.watch(path, token))
    }
    fn unwatch(&self, path: &str, token: &str) -> hypervisor::Result<()> {
        self.note(self.xs.unwatch(path, token))
    }
    fn read_watch(
        &self,
        timeout: Option<Duration>,
    ) -> hypervisor::Result<Option<hypervisor::WatchEvent>> {
        self.note(self.xs.read_watch(timeout))
    }
    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.xs.as_fd()
    }
    fn set_request_timeout(&self, timeout: Option<Duration>) {
        self.xs.set_request_timeout(timeout)
    }
}

/// The control plane: the backend tree's watch, and every device it knows.
pub(crate) struct Xenbus<S: XenStore> {
    xs: Conn<S>,
    be_base: String,
    allow_flip: bool,
    policy: ModePolicy,
    /// `multi-queue-max-queues` offered.
    max_queues: u32,
    devices: HashMap<VifId, Device>,
}

impl<S: XenStore> std::fmt::Debug for Xenbus<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xenbus")
            .field("be_base", &self.be_base)
            .field("devices", &self.devices.len())
            .finish()
    }
}

/// Parses `<base>/<fe>/<devid>[/...]` into the vif it is about, comparing whole components.
pub fn parse_device_path(base: &str, path: &str) -> Option<VifId> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    let mut it = rest.split('/');
    let domid: DomId = it.next()?.parse().ok()?;
    let devid: u32 = it.next()?.parse().ok()?;
    Some(VifId { domid, devid })
}

fn fe_token(id: VifId) -> String {
    format!("netback-fe:{}:{}", id.domid, id.devid)
}

/// The token of the watch on the frontend's `request-multicast-control`.
fn mc_token(id: VifId) -> String {
    format!("netback-mc:{}:{}", id.domid, id.devid)
}

fn parse_token(prefix: &str, token: &str) -> Option<VifId> {
    let mut it = token.strip_prefix(prefix)?.split(':');
    let domid = it.next()?.parse().ok()?;
    let devid = it.next()?.parse().ok()?;
    it.next().is_none().then_some(VifId { domid, devid })
}

fn parse_fe_token(token: &str) -> Option<VifId> {
    parse_token("netback-fe:", token)
}

impl<S: XenStore> Xenbus<S> {
    /// Watches the backend tree of domain `backend`; each device's mode follows `policy`;
    /// frontends may ask for up to `max_queues` queues.
    pub fn new(
        xs: S,
        backend: DomId,
        allow_flip: bool,
        policy: ModePolicy,
        max_queues: u32,
    ) -> Result<Self, Error> {
        let be_base = format!("/local/domain/{backend}/backend/vif");
        xs.watch(&be_base, BE_TOKEN)?;
        Ok(Self {
            xs: Conn::new(xs),
            be_base,
            allow_flip,
            policy,
            max_queues,
            devices: HashMap::new(),
        })
    }

    /// The connection, for its descriptor.
    pub fn store(&self) -> &S {
        &self.xs.xs
    }

    /// Why xenstore is unusable, if it is: the connection broke or a request passed its
    /// deadline. Nothing was decided on what it failed to say.
    pub fn broken(&self) -> Option<hypervisor::Error> {
        self.xs.broken()
    }

    /// Carries on over a new connection `xs` after the old one broke (xenstored restarted, or
    /// stopped answering): registers the watches again and looks at every device afresh, as it
    /// stands now. What this control plane wrote and did not get through (its state, a
    /// frontend connected in between) is written and done again.
    pub fn reconnect(&mut self, xs: S, vifs: &mut impl VifControl) -> Result<(), Error> {
        xs.watch(&self.be_base, BE_TOKEN)?;
        for d in self.devices.values() {
            xs.watch(&format!("{}/state", d.fe_path), &d.fe_token)?;
        }
        self.xs = Conn::new(xs);
        let ids: Vec<VifId> = self.devices.keys().copied().collect();
        for id in &ids {
            if let Some(d) = self.devices.get(id) {
                let state = d.state;
                self.set_state(*id, state);
            }
        }
        self.scan(vifs);
        for id in ids {
            self.frontend_changed(id, vifs);
        }
        if let Some(e) = self.xs.broken() {
            return Err(Error::Hypervisor(e));
        }
        log::info!(
            "xenstore: connected again, {} device(s) resynchronised",
            self.devices.len()
        );
        Ok(())
    }

    /// Devices known (each with a backend directory).
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Whether `feature-rx-flip=1` is offered to devices probed from now on.
    pub fn set_allow_flip(&mut self, allow: bool) {
        self.allow_flip = allow;
    }

    /// Each tracked device's state as this backend last wrote it.
    pub fn device_states(&self) -> HashMap<VifId, XenbusState> {
        self.devices.iter().map(|(id, d)| (*id, d.state)).collect()
    }

    /// Closes one device as the toolstack's detach does (disconnect, Closing, Closed), keeping
    /// it tracked and prepared: its frontend may start over (it is offered again), or the
    /// toolstack may remove it. False if the device is not tracked.
    pub fn close(&mut self, id: VifId, vifs: &mut impl VifControl) -> bool {
        let Some(d) = self.devices.get_mut(&id) else {
            return false;
        };
        d.awaiting_hotplug = false;
        vifs.disconnect(id);
        if self
            .devices
            .get(&id)
            .is_some_and(|d| d.state != XenbusState::Closed)
        {
            log::info!("{id}: closing the device (asked by the operator)");
            self.set_state(id, XenbusState::Closing);
            self.set_state(id, XenbusState::Closed);
        }
        true
    }

    /// Closes every device: disconnect, then Closing and Closed, and release what was prepared
    /// (host netdevs are removed): the backend is stopping and no instance follows.
    pub fn close_all(&mut self, vifs: &mut impl VifControl) {
        let mut ids: Vec<VifId> = self.devices.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            vifs.disconnect(id);
            if self
                .devices
                .get(&id)
                .is_some_and(|d| d.state != XenbusState::Closed)
            {
                self.set_state(id, XenbusState::Closing);
                self.set_state(id, XenbusState::Closed);
            }
            vifs.release(id);
        }
    }

    /// Handles up to [`EVENTS_PER_PASS`] watch events. Returns whether more may be waiting.
    pub fn poll(&mut self, vifs: &mut impl VifControl) -> Result<bool, Error> {
        for _ in 0..EVENTS_PER_PASS {
            let Some(ev) = self.wait_event(Some(Duration::ZERO))? else {
                return Ok(false);
            };
            self.handle(ev, vifs)?;
        }
        Ok(true)
    }

    /// The next watch event, waiting up to `timeout` for it.
    pub fn wait_event(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<hypervisor::WatchEvent>, Error> {
        Ok(self.xs.read_watch(timeout)?)
    }

    /// Acts on one watch event. `Err` if xenstore stopped answering meanwhile (nothing was
    /// decided on what it failed to say).
    pub fn handle(
        &mut self,
        ev: hypervisor::WatchEvent,
        vifs: &mut impl VifControl,
    ) -> Result<(), Error> {
        if ev.token == BE_TOKEN {
            match parse_device_path(&self.be_base, &ev.path) {
                Some(id) => self.backend_changed(id, vifs),
                // The watch's own registration event, or a change above the device level
                // (vifs created before the backend started): look at everything.
                None => self.scan(vifs),
            }
        } else if let Some(id) = parse_fe_token(&ev.token) {
            self.frontend_changed(id, vifs);
        } else if let Some(id) = parse_token("netback-mc:", &ev.token) {
            self.multicast_control_changed(id, vifs);
        }
        match self.xs.broken() {
            Some(e) => Err(Error::Hypervisor(e)),
            None => Ok(()),
        }
    }

    /// Looks at every device directory under the backend tree, and at every known device.
    fn scan(&mut self, vifs: &mut impl VifControl) {
        let mut ids: Vec<VifId> = self.devices.keys().copied().collect();
        if let Ok(fes) = self.xs.directory(&self.be_base) {
            for fe in fes {
                let Ok(domid) = fe.parse() else { continue };
                let Ok(devs) = self.xs.directory(&format!("{}/{fe}", self.be_base)) else {
                    continue;
                };
                ids.extend(
                    devs.iter()
                        .filter_map(|d| d.parse().ok())
                        .map(|devid| VifId { domid, devid }),
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.backend_changed(id, vifs);
        }
    }

    fn be_path(&self, id: VifId) -> String {
        format!("{}/{}/{}", self.be_base, id.domid, id.devid)
    }

    /// Whether the toolstack's backend directory is there: its `frontend` node, which only the
    /// toolstack writes. (A `state` node is no proof: a write of ours that raced with the
    /// toolstack's `rm` can leave one behind.)
    fn present(&self, be_path: &str) -> bool {
        self.xs.read(&format!("{be_path}/frontend")).is_ok()
    }

    /// Something under the device's backend directory changed (the toolstack's `online` or
    /// `state`, our own writes, or the directory's removal).
    fn backend_changed(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let be_path = self.be_path(id);
        let present = self.present(&be_path);
        let state = self
            .xs
            .read(&format!("{be_path}/state"))
            .ok()
            .and_then(|s| XenbusState::parse(&s));
        let online = self
            .xs
            .read(&format!("{be_path}/online"))
            .is_ok_and(|v| v.trim() == "1");
        let owned = self.xs.read(&format!("{be_path}/{OWNER_NODE}")).is_ok();
        if self.xs.broken().is_some() {
            // What the reads seemed to say is not what is there: decide nothing.
            return;
        }
        if !present {
            self.forget(id, vifs);
            return;
        }
        let Some(dev) = self.devices.get(&id) else {
            match state {
                Some(XenbusState::Initialising) if online => self.probe(id, be_path, vifs),
                // A device a previous instance of this backend served (a restart): take it over
                // without disturbing the guest.
                Some(s @ (XenbusState::InitWait | XenbusState::Connected)) if online && owned => {
                    self.adopt(id, be_path, s, vifs)
                }
                // Left Reconfigured (an xdp-headroom change) by the previous instance: a
                // Connected device.
                Some(XenbusState::Reconfigured) if online && owned => {
                    self.adopt(id, be_path, XenbusState::Connected, vifs)
                }
                _ => {}
            }
            return;
        };
        let ours = dev.state;
        if dev.awaiting_hotplug && online && self.hotplug_connected(&be_path) {
            log::info!("{id}: the hotplug script is done");
            if let Some(d) = self.devices.get_mut(&id) {
                d.awaiting_hotplug = false;
            }
            self.set_state(id, XenbusState::Connected);
        }
        self.rate_changed(id, vifs);
        let toolstack_closing = state == Some(XenbusState::Closing) && ours != XenbusState::Closing;
        if (!online || toolstack_closing) && ours != XenbusState::Closed {
            log::info!(
                "{id}: the toolstack detaches the device (online={online:?}, state={state:?})"
            );
            if let Some(d) = self.devices.get_mut(&id) {
                d.awaiting_hotplug = false;
            }
            vifs.disconnect(id);
            self.set_state(id, XenbusState::Closing);
            self.set_state(id, XenbusState::Closed);
        } else if online && state == Some(XenbusState::Initialising) && ours == XenbusState::Closed
        {
            // Re-attached in place: offer the device again.
            self.reoffer(id, vifs);
        }
    }

    /// Starts tracking a device: checks its frontend path, reads what the toolstack
    /// configured, prepares the data path (a host netdev, or the named switch), watches the
    /// frontend's state. `None` if the device is not ready or was refused (then Closed, with
    /// `error` and `hotplug-error` saying why).
    fn track(
        &mut self,
        id: VifId,
        be_path: String,
        state: XenbusState,
        vifs: &mut impl VifControl,
    ) -> Option<()> {
        let Ok(fe_path) = self.xs.read(&format!("{be_path}/frontend")) else {
            return None; // Not fully created yet; the next watch event retries.
        };
        let expected = format!("/local/domain/{}/device/vif/{}", id.domid, id.devid);
        if fe_path != expected {
            log::warn!(
                "{id}: backend's frontend node names {fe_path:?}, expected {expected}; ignoring the device"
            );
            return None;
        }
        let cfg = read_device_config(&self.xs, &be_path, id, self.policy);
        if self.xs.broken().is_some() {
            return None;
        }
        for w in &cfg.warnings {
            log::warn!("{id}: {w}");
        }
        let fe_token = fe_token(id);
        if let Err(e) = self.xs.watch(&format!("{fe_path}/state"), &fe_token) {
            log::warn!("{id}: cannot watch the frontend's state: {e}");
            return None;
        }
        // feature-dynamic-multicast-control: the key is followed while connected, as Linux's
        // xen_register_mcast_ctrl_watch does.
        if let Err(e) = self.xs.watch(
            &format!("{fe_path}/request-multicast-control"),
            &mc_token(id),
        ) {
            log::warn!("{id}: cannot watch the frontend's request-multicast-control: {e}");
        }
        log::info!(
            "{id}: device, frontend {fe_path}, {}",
            match cfg.mode {
                VifMode::Host => format!("host mode: netdev {} mtu {}", cfg.netdev, cfg.mtu),
                VifMode::Builtin => format!("builtin mode: switch {}", cfg.switch),
            }
        );
        let prepared = vifs.prepare(id, &cfg);
        self.devices.insert(
            id,
            Device {
                be_path,
                fe_path,
                fe_token,
                state,
                cfg,
                awaiting_hotplug: false,
                prepared: prepared.is_ok(),
                reconfigured: false,
                mcast_list_lost: false,
            },
        );
        if let Err(why) = prepared {
            self.refuse(id, &why, vifs);
            return None;
        }
        Some(())
    }

    /// A new device: track it, write features, go to InitWait.
    fn probe(&mut self, id: VifId, be_path: String, vifs: &mut impl VifControl) {
        if self
            .track(id, be_path, XenbusState::Initialising, vifs)
            .is_some()
        {
            self.offer(id);
        }
    }

    /// A device a previous instance of the backend left in InitWait or Connected (it was
    /// restarted, or crashed): track it, and if the frontend is connected, connect its vif from
    /// the rings as they stand (requests the old instance took but never answered are served
    /// again). Nothing is written unless that fails, so the guest notices nothing.
    fn adopt(
        &mut self,
        id: VifId,
        be_path: String,
        state: XenbusState,
        vifs: &mut impl VifControl,
    ) {
        if self.track(id, be_path, state, vifs).is_none() {
            return;
        }
        log::info!("{id}: taking over the device from a previous backend ({state:?})");
        if let Some(d) = self.devices.get_mut(&id) {
            d.mcast_list_lost = true;
        }
        if state == XenbusState::Connected {
            let Some(dev) = self.devices.get(&id) else {
                return;
            };
            let (fe_path, be_path) = (dev.fe_path.clone(), dev.be_path.clone());
            let fe_state = self
                .xs
                .read(&format!("{fe_path}/state"))
                .ok()
                .and_then(|s| XenbusState::parse(&s));
            if matches!(
                fe_state,
                Some(XenbusState::Connected | XenbusState::Initialised)
            ) {
                if let Err(reason) = self.connect(id, &fe_path, &be_path, vifs)
                    && self.xs.broken().is_none()
                {
                    self.fail(id, reason, vifs);
                }
                return;
            }
        }
        // The frontend moved on meanwhile: follow it as for any state change.
        self.frontend_changed(id, vifs);
    }

    /// Refuses a device: `error` and `hotplug-error` say why (the toolstack shows the latter),
    /// a log line, Closed. It stays tracked but unprepared: offered again only once a new
    /// preparation works ([`Xenbus::reoffer`]).
    fn refuse(&mut self, id: VifId, why: &str, vifs: &mut impl VifControl) {
        // A refused device is offered again each time its frontend starts over: a guest can
        // repeat this as fast as it cycles its state.
        crate::ratelimit::guest_log(
            log::Level::Error,
            id,
            format_args!("{id}: refusing the device: {why}"),
        );
        if let Some(d) = self.devices.get(&id)
            && self.present(&d.be_path)
        {
            let _ = self.xs.write(&format!("{}/hotplug-error", d.be_path), why);
            let _ = self.xs.write(&format!("{}/error", d.be_path), why);
        }
        if let Some(d) = self.devices.get_mut(&id) {
            d.prepared = false;
        }
        self.set_state(id, XenbusState::Closed);
        vifs.release(id);
    }

    /// Whether the hotplug script has written `hotplug-status=connected`.
    fn hotplug_connected(&self, be_path: &str) -> bool {
        self.xs
            .read(&format!("{be_path}/hotplug-status"))
            .is_ok_and(|v| v.trim() == "connected")
    }

    /// The toolstack changed `rate` (`xl network-...`, or by hand): apply it live.
    fn rate_changed(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let Some(dev) = self.devices.get_mut(&id) else {
            return;
        };
        let rate = match self.xs.read(&format!("{}/rate", dev.be_path)) {
            Ok(r) => match Rate::parse(&r) {
                Ok(rate) => rate,
                Err(e) => {
                    if dev.cfg.rate.is_some() {
                        log::warn!("{id}: {e}");
                    }
                    None
                }
            },
            Err(_) => None,
        };
        if rate != dev.cfg.rate {
            log::info!(
                "{id}: rate {}",
                rate.map_or("unlimited".into(), |r| format!(
                    "{:.0} bytes/s ({} bytes per {:?})",
                    r.bytes_per_sec(),
                    r.bytes,
                    r.window
                ))
            );
            dev.cfg.rate = rate;
            vifs.set_rate(id, rate);
        }
    }

    /// Writes the features and goes to InitWait.
    fn offer(&mut self, id: VifId) {
        let Some(dev) = self.devices.get(&id) else {
            return;
        };
        if !self.present(&dev.be_path) {
            return; // Removed meanwhile: writing would recreate it.
        }
        for (k, v) in features(self.allow_flip, self.max_queues) {
            let _ = self.xs.write(&format!("{}/{k}", dev.be_path), &v);
        }
        let _ = self.xs.write(&format!("{}/{OWNER_NODE}", dev.be_path), "1");
        let _ = self.xs.rm(&format!("{}/error", dev.be_path));
        let _ = self.xs.rm(&format!("{}/hotplug-error", dev.be_path));
        if let Some(d) = self.devices.get_mut(&id) {
            d.mcast_list_lost = false;
            d.reconfigured = false;
        }
        self.set_state(id, XenbusState::InitWait);
    }

    /// Offers a closed device again (its frontend, or the toolstack, starts over). A device
    /// that was refused is prepared first, from the toolstack's keys as they are now; if that
    /// is refused again it stays Closed, saying why: it is never offered, so never connected,
    /// without its netdev or its switch (the data path would otherwise put it on the default
    /// switch).
    fn reoffer(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let Some(dev) = self.devices.get(&id) else {
            return;
        };
        if !dev.prepared {
            let cfg = read_device_config(&self.xs, &dev.be_path, id, self.policy);
            if self.xs.broken().is_some() {
                return;
            }
            if let Err(why) = vifs.prepare(id, &cfg) {
                self.refuse(id, &why, vifs);
                return;
            }
            if let Some(d) = self.devices.get_mut(&id) {
                d.cfg = cfg;
                d.prepared = true;
            }
        }
        self.offer(id);
    }

    /// The backend directory went away: disconnect and stop tracking the device.
    fn forget(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let Some(dev) = self.devices.remove(&id) else {
            return;
        };
        vifs.release(id);
        let _ = self
            .xs
            .unwatch(&format!("{}/state", dev.fe_path), &dev.fe_token);
        let _ = self.xs.unwatch(
            &format!("{}/request-multicast-control", dev.fe_path),
            &mc_token(id),
        );
        log::info!("{id}: device removed");
    }

    /// Records and writes the backend's state; as Linux's `xenbus_switch_state`, only while the
    /// `state` node exists, so a device whose directory the toolstack removed is not recreated.
    fn set_state(&mut self, id: VifId, state: XenbusState) {
        if let Some(d) = self.devices.get_mut(&id) {
            if d.state != state {
                log::info!("{id}: backend {:?} -> {state:?}", d.state);
            }
            d.state = state;
            d.reconfigured = false;
            let path = format!("{}/state", d.be_path);
            if self.xs.read(&path).is_ok() {
                let _ = self.xs.write(&path, state.as_str());
            }
        }
    }

    /// Writes the backend's state node without changing the state the device is tracked in
    /// (Reconfigured is an answer, not a state of its own), only while the node exists.
    fn write_state_node(&self, id: VifId, state: XenbusState) {
        if let Some(d) = self.devices.get(&id) {
            let path = format!("{}/state", d.be_path);
            if self.xs.read(&path).is_ok() {
                log::info!("{id}: backend state node {state:?}");
                let _ = self.xs.write(&path, state.as_str());
            }
        }
    }

    /// The frontend's `request-multicast-control` changed (or its watch was registered).
    fn multicast_control_changed(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let Some(dev) = self.devices.get(&id) else {
            return;
        };
        if dev.mcast_list_lost {
            return;
        }
        let on = read_flag(&self.xs, &dev.fe_path, "request-multicast-control");
        vifs.set_multicast_control(id, on);
    }

    /// The frontend's state changed: follow it.
    fn frontend_changed(&mut self, id: VifId, vifs: &mut impl VifControl) {
        let Some(dev) = self.devices.get(&id) else {
            return;
        };
        let fe_state = self
            .xs
            .read(&format!("{}/state", dev.fe_path))
            .ok()
            .and_then(|s| XenbusState::parse(&s));
        let ours = dev.state;
        let online = self
            .xs
            .read(&format!("{}/online", dev.be_path))
            .is_ok_and(|v| v.trim() == "1");
        if self.xs.broken().is_some() {
            return;
        }
        match (fe_state, ours) {
            (Some(XenbusState::Initialised | XenbusState::Connected), XenbusState::InitWait) => {
                let fe_path = dev.fe_path.clone();
                let be_path = dev.be_path.clone();
                match self.connect(id, &fe_path, &be_path, vifs) {
                    Ok(()) => self.connected(id, &be_path),
                    // Keys read over a broken connection say nothing: the frontend is looked
                    // at again after the reconnect.
                    Err(_) if self.xs.broken().is_some() => {}
                    Err(reason) => self.fail(id, reason, vifs),
                }
            }
            // XDP headroom (Linux's read_xenbus_frontend_xdp): the frontend wrote
            // `xdp-headroom` and went Reconfiguring; apply it and answer Reconfigured. The
            // device stays Connected (as Linux's backend state does), and its node says so again
            // once the frontend is back to Connected.
            (Some(XenbusState::Reconfiguring), XenbusState::Connected) => {
                let headroom = read_xdp_headroom(&self.xs, &dev.fe_path);
                log::info!("{id}: frontend reconfigured: xdp-headroom {headroom}");
                vifs.set_xdp_headroom(id, headroom);
                self.write_state_node(id, XenbusState::Reconfigured);
                if let Some(d) = self.devices.get_mut(&id) {
                    d.reconfigured = true;
                }
            }
            (Some(XenbusState::Connected), XenbusState::Connected) if dev.reconfigured => {
                self.write_state_node(id, XenbusState::Connected);
                if let Some(d) = self.devices.get_mut(&id) {
                    d.reconfigured = false;
                }
            }
            (Some(XenbusState::Closing), s)
                if s != XenbusState::Closed && s != XenbusState::Closing =>
            {
                vifs.disconnect(id);
                self.set_state(id, XenbusState::Closing);
            }
            (Some(XenbusState::Closed | XenbusState::Unknown) | None, s)
                if s != XenbusState::Closed =>
            {
                vifs.disconnect(id);
                self.set_state(id, XenbusState::Closed);
            }
            // A frontend that comes back after a close: offer the device again. A watch event
            // carries no value, so a frontend that wrote Closed and then Initialising before
            // this backend looked shows only Initialising; from Closing (or Connected: a
            // frontend that restarted without closing) let go of the old rings and go Closed
            // first, else the device would wait in Closing for a Closed already overwritten.
            (Some(XenbusState::Initialising), s) if online && s != XenbusState::InitWait => {
                if s != XenbusState::Closed {
                    vifs.disconnect(id);
                    self.set_state(id, XenbusState::Closed);
                }
                self.reoffer(id, vifs);
            }
            _ => {}
        }
    }

    /// The vif is connected on the data path: Connected, unless the toolstack asked the
    /// backend to wait for its hotplug script (an empty `hotplug-status` node, as libxl writes
    /// it; Linux 6.1 waits the same way), in which case Connected follows the script's
    /// `connected`.
    fn connected(&mut self, id: VifId, be_path: &str) {
        let node = self.xs.read(&format!("{be_path}/hotplug-status"));
        match node {
            Ok(v) if v.trim() != "connected" => {
                log::info!("{id}: waiting for the hotplug script (hotplug-status {v:?})");
                if let Some(d) = self.devices.get_mut(&id) {
                    d.awaiting_hotplug = true;
                }
            }
            _ => self.set_state(id, XenbusState::Connected),
        }
    }

    fn connect(
        &mut self,
        id: VifId,
        fe_path: &str,
        _be_path: &str,
        vifs: &mut impl VifControl,
    ) -> Result<(), FrontendError> {
        let mut keys = read_frontend_keys(&self.xs, fe_path, self.allow_flip, self.max_queues)?;
        if self.devices.get(&id).is_some_and(|d| d.mcast_list_lost) && keys.multicast_control {
            log::warn!(
                "{id}: the previous backend's multicast list is lost: every multicast frame \
                 reaches the guest until it reconnects"
            );
            keys.multicast_control = false;
        }
        let (mode, queues) = (keys.mode, keys.queues.len());
        let split = keys.queues.iter().any(|q| q.event_channel_rx.is_some());
        vifs.connect(id, keys)?;
        let cfg = self.devices.get(&id).map(|d| &d.cfg);
        log::info!(
            "{id}: connected ({mode:?} mode, {queues} queue{}{}, {})",
            if queues == 1 { "" } else { "s" },
            if split { ", split event channels" } else { "" },
            match cfg {
                Some(c) if c.mode == VifMode::Host => format!("netdev {}", c.netdev),
                Some(c) => format!(
                    "switch {}, mac {}",
                    c.switch,
                    c.mac.map_or("any".to_string(), |m| m.to_string())
                ),
                None => "switch xenbr0".into(),
            }
        );
        Ok(())
    }

    /// `xenbus_dev_fatal`: log, write `error`, close.
    fn fail(&mut self, id: VifId, reason: FrontendError, vifs: &mut impl VifControl) {
        crate::ratelimit::guest_log(
            log::Level::Error,
            id,
            format_args!("{id}: cannot connect the frontend: {reason}"),
        );
        if let Some(d) = self.devices.get(&id)
            && self.present(&d.be_path)
        {
            let _ = self
                .xs
                .write(&format!("{}/error", d.be_path), &reason.to_string());
        }
        vifs.disconnect(id);
        self.set_state(id, XenbusState::Closed);
    }
}

/// Reads and validates the frontend's keys (`connect_data_rings` for each queue,
/// `read_xenbus_vif_flags`), as Linux 6.1 reads them: `multi-queue-num-queues` (default 1; more
/// than `max_queues` is refused); with one queue the ring keys are in the frontend's directory,
/// with several in `queue-N/`; each queue's `event-channel-tx` and `event-channel-rx` when both
/// are there (split event channels), else its `event-channel`.
pub fn read_frontend_keys(
    xs: &impl XenStore,
    fe_path: &str,
    allow_flip: bool,
    max_queues: u32,
) -> Result<FrontendKeys, FrontendError> {
    let read_u32 = |dir: &str, key: &'static str| -> Result<Option<u32>, FrontendError> {
        match xs.read(&format!("{dir}/{key}")) {
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| FrontendError::NotANumber { key, value: v }),
            Err(_) => Ok(None),
        }
    };
    // Linux 6.1 reads it with a default of 1, a value that is not a number included.
    let num_queues = read_u32(fe_path, "multi-queue-num-queues")
        .ok()
        .flatten()
        .unwrap_or(1);
    if num_queues == 0 || num_queues > max_queues {
        return Err(FrontendError::TooManyQueues {
            asked: num_queues,
            max: max_queues,
        });
    }
    let mut queues = Vec::with_capacity(num_queues as usize);
    for n in 0..num_queues {
        let dir = if num_queues == 1 {
            fe_path.to_string()
        } else {
            format!("{fe_path}/queue-{n}")
        };
        let required =
            |key: &'static str| read_u32(&dir, key)?.ok_or(FrontendError::Missing { key });
        let tx = required("tx-ring-ref")?;
        let rx = required("rx-ring-ref")?;
        let (evtchn, evtchn_rx) = match (
            read_u32(&dir, "event-channel-tx")?,
            read_u32(&dir, "event-channel-rx")?,
        ) {
            (Some(t), Some(r)) => (t, Some(Port(r))),
            _ => (required("event-channel")?, None),
        };
        queues.push(QueueKeys {
            tx_ring_ref: GrantRef(tx),
            rx_ring_ref: GrantRef(rx),
            event_channel: Port(evtchn),
            event_channel_rx: evtchn_rx,
        });
    }
    let mode = match read_u32(fe_path, "request-rx-copy")?.unwrap_or(0) {
        0 if allow_flip => RxMode::Flip,
        0 => return Err(FrontendError::FlipNotOffered),
        _ => RxMode::Copy,
    };
    // `feature-rx-notify` is not required: Linux only shortens its drain timeout without it,
    // and this backend arms `req_event` itself when it waits for buffers.
    // A `feature-*` key is read as Linux 6.1's `xenbus_read_unsigned(.., 0)` reads it: missing
    // or not a number is 0 (off), and the vif still connects.
    let flag = |key: &'static str| read_u32(fe_path, key).ok().flatten().unwrap_or(0) != 0;
    // What the frontend takes on its rx ring (Linux's read_xenbus_vif_flags).
    let offload = FrontendOffloads {
        sg: flag("feature-sg"),
        csum: !flag("feature-no-csum-offload"),
        ipv6_csum: flag("feature-ipv6-csum-offload"),
        gso_tcpv4: flag("feature-gso-tcpv4"),
        gso_tcpv6: flag("feature-gso-tcpv6"),
    };
    // Linux's connect_ctrl_ring: no `ctrl-ring-ref` (or one that is not a number) is no ctrl
    // ring; with one, `event-channel-ctrl` is required.
    let ctrl = match read_u32(fe_path, "ctrl-ring-ref").ok().flatten() {
        None => None,
        Some(r) => Some(crate::ctrl::CtrlKeys {
            ring_ref: GrantRef(r),
            event_channel: Port(read_u32(fe_path, "event-channel-ctrl")?.ok_or(
                FrontendError::Missing {
                    key: "event-channel-ctrl",
                },
            )?),
        }),
    };
    Ok(FrontendKeys {
        queues,
        mode,
        offload,
        ctrl,
        multicast_control: flag("request-multicast-control"),
        xdp_headroom: read_xdp_headroom(xs, fe_path),
    })
}

/// A frontend flag as Linux's `xenbus_read_unsigned(.., 0)` reads it: missing or not a number
/// is off.
fn read_flag(xs: &impl XenStore, dir: &str, key: &str) -> bool {
    xs.read(&format!("{dir}/{key}"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|v| v != 0)
}

/// `xdp-headroom` as Linux's `read_xenbus_frontend_xdp` reads it (`%hu`): missing or not a
/// number is 0; the value is taken modulo 65536 and clamped to `XEN_NETIF_MAX_XDP_HEADROOM`.
pub fn read_xdp_headroom(xs: &impl XenStore, fe_path: &str) -> u16 {
    xs.read(&format!("{fe_path}/xdp-headroom"))
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |v| {
            (v as u16).min(netif_ring::netif::XEN_NETIF_MAX_XDP_HEADROOM)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_match_whole_components() {
        let base = "/local/domain/0/backend/vif";
        let id = |domid, devid| Some(VifId { domid, devid });
        assert_eq!(parse_device_path(base, &format!("{base}/1/0")), id(1, 0));
        assert_eq!(
            parse_device_path(base, &format!("{base}/10/2/state")),
            id(10, 2)
        );
        assert_eq!(parse_device_path(base, &format!("{base}/1")), None);
        assert_eq!(parse_device_path(base, base), None);
        // A sibling tree whose name merely starts with the base is not ours.
        assert_eq!(parse_device_path(base, &format!("{base}x/1/0")), None);
        assert_eq!(parse_device_path(base, &format!("{base}/1x/0")), None);
    }

    #[test]
    fn frontend_tokens_round_trip_and_reject_junk() {
        let v = VifId {
            domid: 10,
            devid: 1,
        };
        assert_eq!(parse_fe_token(&fe_token(v)), Some(v));
        // vif1.0 and vif10.0 never collide (the old prefix match on paths did).
        assert_ne!(
            fe_token(VifId { domid: 1, devid: 0 }),
            fe_token(VifId {
                domid: 10,
                devid: 0
            })
        );
        for junk in [
            "netback",
            "netback-fe:1",
            "netback-fe:1:2:3",
            "netback-fe:a:b",
        ] {
            assert_eq!(parse_fe_token(junk), None, "{junk}");
        }
    }
}
