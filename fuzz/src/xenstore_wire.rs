//! `xenstore_wire`: the xenstore wire codec (`xen_linux::xs::wire`) against a hostile
//! daemon's byte stream.
//!
//! Input: one byte `k`, then `k % 16` chunk lengths (one byte each), then the stream. The
//! stream is fed to a [`Decoder`] in chunks of those lengths (cycled; a 0 feeds an empty slice),
//! and separately all at once and one byte at a time.
//!
//! Invariants: the decoder never panics; it never yields a payload over 4096 bytes; every message
//! has `header.len == payload.len()`; the messages re-encode to exactly the stream's prefix they
//! came from; `has_message` agrees with `next_message`; `buffered` accounts for every byte; and
//! every split yields the same messages and the same error. Every reply parser (directory,
//! permissions, error, watch event, OK, transaction id) and the request parser run on every
//! payload without panicking, and what they accept round-trips through the matching encoder.

use xen_linux::xs::wire::{
    self, Decoder, Message, MsgType, PAYLOAD_MAX, Perm, Request, WatchEvent, WireError, XsErrno,
};

use crate::Input;

/// What decoding a stream produced: the messages, then the error that ended it (if any).
type Decoded = (Vec<Message>, Option<WireError>);

/// Feeds `stream` in chunks of `splits` (cycled; empty `splits` = all at once) and drains the
/// decoder after every feed, checking the decoder's own invariants on the way.
pub fn decode(stream: &[u8], splits: &[usize]) -> Decoded {
    let mut d = Decoder::new();
    let mut msgs = Vec::new();
    let mut fed = 0usize;
    let mut taken = 0usize;
    let mut i = 0usize;
    loop {
        let n = if splits.is_empty() {
            stream.len() - fed
        } else {
            splits[i % splits.len()].min(stream.len() - fed)
        };
        i += 1;
        d.feed(&stream[fed..fed + n]);
        fed += n;
        loop {
            assert_eq!(d.buffered(), fed - taken, "buffered() lost bytes");
            let has = d.has_message();
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(has, "has_message() said no but a message came");
                    assert!(m.payload.len() <= PAYLOAD_MAX, "payload over 4096 bytes");
                    assert_eq!(m.header.len as usize, m.payload.len());
                    let mut enc = Vec::new();
                    m.encode(&mut enc);
                    assert_eq!(
                        enc,
                        stream[taken..taken + enc.len()],
                        "message does not re-encode to its bytes"
                    );
                    taken += enc.len();
                    msgs.push(m);
                }
                Ok(None) => {
                    assert!(!has, "has_message() said yes but no message came");
                    break;
                }
                Err(e) => {
                    assert!(has, "has_message() said no but next_message failed");
                    assert!(
                        matches!(e, WireError::PayloadTooLong { len, .. } if len > PAYLOAD_MAX),
                        "decoder error {e:?}"
                    );
                    // The error is sticky: the stream has lost its framing.
                    assert_eq!(d.next_message(), Err(e.clone()));
                    return (msgs, Some(e));
                }
            }
        }
        if fed == stream.len() {
            return (msgs, None);
        }
    }
}

/// Runs every parser on a payload; what one accepts must round-trip through its encoder.
pub fn parse_all(m: &Message) {
    let p = &m.payload[..];
    if let Ok(dir) = wire::parse_directory(p) {
        let again = wire::emit_strings(&dir);
        assert_eq!(wire::parse_directory(&again).as_ref(), Ok(&dir));
    }
    if let Ok(perms) = wire::parse_perms(p) {
        assert!(!perms.is_empty());
        for perm in &perms {
            assert_eq!(Perm::parse(&perm.to_string()), Ok(*perm));
        }
    }
    let errno = XsErrno::parse(p);
    assert_eq!(XsErrno::from_name(errno.name()), errno);
    assert!(!errno.to_string().is_empty());
    if let Ok(ev) = WatchEvent::parse(p) {
        // Re-encoding adds the final NUL a daemon may omit, so a 4096-byte payload can grow
        // past the limit: then the encoder must refuse it, not truncate it.
        match ev.to_message() {
            Ok(msg) => assert_eq!(WatchEvent::parse(&msg.payload), Ok(ev)),
            Err(e) => assert!(
                matches!(e, WireError::PayloadTooLong { .. }) && p.len() == PAYLOAD_MAX,
                "{e:?}"
            ),
        }
    }
    let _ = wire::parse_ok(MsgType::Write, p);
    if let Ok(id) = wire::parse_tx_id(p) {
        assert_ne!(id, 0, "transaction id 0 accepted");
        assert_eq!(wire::parse_tx_id(id.to_string().as_bytes()), Ok(id));
    }
    if let Ok(req) = Request::parse(m.header.ty, p) {
        let mut out = Vec::new();
        if req
            .encode(m.header.req_id, m.header.tx_id, &mut out)
            .is_ok()
        {
            let (again, err) = decode(&out, &[]);
            assert!(
                err.is_none() && again.len() == 1,
                "{req:?} re-encodes badly"
            );
            assert_eq!(
                Request::parse(again[0].header.ty, &again[0].payload).as_ref(),
                Ok(&req)
            );
        } else {
            assert!(out.is_empty(), "a refused encode left bytes behind");
        }
    }
    if let Some(t) = m.msg_type() {
        assert_eq!(MsgType::from_raw(t.raw()), Some(t));
        assert!(!t.to_string().is_empty());
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let k = input.below(16);
    let splits: Vec<usize> = (0..k).map(|_| input.u8() as usize).collect();
    let stream = input.rest();
    // The chunk lengths may all be 0: guarantee progress with a 1-byte chunk among them.
    let mut splits = splits;
    if !splits.is_empty() && splits.iter().all(|&n| n == 0) {
        splits.push(1);
    }
    let whole = decode(stream, &[]);
    let split = decode(stream, &splits);
    assert_eq!(whole, split, "a different split gave different messages");
    if stream.len() <= 4 * 1024 {
        assert_eq!(
            whole,
            decode(stream, &[1]),
            "byte-at-a-time decoding differs"
        );
    }
    for m in &whole.0 {
        parse_all(m);
    }
}
