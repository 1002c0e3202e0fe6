//! Replies, watch events, errors and permission strings: what a daemon sends (and a client
//! parses).

use std::fmt;

use super::{Message, MsgType, WireError, no_nul, push_str, split_nul_terminated, utf8};
use hypervisor::types::DomId;

/// Access a permission entry grants (`n`, `r`, `w`, `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

impl Access {
    /// The wire letter.
    pub const fn letter(self) -> char {
        match self {
            Self::None => 'n',
            Self::Read => 'r',
            Self::Write => 'w',
            Self::Both => 'b',
        }
    }
}

/// One permission entry. In a node's list the first names the owner and the access of every
/// domain not listed; the rest are the ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub access: Access,
}

impl Perm {
    /// Parses `r0`, `b5`, `n65535`...: a letter then a decimal domid (0..=65535), nothing else.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = || WireError::BadPerm(s.to_owned());
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let domid = digits.parse::<DomId>().map_err(|_| bad())?;
        Ok(Perm { domid, access })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// Checks an `OK\0` reply.
pub fn parse_ok(ty: MsgType, payload: &[u8]) -> Result<(), WireError> {
    match payload {
        b"OK\0" | b"OK" => Ok(()),
        _ => Err(WireError::Malformed {
            ty: ty.raw(),
            why: "expected OK",
        }),
    }
}

/// The `OK\0` reply payload.
pub const OK: &[u8] = b"OK\0";

/// Parses a DIRECTORY reply: the children's leaf names.
pub fn parse_directory(payload: &[u8]) -> Result<Vec<String>, WireError> {
    Ok(split_nul_terminated(payload, MsgType::Directory.raw())?
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// Encodes a list of NUL-terminated strings (a DIRECTORY or GET_PERMS reply).
pub fn emit_strings<S: AsRef<str>>(items: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        push_str(&mut out, s.as_ref());
    }
    out
}

/// Parses a GET_PERMS reply (at least one entry).
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, WireError> {
    let ty = MsgType::GetPerms.raw();
    let items = split_nul_terminated(payload, ty)?;
    if items.is_empty() {
        return Err(WireError::Malformed {
            ty,
            why: "no permissions",
        });
    }
    items.into_iter().map(Perm::parse).collect()
}

/// Parses a TRANSACTION_START reply: the id in unsigned decimal.
pub fn parse_tx_id(payload: &[u8]) -> Result<u32, WireError> {
    let malformed = WireError::Malformed {
        ty: MsgType::TransactionStart.raw(),
        why: "expected a decimal transaction id",
    };
    let s = payload.strip_suffix(b"\0").unwrap_or(payload);
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(malformed);
    }
    let id = utf8(s, "transaction id")?
        .parse::<u32>()
        .map_err(|_| malformed.clone())?;
    if id == 0 {
        // 0 means "no transaction": a daemon handing it out would silently run us untransacted.
        return Err(malformed);
    }
    Ok(id)
}

/// A watch firing: the path that changed (or the watched path, for a removed ancestor) and the
/// token the watch was registered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// The changed path.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

impl WatchEvent {
    /// Parses a WATCH_EVENT payload `path\0token\0`.
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        match split_nul_terminated(payload, MsgType::WatchEvent.raw())?.as_slice() {
            [path, token] => Ok(WatchEvent {
                path: (*path).to_owned(),
                token: (*token).to_owned(),
            }),
            _ => Err(WireError::Malformed {
                ty: MsgType::WatchEvent.raw(),
                why: "expected path and token",
            }),
        }
    }

    /// The WATCH_EVENT message (req_id and tx_id 0).
    pub fn to_message(&self) -> Result<Message, WireError> {
        no_nul(&self.path, "path")?;
        no_nul(&self.token, "token")?;
        Message::new(
            MsgType::WatchEvent,
            0,
            0,
            emit_strings(&[&self.path, &self.token]),
        )
    }
}

/// An errno name a daemon sent in an ERROR reply (xs_wire.h's `xsd_errors`, plus oxenstored's
/// `EQUOTA`). Names outside the list are kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the errno names
pub enum XsErrno {
    Enoent,
    Eacces,
    Eperm,
    Einval,
    Eexist,
    Eisdir,
    Enotempty,
    Enospc,
    Enomem,
    Eio,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Enosys,
    Equota,
    /// A name this list does not know, as sent.
    Other(String),
}

impl XsErrno {
    const KNOWN: [(XsErrno, &'static str); 17] = [
        (Self::Enoent, "ENOENT"),
        (Self::Eacces, "EACCES"),
        (Self::Eperm, "EPERM"),
        (Self::Einval, "EINVAL"),
        (Self::Eexist, "EEXIST"),
        (Self::Eisdir, "EISDIR"),
        (Self::Enotempty, "ENOTEMPTY"),
        (Self::Enospc, "ENOSPC"),
        (Self::Enomem, "ENOMEM"),
        (Self::Eio, "EIO"),
        (Self::Erofs, "EROFS"),
        (Self::Ebusy, "EBUSY"),
        (Self::Eagain, "EAGAIN"),
        (Self::Eisconn, "EISCONN"),
        (Self::E2big, "E2BIG"),
        (Self::Enosys, "ENOSYS"),
        (Self::Equota, "EQUOTA"),
    ];

    /// The errno for a name.
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| Self::Other(name.to_owned()), |(e, _)| e)
    }

    /// The name as sent on the wire.
    pub fn name(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => Self::KNOWN
                .iter()
                .find(|(e, _)| e == known)
                .map_or("", |(_, n)| n),
        }
    }

    /// Parses an ERROR payload (`ENOENT\0`). Unknown or non-UTF-8 names are kept as text.
    pub fn parse(payload: &[u8]) -> Self {
        let s = payload.strip_suffix(b"\0").unwrap_or(payload);
        Self::from_name(&String::from_utf8_lossy(s))
    }

    /// The ERROR payload.
    pub fn emit(&self) -> Vec<u8> {
        emit_strings(&[self.name()])
    }

    /// What the error means for a xenstore request, and what to do about it.
    pub fn explain(&self) -> &'static str {
        match self {
            Self::Enoent => "no such node (or its parent is missing)",
            Self::Eacces | Self::Eperm => {
                "permission denied: run as root in dom0, or have dom0 grant this domain access \
                 to the node"
            }
            Self::Einval => "invalid request (bad path, value or transaction id)",
            Self::Eexist => "the node already exists",
            Self::Eisdir => "the node is a directory",
            Self::Enotempty => "the node has children",
            Self::Enospc | Self::Enomem => "xenstored is out of space",
            Self::Eio => "xenstored I/O error",
            Self::Erofs => "xenstore is read-only",
            Self::Ebusy => "xenstored is busy: retry",
            Self::Eagain => "transaction conflict: retry the transaction",
            Self::Eisconn => "already connected",
            Self::E2big => "the reply would exceed the 4096-byte payload limit",
            Self::Enosys => "xenstored does not support this request",
            Self::Equota => "this domain's xenstore quota is exhausted: remove nodes or raise it",
            Self::Other(_) => "unknown xenstored error",
        }
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.explain())
    }
}
