//! The command line: what the user asks for, checked before anything starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use ipnet::Ipv4Net;

/// Largest number of embedded guests (domids 1..=N; the model's domain table is 1024 wide).
pub const MAX_GUESTS: u16 = 250;

/// netbackd: the splitnet driver-domain backend.
///
/// Serves Xen network frontends, each vif as the toolstack configured it: a vif whose hotplug
/// script is vif-splitnet joins the bridge-lite switch its bridge= names (builtin mode); any
/// other vif becomes a netdev of this domain, vif<domid>.<devid> (a TAP), for the toolstack's
/// own script (vif-bridge, vif-route, vif-openvswitch) as with Linux's xen-netback (host mode).
/// Switches' other ports are uplinks into Linux. By default it runs on the embedded hypervisor
/// with `--guests N` guests of its own (netfront + smoltcp, answering ping, TCP echo on 7,
/// discard on 9 and iperf3 on 5201).
///
/// At SIGINT/SIGTERM netbackd leaves connected vifs and their netdevs as they are, for the
/// next netbackd to take over (an upgrade, a restart); --close-on-exit closes them instead.
///
/// Example: `netbackd --guests 2 --uplink tap:sn0,addr=10.99.0.1/24`, then from Linux
/// `ping 10.99.0.2` and `iperf3 -c 10.99.0.2`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "netbackd",
    version,
    about,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A subcommand (the daemon runs without one).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Read options from a TOML file: each key is a long option's name without the dashes
    /// (`uplink = ["tap:sn0,addr=10.99.0.1/24"]`, `log = "info"`, `xen = true`). Options given
    /// on the command line win. SIGHUP reads it again and applies what can change live (log,
    /// stats-interval, default-rate), logging what it applied and what needs a restart.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve real Xen guests from this domain (dom0 or a driver domain) through /dev/xen
    /// (gntdev, evtchn) and xenstore, instead of the embedded hypervisor.
    #[arg(long)]
    pub xen: bool,

    /// An uplink into Linux, as a port of a switch (repeatable):
    /// `tap:NAME[,addr=A.B.C.D/N][,mtu=N][,offload=off][,switch=S]` creates (or attaches to)
    /// TAP device NAME, sets it up and, with `addr=`, gives it that address;
    /// `nic:IFNAME[,offload=off][,switch=S]` attaches to an existing interface through an
    /// AF_PACKET socket. It goes on switch S (default xenbr0), which builtin vifs whose
    /// bridge= is S join. Both carry checksum offload and TCP segmentation offload (64 KiB
    /// super-frames) through a virtio-net header unless `offload=off`.
    #[arg(long = "uplink", value_name = "tap:NAME | nic:IFNAME")]
    pub uplinks: Vec<UplinkSpec>,

    /// A switch with no uplink (repeatable): builtin vifs whose bridge= names it talk only
    /// among themselves. (Switches with uplinks are made by --uplink ...,switch=NAME; xenbr0
    /// always exists.)
    #[arg(long = "switch", value_name = "NAME", value_parser = parse_switch)]
    pub switches: Vec<String>,

    /// How each vif is served: auto (from its hotplug script: vif-splitnet is builtin, any
    /// other script host), host (every vif is a vif<domid>.<devid> netdev for the toolstack's
    /// script), builtin (every vif joins the switch its bridge= names).
    #[arg(long, value_enum, default_value_t = VifModeArg::Auto, value_name = "MODE")]
    pub vif_mode: VifModeArg,

    /// Queues a guest may ask for (multi-queue-max-queues; Linux's netfront asks for one per
    /// vCPU up to this). Default: min(8, this domain's online CPUs), as Linux's xen-netback.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_queues: Option<u32>,

    /// At SIGINT/SIGTERM, close every device (Closing, then Closed: the guests see their
    /// backend go) and remove the vif netdevs. Without it the vifs stay Connected and the
    /// netdevs stay, for the next netbackd to take over.
    #[arg(long)]
    pub close_on_exit: bool,

    /// Where netbackd keeps its control socket (ctl.sock, root only; see `netbackd ctl`)
    /// and, with --xen, its lock file dom<domid>.lock with its pid: one netbackd per backend
    /// domain (made 0700 if missing).
    #[arg(long, default_value = DEFAULT_RUN_DIR, value_name = "DIR")]
    pub run_dir: PathBuf,

    /// Limit the transmit of every vif whose vif line has no rate= to BYTES per USECS
    /// microseconds, as libxl writes rate= (a vif's own rate= wins). Changes live on SIGHUP.
    #[arg(long, value_name = "BYTES,USECS", value_parser = parse_default_rate)]
    pub default_rate: Option<String>,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (a bare PORT listens on
    /// 127.0.0.1). Off unless given.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,

    /// After setup, run as this user (NAME, or UID[:GID]), keeping only the capabilities the
    /// data path still needs. Devices, sockets and uplinks are opened as root first.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Do not install the seccomp allowlist after setup (for debugging only: a syscall
    /// outside the list otherwise kills netbackd with SIGSYS, exit status 159). Capabilities
    /// are still dropped.
    #[arg(long)]
    pub no_seccomp: bool,

    /// Testing aid: after confinement, make a syscall outside the allowlist (chroot), which
    /// the filter must answer by killing the process with SIGSYS.
    #[arg(long, hide = true)]
    pub debug_forbidden_syscall: bool,

    /// Embedded guests to create at start (not with --xen).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub guests: u16,

    /// The guests' network: guest k (1-based) is address .(k+1), MAC 00:16:3e:00:00:(k+1); .1 is
    /// left for the Linux side (e.g. the TAP's address).
    #[arg(long, default_value = "10.99.0.0/24", value_name = "CIDR", value_parser = parse_net)]
    pub guest_net: Ipv4Net,

    /// The guests' IP MTU (68..=65521; above 4082 frames take several slots), and the mtu=
    /// of their vifs (a host-mode vif's netdev gets it).
    #[arg(long, default_value_t = 1500, value_name = "BYTES")]
    pub mtu: u32,

    /// The embedded guests' vifs' hotplug script, as `script=` in a vif line: vif-bridge (host
    /// mode: netbackd makes vif<domid>.0 and then does what vif-bridge does, putting it into
    /// the Linux bridge --guest-bridge names) or vif-splitnet (builtin mode). Without it the
    /// vifs name no script and join switch xenbr0 (or --guest-bridge).
    #[arg(long, value_name = "SCRIPT", value_parser = parse_guest_script)]
    pub guest_script: Option<String>,

    /// The embedded guests' vifs' `bridge=`, in guest order, comma-separated or repeated (the
    /// last one serves the remaining guests): a Linux bridge for vif-bridge, a switch for
    /// builtin vifs.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',', value_parser = parse_switch)]
    pub guest_bridge: Vec<String>,

    /// The embedded guests' vifs' `rate=` as libxl writes it, BYTES,USECS: each guest may send
    /// BYTES per USECS microseconds.
    #[arg(long, value_name = "BYTES,USECS", value_parser = parse_rate)]
    pub guest_rate: Option<String>,

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

    /// Log level: error, warn, info, debug or trace. Changes live on SIGHUP (with --config).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log: log::LevelFilter,

    /// Log line format on stderr: text (a timestamp, the level, the source, the message, then
    /// key=value fields) or json (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// Where netbackd keeps its control socket and lock files unless told otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/netbackd";

/// A subcommand.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Ask a running netbackd (over its control socket, root only): list, stats, dump, close.
    Ctl(crate::ctl::CtlArgs),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with key=value fields.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--vif-mode`: how each vif's mode is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VifModeArg {
    /// From the vif's hotplug script: vif-splitnet is builtin, any other script host.
    Auto,
    /// Every vif is a netdev of this domain.
    Host,
    /// Every vif joins a switch.
    Builtin,
}

impl From<VifModeArg> for netback::ModePolicy {
    fn from(m: VifModeArg) -> Self {
        match m {
            VifModeArg::Auto => netback::ModePolicy::Auto,
            VifModeArg::Host => netback::ModePolicy::Host,
            VifModeArg::Builtin => netback::ModePolicy::Builtin,
        }
    }
}

/// The hotplug scripts the embedded toolstack plays for its guests' vifs.
pub const GUEST_SCRIPTS: [&str; 2] = ["vif-bridge", netback::device::BUILTIN_SCRIPT];

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
        /// The switch it is a port of (`switch=`, default xenbr0).
        switch: String,
    },
    /// An existing interface through AF_PACKET.
    Nic {
        /// Its name.
        name: String,
        /// Checksum and segmentation offload through the virtio-net header (`offload=on`,
        /// the default).
        offload: bool,
        /// The switch it is a port of (`switch=`, default xenbr0).
        switch: String,
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

    /// The switch it is a port of.
    pub fn switch(&self) -> &str {
        match self {
            UplinkSpec::Tap { switch, .. } | UplinkSpec::Nic { switch, .. } => switch,
        }
    }
}

impl FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write tap:NAME[,addr=A.B.C.D/N][,mtu=N][,offload=off][,switch=S] or \
                     nic:IFNAME[,offload=off][,switch=S]";
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
        let mut switch = netback::device::DEFAULT_SWITCH.to_string();
        for opt in parts {
            match (kind, opt.split_once('=')) {
                ("tap", Some(("addr", v))) => addr = Some(parse_addr(v)?),
                ("tap", Some(("mtu", v))) => {
                    mtu = Some(
                        v.parse()
                            .map_err(|_| format!("uplink {s:?}: mtu={v} is not a number"))?,
                    )
                }
                (_, Some(("switch", v))) => {
                    switch = parse_switch(v).map_err(|e| format!("uplink {s:?}: {e}"))?
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
                switch,
            }
        } else {
            UplinkSpec::Nic {
                name,
                offload,
                switch,
            }
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

/// A switch's name (`switch=`, `--switch`, a vif's `bridge=`): what libxl would write as a
/// bridge name, 1 to 64 bytes with no whitespace, ',' or '/'.
pub fn parse_switch(s: &str) -> Result<String, String> {
    let bad = s
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '/');
    if s.is_empty() || s.len() > 64 || bad {
        return Err(format!(
            "switch name {s:?}: use 1 to 64 bytes without whitespace, ',' or '/' (it matches a \
             vif's bridge=, e.g. xenbr0)"
        ));
    }
    Ok(s.to_string())
}

fn parse_guest_script(s: &str) -> Result<String, String> {
    if GUEST_SCRIPTS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "--guest-script {s:?}: the embedded toolstack plays {} only; use one of them",
            GUEST_SCRIPTS.join(" or ")
        ))
    }
}

fn parse_rate(s: &str) -> Result<String, String> {
    match netback::Rate::parse(s) {
        Ok(Some(_)) => Ok(s.trim().to_string()),
        Ok(None) => Err(format!(
            "--guest-rate {s}: zero is no limit; leave the option out instead"
        )),
        Err(_) => Err(format!(
            "--guest-rate {s:?}: write BYTES,USECS as libxl does, e.g. 125000,50000 for 2.5 MB/s \
             (libxl's rate=20Mb/s@50ms)"
        )),
    }
}

fn parse_default_rate(s: &str) -> Result<String, String> {
    parse_rate(s).map_err(|e| e.replace("--guest-rate", "--default-rate"))
}

/// `--metrics`: `ADDR:PORT`, `[V6ADDR]:PORT`, or a bare `PORT` on 127.0.0.1.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| {
        format!(
            "--metrics {s:?}: write PORT (on 127.0.0.1), ADDR:PORT or [V6ADDR]:PORT, e.g. \
             127.0.0.1:9101"
        )
    })
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
        if self.xen
            && let Some(opt) = [
                (self.guest_script.is_some(), "--guest-script"),
                (!self.guest_bridge.is_empty(), "--guest-bridge"),
                (self.guest_rate.is_some(), "--guest-rate"),
            ]
            .iter()
            .find_map(|(given, name)| given.then_some(name))
        {
            return Err(format!(
                "{opt} configures the embedded guests, which --xen has none of: real guests' \
                 vifs are configured in their vif= lines (script=, bridge=, rate=)"
            ));
        }
        if !self.xen && self.guest_bridge.len() > usize::from(self.guests) {
            return Err(format!(
                "--guest-bridge names {} bridges for {} guest(s): give at most one per guest",
                self.guest_bridge.len(),
                self.guests
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

    /// The `bridge=` of guest `k`'s (1-based) vif: its entry in --guest-bridge, else the
    /// last entry, else none (the toolstack writes no bridge key).
    pub fn guest_bridge(&self, k: u16) -> Option<&str> {
        let i = usize::from(k.max(1) - 1);
        self.guest_bridge
            .get(i)
            .or(self.guest_bridge.last())
            .map(String::as_str)
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
            "tap:sn1,offload=off,switch=lan",
            "--uplink",
            "nic:eth1,switch=dmz,offload=off",
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
                    switch: "xenbr0".into(),
                },
                UplinkSpec::Nic {
                    name: "eth0".into(),
                    offload: true,
                    switch: "xenbr0".into(),
                },
                UplinkSpec::Tap {
                    name: "sn1".into(),
                    addr: None,
                    mtu: None,
                    offload: false,
                    switch: "lan".into(),
                },
                UplinkSpec::Nic {
                    name: "eth1".into(),
                    offload: false,
                    switch: "dmz".into(),
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
            "tap:sn0,switch=",
            "nic:eth0,switch=a/b",
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

    #[test]
    fn vif_modes_switches_and_exit_behaviour() {
        let a = args(&[]).unwrap();
        assert_eq!(a.vif_mode, VifModeArg::Auto);
        assert_eq!(
            netback::ModePolicy::from(a.vif_mode),
            netback::ModePolicy::Auto
        );
        assert!(
            !a.close_on_exit,
            "a stop leaves the vifs for the next instance"
        );
        assert_eq!(a.run_dir, PathBuf::from("/run/netbackd"));
        assert!(a.switches.is_empty());
        let a = args(&[
            "--vif-mode",
            "host",
            "--switch",
            "lan",
            "--switch",
            "isolated-1",
            "--close-on-exit",
            "--run-dir",
            "/tmp/nb",
        ])
        .unwrap();
        assert_eq!(
            netback::ModePolicy::from(a.vif_mode),
            netback::ModePolicy::Host
        );
        assert_eq!(a.switches, ["lan", "isolated-1"]);
        assert!(a.close_on_exit);
        assert_eq!(a.run_dir, PathBuf::from("/tmp/nb"));
        let a = args(&["--vif-mode", "builtin"]).unwrap();
        assert_eq!(
            netback::ModePolicy::from(a.vif_mode),
            netback::ModePolicy::Builtin
        );
        assert!(args(&["--vif-mode", "bridge"]).is_err());
        let long = "x".repeat(65);
        for bad in ["", "a b", "a,b", "a/b", long.as_str()] {
            let e = args(&["--switch", bad]).unwrap_err();
            assert!(e.contains("switch name"), "{bad:?}: {e}");
        }
        let up: UplinkSpec = "tap:sn0,switch=lan".parse().unwrap();
        assert_eq!(up.switch(), "lan");
        let up: UplinkSpec = "nic:eth0".parse().unwrap();
        assert_eq!(up.switch(), "xenbr0", "the toolstack's default bridge");
    }

    #[test]
    fn embedded_guests_vifs_are_configured_like_vif_lines() {
        let a = args(&[
            "--guests",
            "3",
            "--guest-script",
            "vif-bridge",
            "--guest-bridge",
            "a,b",
            "--guest-rate",
            "125000,50000",
        ])
        .unwrap();
        assert_eq!(a.guest_script.as_deref(), Some("vif-bridge"));
        assert_eq!(a.guest_bridge(1), Some("a"));
        assert_eq!(a.guest_bridge(2), Some("b"));
        assert_eq!(a.guest_bridge(3), Some("b"), "the last serves the rest");
        assert_eq!(a.guest_rate.as_deref(), Some("125000,50000"));
        // Repeated is the same as comma-separated.
        let a = args(&[
            "--guests",
            "2",
            "--guest-bridge",
            "a",
            "--guest-bridge",
            "b",
        ])
        .unwrap();
        assert_eq!(
            (a.guest_bridge(1), a.guest_bridge(2)),
            (Some("a"), Some("b"))
        );
        // Nothing configured: no script, no bridge key (xenbr0), no rate.
        let a = args(&[]).unwrap();
        assert_eq!((a.guest_script.as_deref(), a.guest_bridge(1)), (None, None));
        assert!(args(&["--guest-script", "vif-splitnet"]).is_ok());

        let e = args(&["--guest-script", "vif-route"]).unwrap_err();
        assert!(e.contains("vif-bridge or vif-splitnet"), "{e}");
        let e = args(&["--guest-rate", "fast"]).unwrap_err();
        assert!(e.contains("BYTES,USECS"), "{e}");
        let e = args(&["--guest-rate", "0,0"]).unwrap_err();
        assert!(e.contains("leave the option out"), "{e}");
        let e = args(&["--guest-bridge", "a,b"]).unwrap_err();
        assert!(e.contains("at most one per guest"), "{e}");
        for opt in [
            ["--guest-script", "vif-bridge"],
            ["--guest-bridge", "xenbr0"],
            ["--guest-rate", "1000,1000"],
        ] {
            let e = args(&["--xen", opt[0], opt[1]]).unwrap_err();
            assert!(e.contains(opt[0]) && e.contains("vif= lines"), "{e}");
        }
    }
}
