//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`, `docs/misc/xenstore.txt`): a
//! pure codec, no I/O.
//!
//! Every message in either direction is a 16-byte header `{type, req_id, tx_id, len}` (u32 each,
//! in the host's byte order: both ends run on the same machine) followed by `len` payload bytes,
//! `len <= XENSTORE_PAYLOAD_MAX` (4096). Payloads are NUL-separated strings:
//!
//! | request | payload | reply payload |
//! |---|---|---|
//! | READ | `path\0` | `value` (no NUL added) |
//! | WRITE | `path\0value` (no trailing NUL) | `OK\0` |
//! | MKDIR, RM | `path\0` | `OK\0` |
//! | DIRECTORY | `path\0` | `name\0` per child |
//! | GET_PERMS | `path\0` | `perm\0` per entry (`r0`, `b5`...) |
//! | SET_PERMS | `path\0perm\0...` | `OK\0` |
//! | WATCH, UNWATCH | `path\0token\0` | `OK\0` |
//! | TRANSACTION_START | `\0` (tx_id 0) | `<decimal id>\0` |
//! | TRANSACTION_END | `T\0` commit / `F\0` abort | `OK\0` |
//!
//! Unsolicited WATCH_EVENT messages (`path\0token\0`, req_id and tx_id 0) arrive interleaved
//! with replies; a failed request is answered by ERROR (`ENOENT\0`, the errno's *name*) with the
//! request's req_id and tx_id.

use std::fmt;
use std::str;

mod reply;
mod request;

pub use reply::{
    Access, OK, Perm, WatchEvent, XsErrno, emit_strings, parse_directory, parse_ok, parse_perms,
    parse_tx_id,
};
pub use request::Request;

/// Header size in bytes.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload either side may send. xenstored kills a
/// connection that exceeds it.
pub const PAYLOAD_MAX: usize = 4096;

/// Byte ranges of the header fields.
mod field {
    use std::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const REQ_ID: Range<usize> = 4..8;
    pub const TX_ID: Range<usize> = 8..12;
    pub const LEN: Range<usize> = 12..16;
}

/// `enum xsd_sockmsg_type` (Xen 4.17). Value 20 (`XS_RESTRICT`) was removed and is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)] // the names are xs_wire.h's, without the XS_ prefix
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    const ALL: [MsgType; 22] = [
        Self::Control,
        Self::Directory,
        Self::Read,
        Self::GetPerms,
        Self::Watch,
        Self::Unwatch,
        Self::TransactionStart,
        Self::TransactionEnd,
        Self::Introduce,
        Self::Release,
        Self::GetDomainPath,
        Self::Write,
        Self::Mkdir,
        Self::Rm,
        Self::SetPerms,
        Self::WatchEvent,
        Self::Error,
        Self::IsDomainIntroduced,
        Self::Resume,
        Self::SetTarget,
        Self::ResetWatches,
        Self::DirectoryPart,
    ];

    /// The type with this wire value, if there is one.
    pub fn from_raw(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u32 == v)
    }

    /// The wire value.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // READ, TRANSACTION_START...: the names xenstored's logs use.
        let dbg = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in dbg.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        f.write_str(&out)
    }
}

/// What was wrong with bytes on (or bound for) the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A payload beyond [`PAYLOAD_MAX`]. Incoming, the stream cannot be resynchronised.
    #[error("xenstore payload of {len} bytes exceeds XENSTORE_PAYLOAD_MAX ({PAYLOAD_MAX}): {hint}")]
    PayloadTooLong {
        /// Its length.
        len: usize,
        /// What to do, which depends on the side: shorten the strings of a message being
        /// built; drop the connection that delivered one being decoded.
        hint: &'static str,
    },
    /// A path or token containing NUL (it would end the string early on the wire).
    #[error("xenstore {what} contains a NUL byte")]
    NulInString {
        /// "path" or "token".
        what: &'static str,
    },
    /// An empty path (xenstored rejects it).
    #[error("empty xenstore path")]
    EmptyPath,
    /// A string that is not UTF-8 where text is required.
    #[error("xenstore {what} is not UTF-8")]
    NotUtf8 {
        /// What it was.
        what: &'static str,
    },
    /// A permission string that is not `[nrwb]<domid>`.
    #[error("bad xenstore permission {0:?}: expected n|r|w|b followed by a domid")]
    BadPerm(String),
    /// A payload that does not have its type's shape.
    #[error("malformed xenstore message (type {}): {why}", type_name(*ty))]
    Malformed {
        /// The message type (raw).
        ty: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A type this codec does not encode or decode.
    #[error("unknown xenstore message type {0}")]
    UnknownType(u32),
    /// A reply of another type than the request.
    #[error(
        "xenstore answered a {} request with {}",
        type_name(*expected),
        type_name(*got)
    )]
    UnexpectedReply {
        /// The request's type.
        expected: u32,
        /// The reply's type.
        got: u32,
    },
}

fn type_name(raw: u32) -> String {
    MsgType::from_raw(raw).map_or_else(|| format!("type {raw}"), |t| t.to_string())
}

/// The fixed header (`struct xsd_sockmsg`), with the type kept raw so unknown types survive
/// decoding and can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type ([`MsgType`] as u32).
    pub ty: u32,
    /// Request id, echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Parses a header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let u = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[r]);
            u32::from_ne_bytes(w)
        };
        Header {
            ty: u(field::TYPE),
            req_id: u(field::REQ_ID),
            tx_id: u(field::TX_ID),
            len: u(field::LEN),
        }
    }

    /// The header's bytes.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[field::TYPE].copy_from_slice(&self.ty.to_ne_bytes());
        b[field::REQ_ID].copy_from_slice(&self.req_id.to_ne_bytes());
        b[field::TX_ID].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[field::LEN].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// The type, if known.
    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_raw(self.ty)
    }
}

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `header.len == payload.len()`.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message, refusing a payload beyond [`PAYLOAD_MAX`].
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Result<Self, WireError> {
        check_len(payload.len(), TOO_LONG_OUT)?;
        let header = Header {
            ty: ty.raw(),
            req_id,
            tx_id,
            len: payload.len() as u32,
        };
        Ok(Message { header, payload })
    }

    /// Appends header and payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header.emit());
        out.extend_from_slice(&self.payload);
    }

    /// The type, if known.
    pub fn msg_type(&self) -> Option<MsgType> {
        self.header.msg_type()
    }
}

/// [`WireError::PayloadTooLong`]'s advice for a message being built: the caller's strings are
/// too long.
pub(crate) const TOO_LONG_OUT: &str = "shorten the path or value";

/// [`WireError::PayloadTooLong`]'s advice for a message being decoded: the peer sent it, and the
/// stream cannot be resynchronised.
pub(crate) const TOO_LONG_IN: &str = "the sender broke the protocol and the stream has lost its framing: drop the connection \
     and reconnect";

fn check_len(len: usize, hint: &'static str) -> Result<(), WireError> {
    if len > PAYLOAD_MAX {
        Err(WireError::PayloadTooLong { len, hint })
    } else {
        Ok(())
    }
}

/// Reassembles messages from a byte stream split anywhere.
///
/// After [`WireError::PayloadTooLong`] the stream has lost its framing: drop the connection.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Compact once the consumed prefix is at least half: amortised O(1) per byte.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a whole message (or an oversize header, which `next_message` reports) is held.
    pub fn has_message(&self) -> bool {
        let avail = &self.buf[self.start..];
        avail.first_chunk::<HEADER_LEN>().is_some_and(|h| {
            let len = Header::parse(h).len as usize;
            len > PAYLOAD_MAX || avail.len() >= HEADER_LEN + len
        })
    }

    /// The next whole message, `None` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let avail = &self.buf[self.start..];
        let Some(hdr) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(hdr);
        let len = header.len as usize;
        // Refuse as soon as the header is in: never buffer toward an oversize payload.
        check_len(len, TOO_LONG_IN)?;
        let Some(payload) = avail.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(Message { header, payload }))
    }
}

/// Appends `s` and its terminating NUL.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn no_nul(s: &str, what: &'static str) -> Result<(), WireError> {
    if s.as_bytes().contains(&0) {
        Err(WireError::NulInString { what })
    } else {
        Ok(())
    }
}

fn utf8<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, WireError> {
    str::from_utf8(b).map_err(|_| WireError::NotUtf8 { what })
}

/// Splits `a\0b\0c\0` into `[a, b, c]`. A missing final NUL is tolerated (some daemons omit it
/// on the last string); an empty payload is an empty list.
fn split_nul_terminated(payload: &[u8], ty: u32) -> Result<Vec<&str>, WireError> {
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == 0)
        .map(|s| {
            str::from_utf8(s).map_err(|_| WireError::Malformed {
                ty,
                why: "string is not UTF-8",
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
