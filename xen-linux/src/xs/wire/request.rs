//! Requests: what a client sends (and a daemon parses).

use std::borrow::Cow;

use super::{
    HEADER_LEN, Header, MsgType, Perm, TOO_LONG_OUT, WireError, check_len, no_nul, push_str,
    split_nul_terminated, utf8,
};

/// A request, borrowing its strings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields are the table in the module docs
pub enum Request<'a> {
    Read {
        path: &'a str,
    },
    Write {
        path: &'a str,
        value: &'a [u8],
    },
    Directory {
        path: &'a str,
    },
    Mkdir {
        path: &'a str,
    },
    Rm {
        path: &'a str,
    },
    GetPerms {
        path: &'a str,
    },
    SetPerms {
        path: &'a str,
        perms: Cow<'a, [Perm]>,
    },
    Watch {
        path: &'a str,
        token: &'a str,
    },
    Unwatch {
        path: &'a str,
        token: &'a str,
    },
    TransactionStart,
    TransactionEnd {
        commit: bool,
    },
}

impl<'a> Request<'a> {
    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Read { .. } => MsgType::Read,
            Self::Write { .. } => MsgType::Write,
            Self::Directory { .. } => MsgType::Directory,
            Self::Mkdir { .. } => MsgType::Mkdir,
            Self::Rm { .. } => MsgType::Rm,
            Self::GetPerms { .. } => MsgType::GetPerms,
            Self::SetPerms { .. } => MsgType::SetPerms,
            Self::Watch { .. } => MsgType::Watch,
            Self::Unwatch { .. } => MsgType::Unwatch,
            Self::TransactionStart => MsgType::TransactionStart,
            Self::TransactionEnd { .. } => MsgType::TransactionEnd,
        }
    }

    /// The path the request names, if any.
    pub fn path(&self) -> Option<&'a str> {
        match *self {
            Self::Read { path }
            | Self::Write { path, .. }
            | Self::Directory { path }
            | Self::Mkdir { path }
            | Self::Rm { path }
            | Self::GetPerms { path }
            | Self::SetPerms { path, .. }
            | Self::Watch { path, .. }
            | Self::Unwatch { path, .. } => Some(path),
            Self::TransactionStart | Self::TransactionEnd { .. } => None,
        }
    }

    /// Appends the whole message (header and payload) to `out`. Refuses an empty path, a NUL
    /// inside a path or token, and a payload beyond [`PAYLOAD_MAX`](super::PAYLOAD_MAX); `out` is unchanged then.
    pub fn encode(&self, req_id: u32, tx_id: u32, out: &mut Vec<u8>) -> Result<(), WireError> {
        if let Some(path) = self.path() {
            if path.is_empty() {
                return Err(WireError::EmptyPath);
            }
            no_nul(path, "path")?;
        }
        if let Self::Watch { token, .. } | Self::Unwatch { token, .. } = self {
            no_nul(token, "token")?;
        }
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        match self {
            Self::Read { path }
            | Self::Directory { path }
            | Self::Mkdir { path }
            | Self::Rm { path }
            | Self::GetPerms { path } => push_str(out, path),
            Self::Write { path, value } => {
                push_str(out, path);
                out.extend_from_slice(value);
            }
            Self::SetPerms { path, perms } => {
                push_str(out, path);
                for p in perms.iter() {
                    push_str(out, &p.to_string());
                }
            }
            Self::Watch { path, token } | Self::Unwatch { path, token } => {
                push_str(out, path);
                push_str(out, token);
            }
            Self::TransactionStart => push_str(out, ""),
            Self::TransactionEnd { commit } => push_str(out, if *commit { "T" } else { "F" }),
        }
        let len = out.len() - start - HEADER_LEN;
        if let Err(e) = check_len(len, TOO_LONG_OUT) {
            out.truncate(start);
            return Err(e);
        }
        let header = Header {
            ty: self.msg_type().raw(),
            req_id,
            tx_id,
            len: len as u32,
        };
        out[start..start + HEADER_LEN].copy_from_slice(&header.emit());
        Ok(())
    }

    /// Parses a request payload (the daemon's side; used by tests and fakes).
    pub fn parse(ty: u32, payload: &'a [u8]) -> Result<Self, WireError> {
        let t = MsgType::from_raw(ty).ok_or(WireError::UnknownType(ty))?;
        let malformed = |why| WireError::Malformed { ty, why };
        let one_path = || -> Result<&'a str, WireError> {
            match split_nul_terminated(payload, ty)?.as_slice() {
                [p] => Ok(*p),
                _ => Err(malformed("expected exactly one NUL-terminated path")),
            }
        };
        Ok(match t {
            MsgType::Read => Self::Read { path: one_path()? },
            MsgType::Directory => Self::Directory { path: one_path()? },
            MsgType::Mkdir => Self::Mkdir { path: one_path()? },
            MsgType::Rm => Self::Rm { path: one_path()? },
            MsgType::GetPerms => Self::GetPerms { path: one_path()? },
            MsgType::Write => {
                let nul = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(malformed("no NUL after path"))?;
                let path = utf8(&payload[..nul], "path")?;
                Self::Write {
                    path,
                    value: &payload[nul + 1..],
                }
            }
            MsgType::SetPerms => match split_nul_terminated(payload, ty)?.as_slice() {
                [path, perms @ ..] if !perms.is_empty() => {
                    let perms = perms
                        .iter()
                        .map(|p| Perm::parse(p))
                        .collect::<Result<Vec<_>, _>>()?;
                    Self::SetPerms {
                        path,
                        perms: Cow::Owned(perms),
                    }
                }
                _ => return Err(malformed("expected a path and at least one permission")),
            },
            MsgType::Watch | MsgType::Unwatch => {
                let (path, token) = match split_nul_terminated(payload, ty)?.as_slice() {
                    // A trailing reserved empty string is tolerated.
                    [path, token] | [path, token, ""] => (*path, *token),
                    _ => return Err(malformed("expected path and token")),
                };
                if t == MsgType::Watch {
                    Self::Watch { path, token }
                } else {
                    Self::Unwatch { path, token }
                }
            }
            MsgType::TransactionStart => match payload {
                b"" | b"\0" => Self::TransactionStart,
                _ => return Err(malformed("TRANSACTION_START takes an empty string")),
            },
            MsgType::TransactionEnd => match payload {
                b"T\0" | b"T" => Self::TransactionEnd { commit: true },
                b"F\0" | b"F" => Self::TransactionEnd { commit: false },
                _ => return Err(malformed("TRANSACTION_END takes T or F")),
            },
            _ => return Err(WireError::UnknownType(ty)),
        })
    }
}
