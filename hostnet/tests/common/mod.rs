//! Helpers shared by the network tests.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ::offload::virtio::VirtioNetHdr;
use hostnet::Error;
use hostnet::netns::Netns;
use hostnet::vnet::HdrLen;
use rustix::event::{PollFd, PollFlags, Timespec};

/// A fresh namespace for a test that was asked to run (they are `#[ignore]`d by default, with
/// the reason): without root or `ip` it fails saying what is missing, never skips.
#[track_caller]
pub fn root_netns(test: &str) -> Netns {
    Netns::new("hostnet").unwrap_or_else(|e| match e {
        Error::NotRoot | Error::ToolMissing { .. } => panic!("{test}: cannot run: {e}"),
        e => panic!("{test}: cannot create a network namespace: {e}"),
    })
}

/// How long a test waits for the kernel before calling it a failure (never a performance bound).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Waits until `fd` is readable or `deadline` passes; whether it became readable.
pub fn wait_readable(fd: impl AsFd, deadline: Instant) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let left = (deadline - now).min(Duration::from_millis(200));
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Polls `cond` until it holds or [`PATIENCE`] runs out; whether it held.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The interfaces in the namespace, as its own /sys shows them.
pub fn sys_class_net(ns: &Netns) -> Vec<String> {
    ns.exec("ls", &["/sys/class/net"])
        .expect("ls /sys/class/net in the namespace")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The fake host's MAC (locally administered).
pub const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x07, 0x02];

/// Splits what a TAP or packet socket read into its virtio-net header (`len` long: the legacy
/// 10 bytes are read, `num_buffers` skipped) and the Ethernet frame after it.
pub fn split_vnet(buf: &[u8], len: HdrLen) -> Option<(VirtioNetHdr, &[u8])> {
    let hdr: &[u8; VirtioNetHdr::LEN] = buf.get(..VirtioNetHdr::LEN)?.try_into().ok()?;
    Some((VirtioNetHdr::from_bytes(hdr), buf.get(len.bytes()..)?))
}
