//! The command line: what the user asks for, checked before anything starts.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use ipnet::Ipv4Net;

/// Largest number of embedded guests (domids 1..=N; the model's domain table is 1024 wide).
pub const MAX_GUESTS: u16 = 250;

/// netbackd: the splitnet driver-domain backend.
///
/// Serves Xen network frontends from a bridge-lite switch whose other ports are uplinks into
/// Linux. By default it runs on the embedded hypervisor with `--guests N` guests of its own
/// (netfront + smoltcp, answering ping, TCP echo on 7, discard on 9 and iperf3 on 5201).
///
/// Example: `netbackd --guests 2 --uplink tap:sn0,addr=10.99.0.1/24`, then from Linux
/// `ping 10.99.0.2` and `iperf3 -c 10.99.0.2`.
#[derive(Debug, Clone, Parser)]
#[command(name = "netbackd", version, about, long_about = None, verbatim_doc_comment)]
pub struct Args {
    /// Serve real Xen guests from this domain (dom0 or a driver domain) through /dev/xen
    /// (gntdev, evtchn) and xenstore, instead of the embedded hypervisor.
    #[arg(long)]
    pub xen: bool,

    /// An uplink into Linux, as a switch port (repeatable):
    /// `tap:NAME[,addr=A.B.C.D/N][,mtu=N][,offload=off]` creates (or attaches to) TAP device
    /// NAME, sets it up and, with `addr=`, gives it that address; `nic:IFNAME[,offload=off]`
    /// attaches to an existing interface through an AF_PACKET socket. Both carry checksum
    /// offload and TCP segmentation offload (64 KiB super-frames) through a virtio-net header
    /// unless `offload=off`.
    #[arg(long = "uplink", value_name = "tap:NAME | nic:IFNAME")]
    pub uplinks: Vec<UplinkSpec>,

    /// Embedded guests to create at start (not with --xen).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub guests: u16,

    /// The guests' network: guest k (1-based) is address .(k+1), MAC 00:16:3e:00:00:(k+1); .1 is
    /// left for the Linux side (e.g. the TAP's address).
    #[arg(long, default_value = "10.99.0.0/24", value_name = "CIDR", value_parser = parse_net)]
    pub guest_net: Ipv4Net,

    /// The guests' IP MTU (68..=65521; above 4082 frames take several slots).
    #[arg(long, default_value_t = 1500, value_name = "BYTES")]
    pub mtu: u32,

    /// How the embedded guests receive: grant copy, or page flip (the 2006 baseline; embedded
    /// hypervisor only).
    #[arg(long, value_enum, default_value_t = Mode::Copy)]
    pub mode: Mode,

    /// Grant-copy ops per hypercall (1 = unbatched).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,

    /// Print counters every S seconds (0: only on SIGUSR1 and at exit).
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub stats_interval: f64,

    /// Also write the counters as JSON to PATH whenever they are printed.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,

    /// Capture a switch port into a pcap file (repeatable): PORT is `vif<domid>.<devid>`,
    /// `tap:NAME` or `nic:IFNAME`.
    #[arg(long = "pcap", value_name = "PORT:FILE")]
    pub pcaps: Vec<PcapSpec>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log: log::LevelFilter,
}

/// How the embedded guests receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Grant copy into buffers the guest posts.
    Copy,
    /// Page flipping (embedded hypervisor only).
    Flip,
}

/// An uplink from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkSpec {
    /// A TAP device.
    Tap {
        /// Its name.
        name: String,
        /// An address (and prefix) to give it.
        addr: Option<Ipv4Net>,
        /// An MTU to set on it.
        mtu: Option<u32>,
        /// Checksum and segmentation offload through the virtio-net header (`offload=on`,
        /// the default).
        offload: bool,
    },
    /// An existing interface through AF_PACKET.
    Nic {
        /// Its name.
        name: String,
        /// Checksum and segmentation offload through the virtio-net header (`offload=on`,
        /// the default).
        offload: bool,
    },
}

impl UplinkSpec {
    /// The name reports, logs and `--pcap` use: `tap:NAME` or `nic:IFNAME`.
    pub fn port_name(&self) -> String {
        match self {
            UplinkSpec::Tap { name, .. } => format!("tap:{name}"),
            UplinkSpec::Nic { name, .. } => format!("nic:{name}"),
        }
    }
}

impl FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write tap:NAME[,addr=A.B.C.D/N][,mtu=N][,offload=off] or \
                     nic:IFNAME[,offload=off]";
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("uplink {s:?} names no kind; {usage}"))?;
        if kind != "tap" && kind != "nic" {
            return Err(format!("uplink kind {kind:?} is unknown; {usage}"));
        }
        let mut parts = rest.split(',');
        let name = parts.next().unwrap_or_default().to_string();
        hostnet::iface::check_name(&name).map_err(|e| format!("uplink {s:?}: {e}"))?;
        let (mut addr, mut mtu, mut offload) = (None, None, true);
        for opt in parts {
            match (kind, opt.split_once('=')) {
                ("tap", Some(("addr", v))) => addr = Some(parse_addr(v)?),
                ("tap", Some(("mtu", v))) => {
                    mtu = Some(
                        v.parse()
                            .map_err(|_| format!("uplink {s:?}: mtu={v} is not a number"))?,
                    )
                }
                (_, Some(("offload", v))) => {
                    offload = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("uplink {s:?}: write offload=on or offload=off")),
                    }
                }
                _ => return Err(format!("uplink {s:?}: unknown option {opt:?}; {usage}")),
            }
        }
        Ok(if kind == "tap" {
            UplinkSpec::Tap {
                name,
                addr,
                mtu,
                offload,
            }
        } else {
            UplinkSpec::Nic { name, offload }
        })
    }
}

/// A `--pcap PORT:FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapSpec {
    /// The port's name: `vif<domid>.<devid>`, `tap:NAME` or `nic:IFNAME`.
    pub port: String,
    /// Where the capture goes.
    pub file: PathBuf,
}

impl FromStr for PcapSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write PORT:FILE with PORT vif<domid>.<devid>, tap:NAME or nic:IFNAME";
        // Uplink names have a colon of their own: tap:sn0:file.pcap.
        let split = if s.starts_with("tap:") || s.starts_with("nic:") {
            s.match_indices(':').nth(1).map(|(i, _)| i)
        } else {
            s.find(':')
        };
        let i = split.ok_or_else(|| format!("--pcap {s:?} has no FILE; {usage}"))?;
        let (port, file) = (&s[..i], &s[i + 1..]);
        if file.is_empty() {
            return Err(format!("--pcap {s:?} has no FILE; {usage}"));
        }
        if !(port.starts_with("tap:") || port.starts_with("nic:") || parse_vif(port).is_some()) {
            return Err(format!("--pcap port {port:?} is not a port name; {usage}"));
        }
        Ok(PcapSpec {
            port: port.to_string(),
            file: PathBuf::from(file),
        })
    }
}

/// Parses `vif<domid>.<devid>`.
pub fn parse_vif(s: &str) -> Option<(u16, u32)> {
    let (d, n) = s.strip_prefix("vif")?.split_once('.')?;
    Some((d.parse().ok()?, n.parse().ok()?))
}

fn parse_net(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        format!("{s:?} is not an IPv4 network; write it as A.B.C.D/N, e.g. 10.99.0.0/24")
    })?;
    if net.prefix_len() > 30 {
        return Err(format!(
            "{s} has room for no guests (/{} leaves too few addresses); use /30 or shorter",
            net.prefix_len()
        ));
    }
    Ok(net.trunc())
}

fn parse_addr(s: &str) -> Result<Ipv4Net, String> {
    s.parse().map_err(|_| {
        format!("addr={s} is not an IPv4 address with a prefix; write e.g. addr=10.99.0.1/24")
    })
}

impl Args {
    /// Checks what clap cannot: combinations and ranges. The error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.xen && self.mode == Mode::Flip {
            return Err(
                "--mode flip is not possible with --xen: page flipping needs the \
                        hypervisor to move pages, which Linux userspace cannot ask for; use \
                        --mode copy"
                    .into(),
            );
        }
        if !self.xen && (self.guests == 0 || self.guests > MAX_GUESTS) {
            return Err(format!(
                "--guests {} is out of range: 1..={MAX_GUESTS} embedded guests",
                self.guests
            ));
        }
        if !(68..=65521).contains(&self.mtu) {
            return Err(format!(
                "--mtu {} is out of range: 68..=65521 (a netif tx packet is at most 65535 bytes \
                 with its Ethernet header)",
                self.mtu
            ));
        }
        if self.batch == 0 {
            return Err("--batch must be at least 1 (1 = one hypercall per op)".into());
        }
        if !(self.stats_interval >= 0.0 && self.stats_interval.is_finite()) {
            return Err(format!(
                "--stats-interval {} must be a number of seconds, 0 or more",
                self.stats_interval
            ));
        }
        let hosts = u32::from(self.guests) + 1;
        if !self.xen && u64::from(hosts) > self.guest_net.hosts().count() as u64 {
            return Err(format!(
                "--guest-net {} holds {} host addresses: too few for .1 plus {} guests",
                self.guest_net,
                self.guest_net.hosts().count(),
                self.guests
            ));
        }
        let mut names: Vec<String> = self.uplinks.iter().map(UplinkSpec::port_name).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("uplink {} is given twice", w[0]));
        }
        for p in &self.pcaps {
            if parse_vif(&p.port).is_none() && !names.contains(&p.port) {
                return Err(format!(
                    "--pcap {}: no uplink {} was given (add --uplink {})",
                    p.port, p.port, p.port
                ));
            }
        }
        Ok(())
    }

    /// Guest `k`'s (1-based) address.
    pub fn guest_addr(&self, k: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.guest_net.network()) + u32::from(k) + 1)
    }

    /// Guest `k`'s (1-based) MAC.
    pub fn guest_mac(k: u16) -> [u8; 6] {
        let [hi, lo] = (k + 1).to_be_bytes();
        [0x00, 0x16, 0x3e, 0x00, hi, lo]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, String> {
        let mut v = vec!["netbackd"];
        v.extend_from_slice(extra);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        a.validate()?;
        Ok(a)
    }

    #[test]
    fn defaults_are_one_guest_on_10_99_0_0() {
        let a = args(&[]).unwrap();
        assert_eq!(a.guests, 1);
        assert_eq!(a.guest_addr(1), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(Args::guest_mac(1), [0x00, 0x16, 0x3e, 0, 0, 2]);
        assert_eq!(Args::guest_mac(2), [0x00, 0x16, 0x3e, 0, 0, 3]);
        assert_eq!(a.mode, Mode::Copy);
    }

    #[test]
    fn uplinks_parse_with_their_options() {
        let a = args(&[
            "--uplink",
            "tap:sn0,addr=10.99.0.1/24,mtu=9000",
            "--uplink",
            "nic:eth0",
            "--uplink",
            "tap:sn1,offload=off",
            "--uplink",
            "nic:eth1,offload=off",
        ])
        .unwrap();
        assert_eq!(
            a.uplinks,
            vec![
                UplinkSpec::Tap {
                    name: "sn0".into(),
                    addr: Some("10.99.0.1/24".parse().unwrap()),
                    mtu: Some(9000),
                    offload: true,
                },
                UplinkSpec::Nic {
                    name: "eth0".into(),
                    offload: true,
                },
                UplinkSpec::Tap {
                    name: "sn1".into(),
                    addr: None,
                    mtu: None,
                    offload: false,
                },
                UplinkSpec::Nic {
                    name: "eth1".into(),
                    offload: false,
                },
            ]
        );
        for bad in [
            "sn0",
            "tap:",
            "tap:sn0,addr=10.99.0.1",
            "tap:sn0,color=red",
            "nic:eth0,addr=1.2.3.4/8",
            "tap:sn0,offload=maybe",
            "tap:sn0,offload",
            "veth:x",
            "tap:this-name-is-far-too-long",
        ] {
            let e = args(&["--uplink", bad]).unwrap_err();
            assert!(e.contains("write") || e.contains("name"), "{bad}: {e}");
        }
        let dup = args(&["--uplink", "tap:a", "--uplink", "tap:a"]).unwrap_err();
        assert!(dup.contains("given twice"), "{dup}");
    }

    #[test]
    fn bad_networks_and_ranges_say_what_to_do() {
        let e = args(&["--guest-net", "10.99.0.0/33"]).unwrap_err();
        assert!(e.contains("A.B.C.D/N"), "{e}");
        let e = args(&["--guest-net", "10.99.0.0/30", "--guests", "3"]).unwrap_err();
        assert!(e.contains("too few"), "{e}");
        assert!(args(&["--guest-net", "10.99.0.0/29", "--guests", "5"]).is_ok());
        let e = args(&["--guests", "0"]).unwrap_err();
        assert!(e.contains("1..="), "{e}");
        let e = args(&["--mtu", "70000"]).unwrap_err();
        assert!(e.contains("65521"), "{e}");
        let e = args(&["--xen", "--mode", "flip"]).unwrap_err();
        assert!(e.contains("--mode copy"), "{e}");
        // The network is truncated to its base: 10.99.0.7/24 means 10.99.0.0/24.
        let a = args(&["--guest-net", "10.99.0.7/24"]).unwrap();
        assert_eq!(a.guest_addr(1), Ipv4Addr::new(10, 99, 0, 2));
    }

    #[test]
    fn pcap_specs_name_a_port_and_a_file() {
        let a = args(&[
            "--uplink",
            "tap:sn0",
            "--pcap",
            "tap:sn0:/tmp/up.pcap",
            "--pcap",
            "vif1.0:g.pcap",
        ])
        .unwrap();
        assert_eq!(a.pcaps[0].port, "tap:sn0");
        assert_eq!(a.pcaps[0].file, PathBuf::from("/tmp/up.pcap"));
        assert_eq!(a.pcaps[1].port, "vif1.0");
        let e = args(&["--pcap", "tap:sn0:x.pcap"]).unwrap_err();
        assert!(e.contains("add --uplink tap:sn0"), "{e}");
        assert!(args(&["--pcap", "eth0:x.pcap"]).is_err());
        assert!(args(&["--pcap", "vif1.0:"]).is_err());
        assert_eq!(parse_vif("vif10.2"), Some((10, 2)));
        assert_eq!(parse_vif("vif10"), None);
    }
}
