//! A network namespace of the test's own, and a guest (smoltcp on a TAP device inside it)
//! running `Services`. Root only; callers skip otherwise.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use netbackd::guest::{Services, ServicesConfig, ServicesStats};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Medium, TunTapInterface};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

pub use hostnet::netns::Netns;

/// The namespace for a test, or why the test cannot run here (not root, a tool missing).
pub fn netns(tag: &str, tools: &[&str]) -> Result<Netns, String> {
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun: load the tun module (modprobe tun)".into());
    }
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!(
                "`{tool}` not found: install it (apt-get install -y iproute2 iputils-ping iperf3)"
            ));
        }
    }
    Netns::new(tag).map_err(|e| e.to_string())
}

/// Run a command and insist it succeeds.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A guest inside a namespace: smoltcp on a TAP device, serving `Services`; stopped on drop.
#[derive(Debug)]
pub struct Guest {
    stop: Option<mpsc::Sender<()>>,
    /// The services' counters, published by the guest after every poll that did work.
    stats: Arc<Mutex<ServicesStats>>,
    thread: Option<JoinHandle<ServicesStats>>,
}

impl Guest {
    /// Create TAP `tap` inside `ns` and serve on `addr`/24 from a thread of its own.
    pub fn start(ns: &Netns, tap: &str, addr: Ipv4Address, cfg: ServicesConfig) -> Guest {
        let tap = tap.to_owned();
        let ns_name = ns.name().to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let stats = Arc::new(Mutex::new(ServicesStats::default()));
        let published = Arc::clone(&stats);
        let thread = thread::spawn(move || {
            let opened = hostnet::netns::enter(&ns_name)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    TunTapInterface::new(&tap, Medium::Ethernet).map_err(|e| e.to_string())
                });
            let mut dev = match opened {
                Ok(dev) => dev,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("TAP {tap} in {ns_name}: {e}")));
                    return ServicesStats::default();
                }
            };
            let clock = std::time::Instant::now();
            let now = || Instant::from_micros(clock.elapsed().as_micros() as i64);
            let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
                0x02, 0x00, 0x5e, 0xc7, 0x05, 0x02,
            ])));
            config.random_seed = 0x5eed_c705;
            let mut iface = Interface::new(config, &mut dev, now());
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::new(addr.into(), 24));
            });
            let mut sockets = SocketSet::new(Vec::new());
            let mut services = Services::new(&mut sockets, &cfg);
            let _ = ready_tx.send(Ok(()));
            // Runs until the `Guest` drops its sender.
            while let Err(TryRecvError::Empty) = stop_rx.try_recv() {
                let t = now();
                iface.poll(t, &mut dev, &mut sockets);
                if services.poll(&mut sockets, t) {
                    if let Ok(mut s) = published.lock() {
                        *s = services.stats();
                    }
                    continue;
                }
                // Wake at least every 20 ms to see the stop request.
                let mut delay = iface
                    .poll_delay(t, &sockets)
                    .unwrap_or(Duration::from_millis(20))
                    .min(Duration::from_millis(20));
                if let Some(at) = services.poll_at() {
                    delay = delay.min(if at > t { at - t } else { Duration::ZERO });
                }
                let _ = phy::wait(dev.as_raw_fd(), Some(delay));
            }
            services.stats()
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("guest did not start: {e}"),
            Err(_) => panic!("guest thread died before it was ready"),
        }
        Guest {
            stop: Some(stop_tx),
            stats,
            thread: Some(thread),
        }
    }

    /// Wait until the guest's counters satisfy `done` (the last packets of an exchange may
    /// still be on their way when the peer's program exits). Gives up after `limit`, a hang
    /// guard, and returns the counters either way for the caller to assert on.
    pub fn wait_for(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&ServicesStats) -> bool,
    ) -> ServicesStats {
        let start = std::time::Instant::now();
        loop {
            let now = self.stats.lock().map(|s| *s).unwrap_or_default();
            if done(&now) || start.elapsed() >= limit {
                return now;
            }
            thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
