use std::borrow::Cow;

use super::*;
use hypervisor::types::DomId;

/// Encodes `req` and decodes it back through a [`Decoder`].
#[track_caller]
fn encode(req: &Request<'_>, req_id: u32, tx_id: u32) -> Message {
    let mut bytes = Vec::new();
    req.encode(req_id, tx_id, &mut bytes).unwrap();
    let mut dec = Decoder::new();
    dec.feed(&bytes);
    let msg = dec.next_message().unwrap().expect("one whole message");
    assert_eq!(dec.buffered(), 0, "nothing left over");
    msg
}

fn perm(access: Access, domid: DomId) -> Perm {
    Perm { domid, access }
}

#[test]
fn every_request_type_round_trips() {
    let perms = [perm(Access::None, 0), perm(Access::Both, 5)];
    let reqs = [
        Request::Read {
            path: "/local/domain/0/name",
        },
        Request::Write {
            path: "/a/b",
            value: b"hello",
        },
        Request::Write {
            path: "/a/b",
            value: b"",
        },
        Request::Write {
            path: "/a/b",
            value: b"bin\0ary",
        },
        Request::Directory {
            path: "/local/domain",
        },
        Request::Mkdir { path: "/x" },
        Request::Rm { path: "/x/y" },
        Request::GetPerms { path: "/x" },
        Request::SetPerms {
            path: "/x",
            perms: Cow::Borrowed(&perms),
        },
        Request::Watch {
            path: "/backend/vif",
            token: "be",
        },
        Request::Unwatch {
            path: "/backend/vif",
            token: "be",
        },
        Request::TransactionStart,
        Request::TransactionEnd { commit: true },
        Request::TransactionEnd { commit: false },
    ];
    for (i, req) in reqs.iter().enumerate() {
        let msg = encode(req, 100 + i as u32, 7);
        assert_eq!(msg.header.ty, req.msg_type().raw(), "{req:?}");
        assert_eq!(msg.header.req_id, 100 + i as u32);
        assert_eq!(msg.header.tx_id, 7);
        assert_eq!(msg.header.len as usize, msg.payload.len());
        let back = Request::parse(msg.header.ty, &msg.payload).unwrap();
        assert_eq!(&back, req);
    }
}

#[test]
fn request_payloads_are_exactly_what_xs_wire_requires() {
    let payload = |r: Request<'_>| encode(&r, 1, 0).payload;
    assert_eq!(payload(Request::Read { path: "/a" }), b"/a\0");
    // WRITE: no NUL after the value.
    assert_eq!(
        payload(Request::Write {
            path: "/a",
            value: b"v"
        }),
        b"/a\0v"
    );
    assert_eq!(
        payload(Request::Watch {
            path: "/a",
            token: "t"
        }),
        b"/a\0t\0"
    );
    assert_eq!(
        payload(Request::Unwatch {
            path: "/a",
            token: "t"
        }),
        b"/a\0t\0"
    );
    let perms = [perm(Access::Read, 0), perm(Access::Write, 1)];
    assert_eq!(
        payload(Request::SetPerms {
            path: "/a",
            perms: Cow::Borrowed(&perms)
        }),
        b"/a\0r0\0w1\0"
    );
    assert_eq!(payload(Request::TransactionStart), b"\0");
    assert_eq!(payload(Request::TransactionEnd { commit: true }), b"T\0");
    assert_eq!(payload(Request::TransactionEnd { commit: false }), b"F\0");
}

#[test]
fn header_fields_sit_at_xsd_sockmsg_offsets() {
    let h = Header {
        ty: 2,
        req_id: 0x0102_0304,
        tx_id: 9,
        len: 5,
    };
    let b = h.emit();
    assert_eq!(&b[0..4], &2u32.to_ne_bytes());
    assert_eq!(&b[4..8], &0x0102_0304u32.to_ne_bytes());
    assert_eq!(&b[8..12], &9u32.to_ne_bytes());
    assert_eq!(&b[12..16], &5u32.to_ne_bytes());
    assert_eq!(Header::parse(&b), h);
    assert_eq!(MsgType::from_raw(20), None, "XS_RESTRICT was removed");
    assert_eq!(MsgType::from_raw(15), Some(MsgType::WatchEvent));
    assert_eq!(MsgType::TransactionStart.to_string(), "TRANSACTION_START");
}

#[test]
fn encode_refuses_bad_strings() {
    let mut out = vec![1, 2, 3];
    let bad = [
        (Request::Read { path: "" }, WireError::EmptyPath),
        (
            Request::Read { path: "/a\0b" },
            WireError::NulInString { what: "path" },
        ),
        (
            Request::Watch {
                path: "/a",
                token: "t\0",
            },
            WireError::NulInString { what: "token" },
        ),
    ];
    for (req, err) in bad {
        assert_eq!(req.encode(1, 0, &mut out), Err(err));
        assert_eq!(out, [1, 2, 3], "output untouched");
    }
}

#[test]
fn oversize_payload_is_refused_when_encoding() {
    let path = "/big";
    let fits = vec![b'x'; PAYLOAD_MAX - path.len() - 1];
    let mut out = Vec::new();
    Request::Write { path, value: &fits }
        .encode(1, 0, &mut out)
        .unwrap();
    assert_eq!(out.len(), HEADER_LEN + PAYLOAD_MAX);

    let too_big = vec![b'x'; fits.len() + 1];
    let mut out = vec![9];
    assert_eq!(
        Request::Write {
            path,
            value: &too_big
        }
        .encode(1, 0, &mut out),
        Err(WireError::PayloadTooLong {
            len: PAYLOAD_MAX + 1,
            hint: TOO_LONG_OUT,
        })
    );
    assert_eq!(out, [9], "a refused request leaves nothing behind");
    assert_eq!(
        Message::new(MsgType::Read, 1, 0, vec![0; PAYLOAD_MAX + 1]),
        Err(WireError::PayloadTooLong {
            len: PAYLOAD_MAX + 1,
            hint: TOO_LONG_OUT,
        })
    );
}

#[test]
fn oversize_payload_is_refused_when_decoding_as_soon_as_the_header_is_in() {
    let h = Header {
        ty: MsgType::Read.raw(),
        req_id: 1,
        tx_id: 0,
        len: PAYLOAD_MAX as u32 + 1,
    };
    let mut dec = Decoder::new();
    dec.feed(&h.emit()); // no payload bytes at all yet
    assert_eq!(
        dec.next_message(),
        Err(WireError::PayloadTooLong {
            len: PAYLOAD_MAX + 1,
            hint: TOO_LONG_IN,
        })
    );

    // Exactly PAYLOAD_MAX is fine.
    let ok = Message::new(MsgType::Read, 2, 0, vec![7; PAYLOAD_MAX]).unwrap();
    let mut bytes = Vec::new();
    ok.encode(&mut bytes);
    let mut dec = Decoder::new();
    dec.feed(&bytes);
    assert_eq!(dec.next_message().unwrap(), Some(ok));
}

fn reply(ty: MsgType, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Message::new(ty, req_id, 0, payload.to_vec())
        .unwrap()
        .encode(&mut out);
    out
}

#[test]
fn a_reply_split_into_single_bytes_is_reassembled() {
    let bytes = reply(MsgType::Read, 42, b"4");
    let mut dec = Decoder::new();
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(
            dec.next_message().unwrap(),
            None,
            "incomplete after {i} bytes"
        );
        dec.feed(std::slice::from_ref(b));
    }
    let msg = dec.next_message().unwrap().unwrap();
    assert_eq!(
        (msg.msg_type(), msg.header.req_id, &msg.payload[..]),
        (Some(MsgType::Read), 42, &b"4"[..])
    );
    assert_eq!(dec.next_message().unwrap(), None);
}

#[test]
fn two_messages_and_a_fragment_in_one_read() {
    let mut bytes = reply(MsgType::Write, 1, OK);
    bytes.extend(reply(MsgType::Directory, 2, b"a\0b\0"));
    let third = reply(MsgType::Read, 3, b"xyz");
    bytes.extend_from_slice(&third[..10]);
    let mut dec = Decoder::new();
    dec.feed(&bytes);
    assert_eq!(dec.next_message().unwrap().unwrap().header.req_id, 1);
    assert_eq!(dec.next_message().unwrap().unwrap().header.req_id, 2);
    assert_eq!(dec.next_message().unwrap(), None);
    assert_eq!(dec.buffered(), 10);
    dec.feed(&third[10..]);
    let m = dec.next_message().unwrap().unwrap();
    assert_eq!((m.header.req_id, &m.payload[..]), (3, &b"xyz"[..]));
}

#[test]
fn a_watch_event_between_request_and_reply_is_decoded_in_order() {
    let ev = WatchEvent {
        path: "/backend/vif/1/0/state".into(),
        token: "vif".into(),
    };
    let mut bytes = Vec::new();
    ev.to_message().unwrap().encode(&mut bytes);
    bytes.extend(reply(MsgType::Read, 8, b"4"));
    let mut dec = Decoder::new();
    dec.feed(&bytes);
    let first = dec.next_message().unwrap().unwrap();
    assert_eq!(first.msg_type(), Some(MsgType::WatchEvent));
    assert_eq!((first.header.req_id, first.header.tx_id), (0, 0));
    assert_eq!(WatchEvent::parse(&first.payload).unwrap(), ev);
    let second = dec.next_message().unwrap().unwrap();
    assert_eq!(
        (second.msg_type(), second.header.req_id),
        (Some(MsgType::Read), 8)
    );
}

#[test]
fn replies_are_decoded() {
    parse_ok(MsgType::Write, b"OK\0").unwrap();
    assert!(parse_ok(MsgType::Write, b"KO\0").is_err());
    assert_eq!(parse_tx_id(b"17\0"), Ok(17));
    for bad in [&b"\0"[..], b"0\0", b"-1\0", b"x\0", b"99999999999\0"] {
        assert!(parse_tx_id(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_perms(b"b0\0r5\0").unwrap(),
        [perm(Access::Both, 0), perm(Access::Read, 5)]
    );
    assert!(
        parse_perms(b"").is_err(),
        "a node always has an owner entry"
    );
    assert_eq!(
        WatchEvent::parse(b"/a\0tok\0").unwrap(),
        WatchEvent {
            path: "/a".into(),
            token: "tok".into()
        }
    );
    assert!(WatchEvent::parse(b"/a\0").is_err());
}

#[test]
fn directory_replies_parse_into_leaf_names() {
    assert_eq!(parse_directory(b"").unwrap(), Vec::<String>::new());
    assert_eq!(parse_directory(b"0\0").unwrap(), ["0"]);
    assert_eq!(
        parse_directory(b"vif\0vbd\0console\0").unwrap(),
        ["vif", "vbd", "console"]
    );
    // A missing final NUL is tolerated.
    assert_eq!(parse_directory(b"a\0b").unwrap(), ["a", "b"]);
    assert!(parse_directory(b"\xff\0").is_err());
    assert_eq!(
        parse_directory(&emit_strings(&["x", "y"])).unwrap(),
        ["x", "y"]
    );
}

#[test]
fn error_replies_map_to_typed_errors() {
    let names = [
        ("ENOENT", XsErrno::Enoent),
        ("EACCES", XsErrno::Eacces),
        ("EINVAL", XsErrno::Einval),
        ("EEXIST", XsErrno::Eexist),
        ("EISDIR", XsErrno::Eisdir),
        ("ENOSPC", XsErrno::Enospc),
        ("EIO", XsErrno::Eio),
        ("EROFS", XsErrno::Erofs),
        ("EBUSY", XsErrno::Ebusy),
        ("EAGAIN", XsErrno::Eagain),
        ("EQUOTA", XsErrno::Equota),
        ("E2BIG", XsErrno::E2big),
        ("ENOTEMPTY", XsErrno::Enotempty),
        ("EPERM", XsErrno::Eperm),
    ];
    for (name, e) in names {
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        assert_eq!(XsErrno::parse(&payload), e);
        assert_eq!(e.name(), name);
        assert_eq!(e.emit(), payload);
    }
    let odd = XsErrno::parse(b"EWEIRD\0");
    assert_eq!(odd, XsErrno::Other("EWEIRD".into()));
    assert_eq!(odd.name(), "EWEIRD");
    assert!(XsErrno::Eacces.to_string().contains("run as root in dom0"));
    assert!(XsErrno::Enoent.to_string().starts_with("ENOENT"));
}

#[test]
fn permission_strings_parse_and_emit() {
    let good = [
        ("r0", perm(Access::Read, 0)),
        ("w1", perm(Access::Write, 1)),
        ("b0", perm(Access::Both, 0)),
        ("n5", perm(Access::None, 5)),
        ("n65535", perm(Access::None, 65535)),
    ];
    for (s, p) in good {
        assert_eq!(Perm::parse(s), Ok(p));
        assert_eq!(p.to_string(), s);
    }
    for bad in [
        "", "r", "x1", "R1", "r-1", "r+1", "r 1", "r65536", "1r", "rr1",
    ] {
        assert_eq!(
            Perm::parse(bad),
            Err(WireError::BadPerm(bad.into())),
            "{bad:?}"
        );
    }
}

#[test]
fn malformed_requests_are_refused_by_the_parser() {
    assert!(
        Request::parse(MsgType::Read.raw(), b"/a").is_ok(),
        "final NUL tolerated"
    );
    assert!(Request::parse(MsgType::Read.raw(), b"/a\0/b\0").is_err());
    assert!(
        Request::parse(MsgType::Write.raw(), b"/a").is_err(),
        "WRITE needs path\\0"
    );
    assert!(Request::parse(MsgType::Watch.raw(), b"/a\0").is_err());
    assert!(Request::parse(MsgType::SetPerms.raw(), b"/a\0").is_err());
    assert!(Request::parse(MsgType::SetPerms.raw(), b"/a\0q1\0").is_err());
    assert!(Request::parse(MsgType::TransactionEnd.raw(), b"X\0").is_err());
    assert_eq!(Request::parse(20, b""), Err(WireError::UnknownType(20)));
}
