//! An embedded guest's vCPU: a thread in a domain of any hypervisor behind the seam
//! ([`FrontendDomain`]) that runs netfront (connected through xenbus, exactly as a frontend does),
//! smoltcp on top, and the [services](crate::Services): ping, TCP echo, discard, iperf3. It
//! publishes its counters as it works and stops when asked.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor::FrontendDomain;
use netfront::{FrontConfig, Netfront, RxMode};
use serde::Serialize;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::{Error, Services, ServicesConfig, ServicesStats};

/// Longest a guest sleeps in one wait, so it sees a stop request promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// What a guest is.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// 1-based number.
    pub index: u16,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its network's prefix length.
    pub prefix: u8,
    /// Its IP MTU.
    pub mtu: usize,
    /// Copy or flip.
    pub mode: RxMode,
}

/// A guest's counters, as the backend's reports show them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestReport {
    /// 1-based number.
    pub index: u16,
    /// Its domain.
    pub domid: u16,
    /// Its address.
    pub addr: String,
    /// Whether its netfront is connected.
    pub connected: bool,
    /// Why it is not, if it failed.
    pub error: Option<String>,
    /// netfront's counters.
    pub netfront: netfront::Stats,
    /// The services' counters.
    pub services: ServicesStats,
}

/// A running guest: its thread and what it publishes.
#[derive(Debug)]
pub struct Guest {
    /// What it publishes (updated as it works).
    pub report: Arc<Mutex<GuestReport>>,
    thread: JoinHandle<()>,
}

impl Guest {
    /// Starts guest `spec` in domain `dom` (whose vif 0 the toolstack has created): its vCPU
    /// thread connects netfront and serves until `stop`, then closes netfront (giving every
    /// page and grant back).
    pub fn start<D: FrontendDomain>(
        dom: D,
        spec: GuestSpec,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Guest> {
        let report = Arc::new(Mutex::new(GuestReport {
            index: spec.index,
            domid: dom.domid(),
            addr: spec.addr.to_string(),
            ..GuestReport::default()
        }));
        let published = report.clone();
        let thread = std::thread::Builder::new()
            .name(format!("guest{}", spec.index))
            .spawn(move || {
                xenoprof::register_vcpu(dom.domid(), xenoprof::Context::Kernel);
                if let Err(e) = serve(dom, &spec, &stop, &published) {
                    log::error!("guest {} ({}): {e}", spec.index, spec.addr);
                    if let Ok(mut r) = published.lock() {
                        r.error = Some(e.to_string());
                        r.connected = false;
                    }
                }
            })?;
        Ok(Guest { report, thread })
    }

    /// Waits for the guest's thread to finish (after the stop flag is set).
    pub fn join(self) -> GuestReport {
        let _ = self.thread.join();
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Runs guest `spec` in domain `dom` on the calling thread, as [`Guest::start`]'s thread does
/// (which also registers the thread as `dom`'s vCPU with xenoprof): connects netfront, serves
/// until `stop`, then closes netfront. Counters go into `published` as it works (its `index`,
/// `domid` and `addr` are the caller's to fill). A backend that goes away ends the loop early;
/// netfront is still closed and that is not an error.
pub fn serve<D: FrontendDomain>(
    dom: D,
    spec: &GuestSpec,
    stop: &AtomicBool,
    published: &Mutex<GuestReport>,
) -> Result<(), Error> {
    let cfg = FrontConfig {
        rx_mode: spec.mode,
        mtu: spec.mtu,
        timeout: Duration::from_secs(10),
        ..FrontConfig::default()
    };
    let mut nf = Netfront::connect(dom, 0, cfg).map_err(Error::Connect)?;
    log::info!(
        "guest {}: netfront connected, {} on {}",
        spec.index,
        spec.addr,
        EthernetAddress(spec.mac)
    );
    let clock = std::time::Instant::now();
    let now = || Instant::from_micros(clock.elapsed().as_micros() as i64);
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(spec.mac)));
    config.random_seed = u64::from(spec.index).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut iface = Interface::new(config, &mut nf, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(spec.addr.into(), spec.prefix));
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut services = Services::new(&mut sockets, &ServicesConfig::default());
    let publish = |nf: &Netfront<D>, services: &Services| {
        if let Ok(mut r) = published.lock() {
            r.connected = true;
            r.netfront = nf.stats();
            r.services = services.stats();
        }
    };
    publish(&nf, &services);
    let mut ended = None;
    // Relaxed: a stop flag; the thread's join orders everything after.
    while !stop.load(Ordering::Relaxed) {
        let t = now();
        iface.poll(t, &mut nf, &mut sockets);
        let worked = services.poll(&mut sockets, t);
        if let Err(e) = nf.poll() {
            ended = Some(e.to_string());
            break;
        }
        if worked {
            publish(&nf, &services);
            continue;
        }
        let mut delay = iface
            .poll_delay(t, &sockets)
            .map_or(MAX_WAIT, |d| Duration::from_micros(d.total_micros()))
            .min(MAX_WAIT);
        if let Some(at) = services.poll_at() {
            let until = if at > t { at - t } else { Default::default() };
            delay = delay.min(Duration::from_micros(until.total_micros()));
        }
        if let Err(e) = nf.wait(Some(delay)) {
            ended = Some(e.to_string());
            break;
        }
        publish(&nf, &services);
    }
    publish(&nf, &services);
    if let Some(e) = &ended {
        // Relaxed: as above.
        if stop.load(Ordering::Relaxed) {
            log::info!("guest {}: the backend closed the device", spec.index);
        } else {
            log::warn!("guest {}: backend went away: {e}", spec.index);
        }
    }
    nf.close().map_err(Error::Close)?;
    if let Ok(mut r) = published.lock() {
        r.connected = false;
    }
    log::info!("guest {}: netfront closed", spec.index);
    Ok(())
}
