//! Seed inputs for every target: a handful of meaningful programs each, written with [`Enc`] in
//! the targets' encodings. `cargo test --release seeds -- --ignored` with `SPLITNET_WRITE_SEEDS=1`
//! writes them into `corpus/<target>/seed-*`; the plain test runs every seed through its target.

use xen_linux::xs::wire::{Message, MsgType, XsErrno, emit_strings};

use crate::{Enc, bridge_forward, netback_ctrl, netback_rx, netback_tx, xenbus_keys};

fn extra_parse() -> Vec<Vec<u8>> {
    [
        [1, 0, 0xdc, 0x05, 1, 0, 0, 0],
        [1, 1, 0xa0, 0x05, 2, 0, 0, 0],
        [1, 0, 0, 0, 1, 0, 0, 0],
        [1, 0, 0xdc, 0x05, 7, 0, 0, 0],
        [2, 0, 0x01, 0x00, 0x5e, 0, 0, 1],
        [3, 1, 0x33, 0x33, 0, 0, 0, 1],
        [4, 0, 1, 1, 0xde, 0xad, 0xbe, 0xef],
        [5, 0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [6, 0, 0, 0, 0, 0, 0, 0],
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn msg(ty: MsgType, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Message::new(ty, req_id, 0, payload.to_vec())
        .expect("seed payloads are small")
        .encode(&mut out);
    out
}

fn xenstore_wire() -> Vec<Vec<u8>> {
    let replies = [
        msg(
            MsgType::WatchEvent,
            0,
            b"/local/domain/1/device/vif/0/state\0netback\0",
        ),
        msg(MsgType::Error, 7, &XsErrno::Enoent.emit()),
        msg(MsgType::Directory, 8, &emit_strings(&["0", "1", "state"])),
        msg(MsgType::GetPerms, 9, b"b0\0r5\0"),
        msg(MsgType::TransactionStart, 10, b"17\0"),
        msg(MsgType::Write, 11, b"OK\0"),
        msg(MsgType::Read, 12, b"4"),
        msg(MsgType::Write, 13, b"/local/domain/1/x\0value"),
        msg(MsgType::SetPerms, 14, b"/a\0n0\0r1\0"),
        msg(MsgType::Watch, 15, b"/a\0tok\0"),
    ];
    let mut all = Vec::new();
    for r in &replies {
        all.extend_from_slice(r);
    }
    let mut oversize = msg(MsgType::Read, 1, b"x");
    oversize[12..16].copy_from_slice(&4097u32.to_ne_bytes());
    vec![
        Enc::new().u8(0).bytes(&all).done(),
        Enc::new().u8(3).bytes(&[1, 15, 3]).bytes(&all).done(),
        Enc::new().u8(2).bytes(&[16, 0]).bytes(&replies[0]).done(),
        Enc::new()
            .u8(1)
            .u8(7)
            .bytes(&replies[2])
            .bytes(&oversize)
            .done(),
        Enc::new().u8(0).bytes(&replies[3][..20]).done(),
    ]
}

/// A burst of `frames` `(dst sel, src sel, len)` on port `ingress`.
fn burst(e: Enc, ingress: u8, frames: &[(u8, u8, u8)]) -> Enc {
    let mut e = e
        .u8(bridge_forward::op::FORWARD)
        .u8(ingress)
        .u8(frames.len() as u8 - 1);
    for &(d, s, len) in frames {
        e = e.u8(d).u8(s).u8(len).u8(0x5a);
    }
    e
}

fn bridge_forward() -> Vec<Vec<u8>> {
    use bridge_forward::op;
    // cap 16, ageing 50 ms, seed 1, sweep every 4 frames, 4 ports.
    let head = || Enc::new().u8(1).u8(49).u8(1).u8(3).u8(2);
    vec![
        // Learning: flood, then known unicast both ways.
        burst(
            burst(head(), 1, &[(0, 3, 60)]),
            2,
            &[(3, 4, 60), (4, 3, 60)],
        )
        .done(),
        // Static MAC and a locked port refusing a spoofed source.
        burst(
            head()
                .u8(op::ADD_STATIC)
                .u8(3)
                .u8(1)
                .u8(op::LOCK)
                .u8(1)
                .u8(1),
            1,
            &[(0, 3, 60), (0, 4, 60)],
        )
        .done(),
        // A MAC limit and many sources.
        burst(
            head().u8(op::MAC_LIMIT).u8(2).u8(2),
            2,
            &[(0, 3, 60), (0, 4, 60), (0, 5, 60), (0, 6, 60), (0, 7, 60)],
        )
        .done(),
        // Runts, multicast and zero sources, a hairpin.
        burst(
            burst(head(), 0, &[(0, 3, 13), (3, 2, 60), (3, 1, 60), (0, 3, 0)]),
            0,
            &[(3, 4, 60)],
        )
        .done(),
        // Ports down, removed and re-added; ageing.
        burst(
            burst(head(), 1, &[(0, 3, 60)])
                .u8(op::SET_UP)
                .u8(1)
                .u8(0)
                .u8(op::REMOVE_PORT)
                .u8(2)
                .u8(op::ADD_PORT)
                .u8(0)
                .u8(op::ADVANCE)
                .u16(2000)
                .u8(op::AGE)
                .u8(op::CAPTURE)
                .u8(0)
                .u8(2),
            0,
            &[(3, 5, 60), (0, 4, 70)],
        )
        .done(),
    ]
}

fn netback_tx() -> Vec<Vec<u8>> {
    use netback_tx::op;
    // copy batch 64, tx batch 64.
    let head = || Enc::new().u8(63).u8(63);
    // A one-slot request: gref selector, size (raw u16 form).
    let req = |e: Enc, gref: u8, offset: u16, flags: u8, id: u16, size: u16| {
        e.u8(op::PUT_REQ)
            .u8(gref)
            .u8(0xc0)
            .u16(offset)
            .u8(flags)
            .u16(id)
            .u8(0xc0)
            .u16(size)
    };
    // A chain of `n` slots on data grant `gref`, sizes 1 KiB each, optional extra.
    let chain = |e: Enc, n: u8, extra: Option<[u8; 8]>, gref: u8| {
        let mut e = e.u8(op::CHAIN).u8(n - 1);
        e = match extra {
            Some(x) => e.u8(1).bytes(&x),
            None => e.u8(0),
        };
        for _ in 0..n {
            e = e.u8(gref).u8(0).u8(0x81);
        }
        e
    };
    vec![
        chain(head(), 1, None, 0).u8(op::SETTLE).done(),
        chain(head(), 3, Some([1, 0, 0xdc, 0x05, 1, 0, 0, 0]), 1)
            .u8(op::SETTLE)
            .done(),
        chain(head(), 1, Some([2, 0, 1, 0, 0x5e, 0, 0, 1]), 2)
            .u8(op::SETTLE)
            .done(),
        chain(head(), 22, None, 3).u8(op::SETTLE).done(),
        chain(head(), 20, None, 4).u8(op::SETTLE).done(),
        req(head(), 5, 0, 0, 7, 10)
            .u8(op::PUSH)
            .u8(1)
            .u8(op::POLL)
            .done(),
        req(head(), 5, 4000, 0, 7, 200)
            .u8(op::PUSH)
            .u8(1)
            .u8(op::POLL)
            .done(),
        req(head(), 6, 0, 4, 1, 2000)
            .u8(op::PUSH)
            .u8(0)
            .u8(op::POLL)
            .done(),
        req(head(), 16, 0, 0, 9, 1500)
            .u8(op::PUSH)
            .u8(0)
            .u8(op::REWRITE)
            .u8(0)
            .bytes(&[0xff, 0xff, 0, 0, 0, 0, 0, 0, 3, 0, 100, 0])
            .u8(op::POLL)
            .done(),
        head().u8(op::SET_REQ_PROD).u8(2).u8(1).u8(op::POLL).done(),
        head()
            .u8(op::REVOKE)
            .u8(7)
            .u8(op::GRANT)
            .u8(7)
            .u8(0)
            .u8(op::WRITE_PAGE)
            .u8(7)
            .u8(0)
            .u8(0x44)
            .u8(1)
            .done(),
        chain(head(), 2, None, 20)
            .u8(op::PAIR)
            .u8(op::SETTLE)
            .done(),
        // A grant revoked between the batched copies of one pass (copy batch of 1 op).
        chain(Enc::new().u8(0).u8(63), 4, None, 0)
            .u8(op::MID_REVOKE)
            .u8(0)
            .u8(1)
            .u8(op::SETTLE)
            .done(),
        head()
            .u8(op::PUT_EXTRA)
            .bytes(&[0, 0, 0, 0, 0, 0, 0, 0])
            .u8(op::PUSH)
            .u8(1)
            .u8(op::WAIT)
            .u8(op::POLL)
            .done(),
        // Software GSO for the pair's receiver (no sg, no GSO): MSS 1 on a 64 KiB frame (over
        // the segment cap: dropped uncut), MSS 1448 (cut), MSS 6000 (segments over a page).
        head().u8(op::GSO).u8(1).u8(0).u8(1).u16(65_000).done(),
        head().u8(op::GSO).u8(1).u8(2).u16(20_000).done(),
        head().u8(op::GSO).u8(1).u8(3).u16(6000).u16(30_000).done(),
    ]
}

fn netback_rx() -> Vec<Vec<u8>> {
    use netback_rx::op;
    let head = |flip: u8| Enc::new().u8(flip).u8(63).u8(63).u8(63);
    // `n` frames of size selector `s` to the broadcast address.
    let flood = |e: Enc, n: u8, s: u8| {
        let mut e = e.u8(op::FLOOD).u8(n - 1);
        for _ in 0..n {
            e = e.u8(s).u8(0);
        }
        e
    };
    vec![
        flood(head(0).u8(op::POST_MANY).u8(15), 2, 0x4a)
            .u8(op::SETTLE)
            .done(),
        flood(head(0).u8(op::POST_MANY).u8(31), 1, 0x94)
            .u8(op::SETTLE)
            .done(),
        flood(head(1).u8(op::POST_MANY).u8(15), 3, 0x4a)
            .u8(op::SETTLE)
            .done(),
        flood(
            head(0)
                .u8(op::PUT_RX)
                .u8(0xfe)
                .u16(3)
                .u16(1)
                .u8(0)
                .u8(op::PUT_RX)
                .u8(12)
                .u16(2)
                .u8(0)
                .u8(op::PUT_RX)
                .u8(16)
                .u16(3)
                .u8(0)
                .u8(op::REVOKE)
                .u8(0)
                .u8(op::PUT_RX)
                .u8(0)
                .u16(4)
                .u8(0)
                .u8(op::PUT_RX)
                .u8(1)
                .u16(5)
                .u8(0)
                .u8(op::PUSH)
                .u8(1),
            3,
            0x10,
        )
        .u8(op::SETTLE)
        .done(),
        flood(head(0).u8(op::SET_REQ_PROD).u8(2).u8(2), 1, 0x10)
            .u8(op::POLL)
            .done(),
        flood(
            head(0)
                .u8(op::POST_MANY)
                .u8(3)
                .u8(op::REWRITE)
                .u8(1)
                .bytes(&[9, 0, 0, 0, 0xff, 0xff, 0, 0]),
            2,
            0x20,
        )
        .u8(op::SETTLE)
        .done(),
        // Buffers revoked between the batched copies of one pass (copy batch of 1 op).
        flood(
            Enc::new()
                .u8(0)
                .u8(63)
                .u8(0)
                .u8(0)
                .u8(op::POST_MANY)
                .u8(7)
                .u8(op::MID_REVOKE)
                .u8(1)
                .u8(1)
                .u8(op::MID_REVOKE)
                .u8(2)
                .u8(2),
            4,
            0x10,
        )
        .u8(op::POLL)
        .u8(op::SETTLE)
        .done(),
        flood(flood(head(1), 4, 0x85), 4, 0x10)
            .u8(op::POLL)
            .u8(op::POST_MANY)
            .u8(63)
            .u8(op::SETTLE)
            .done(),
    ]
}

fn xenbus_keys() -> Vec<Vec<u8>> {
    use xenbus_keys::op;
    let settle = |e: Enc| e.u8(op::SETTLE);
    // A write of KEYS[key] with a digit value.
    let digit = |e: Enc, key: u8, d: u8| e.u8(op::WRITE).u8(key).u8(6).u8(d);
    let good = |e: Enc, state: u8| e.u8(op::GOOD_KEYS).u8(state);
    vec![
        settle(good(settle(Enc::new()), 2)).done(),
        settle(good(digit(settle(Enc::new()), 4, 4), 1)).done(),
        settle(settle(Enc::new()).u8(op::STATE).u8(6).u8(4)).done(),
        settle(good(digit(settle(Enc::new()), 3, 0), 2)).done(),
        settle(good(
            settle(
                settle(good(settle(Enc::new()), 2))
                    .u8(op::STATE)
                    .u8(6)
                    .u8(6),
            )
            .u8(op::STATE)
            .u8(6)
            .u8(1),
            2,
        ))
        .done(),
        settle(good(digit(settle(Enc::new()), 8, 5), 2)).done(),
        settle(
            good(settle(Enc::new()), 0)
                .u8(op::WRITE)
                .u8(0)
                .u8(5)
                .u8(1)
                .u8(op::STATE)
                .u8(6)
                .u8(4),
        )
        .done(),
        settle(settle(good(settle(Enc::new()), 2)).u8(op::RM_DIR)).done(),
        settle(
            settle(Enc::new())
                .u8(op::WRITE_BACKEND)
                .u8(10)
                .u8(6)
                .u8(4)
                .u8(op::WRITE)
                .u8(0xf0)
                .u8(3)
                .bytes(b"a/b")
                .u8(18)
                .u8(2)
                .bytes(b"zz"),
        )
        .done(),
    ]
}

fn netback_ctrl() -> Vec<Vec<u8>> {
    use netback_ctrl::op;
    use netif_ring::ctrl::*;
    // copy batch 64.
    let head = || Enc::new().u8(63);
    // A request: type, then each data word as a raw u32 (selector 7).
    let req = |e: Enc, t: u16, d: [u32; 3]| {
        let mut e = e.u8(op::REQ).u8(0xff).u16(t);
        for w in d {
            e = e.u8(7).u32(w);
        }
        e
    };
    // The data word "grant of data page i": selector 0, then pick_gref's grant index.
    let grant = |e: Enc, i: u8| e.u8(0).u8(i);
    let push = |e: Enc| e.u8(op::PUSH).u8(1).u8(op::POLL);
    // TCP/IPv4 frames to the hostile guest.
    let send = |e: Enc, flow: u16| e.u8(op::SEND).u8(0).u16(flow);
    let set_up = || {
        let e = req(head(), XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, [1, 0, 0]);
        let e = req(e, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3]);
        let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [0xf, 0, 0]);
        // SET_HASH_KEY from grant 0 (page 0: the RSS key), 40 bytes.
        let e = grant(e.u8(op::REQ).u8(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY as u8), 0)
            .u8(7)
            .u32(40)
            .u8(7)
            .u32(0);
        let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [8, 0, 0]);
        // SET_HASH_MAPPING from grant 1 (page 1: zeros), 8 entries at 0.
        let e = grant(
            e.u8(op::REQ).u8(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING as u8),
            1,
        )
        .u8(7)
        .u32(8)
        .u8(7)
        .u32(0);
        push(e)
    };
    vec![
        send(send(set_up(), 1000), 2000).u8(op::SETTLE).done(),
        req(head(), XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [0; 3])
            .u8(op::SET_REQ_PROD)
            .u8(2)
            .u8(1)
            .u8(op::POLL)
            .done(),
        {
            let e = req(head(), XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, [7, 0, 0]);
            let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [1, 0, 0]);
            let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [0, 41, 0]);
            let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [129, 0, 0]);
            let e = req(e, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [0, 2, u32::MAX]);
            let e = req(e, XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING, [0; 3]);
            let e = req(e, 0xbeef, [1, 2, 3]);
            push(e).u8(op::SETTLE).done()
        },
        // A table naming queue 1 (page 2), a key grant revoked mid-pass, a rewrite after push.
        {
            let e = req(head(), XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [4, 0, 0]);
            let e = grant(
                e.u8(op::REQ).u8(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING as u8),
                2,
            )
            .u8(7)
            .u32(4)
            .u8(7)
            .u32(0);
            let e = grant(e.u8(op::REQ).u8(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY as u8), 4)
                .u8(7)
                .u32(40)
                .u8(7)
                .u32(0);
            let e = e.u8(op::MID_REVOKE).u8(4).u8(0);
            let e = e
                .u8(op::PUSH)
                .u8(0)
                .u8(op::REWRITE)
                .u8(0)
                .bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
            e.u8(op::POLL).u8(op::SETTLE).done()
        },
        // Raw slots and a storm of events with nothing to do.
        head()
            .u8(op::RAW)
            .bytes(&[1, 0, 7, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .u8(op::RAW)
            .bytes(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .u8(op::PUSH)
            .u8(1)
            .u8(op::NOTIFY)
            .u8(op::NOTIFY)
            .u8(op::WAIT)
            .u8(op::POLL)
            .u8(op::SETTLE)
            .done(),
    ]
}

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("extra_parse", extra_parse()),
        ("xenstore_wire", xenstore_wire()),
        ("bridge_forward", bridge_forward()),
        ("netback_tx", netback_tx()),
        ("netback_rx", netback_rx()),
        ("netback_ctrl", netback_ctrl()),
        ("xenbus_keys", xenbus_keys()),
    ]
}

/// The target function for a name.
pub fn target(name: &str) -> fn(&[u8]) {
    match name {
        "extra_parse" => crate::extra_parse::run,
        "xenstore_wire" => crate::xenstore_wire::run,
        "bridge_forward" => crate::bridge_forward::run,
        "netback_tx" => crate::netback_tx::run,
        "netback_rx" => crate::netback_rx::run,
        "netback_ctrl" => crate::netback_ctrl::run,
        "xenbus_keys" => crate::xenbus_keys::run,
        _ => panic!("no target {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_passes_its_target() {
        for (name, seeds) in all() {
            let run = target(name);
            for s in seeds {
                run(&s);
            }
        }
    }

    #[test]
    #[ignore = "writes the seed corpora; run with SPLITNET_WRITE_SEEDS=1"]
    fn write_seeds() {
        if std::env::var_os("SPLITNET_WRITE_SEEDS").is_none() {
            return;
        }
        for (name, seeds) in all() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(name);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
            }
        }
    }
}
