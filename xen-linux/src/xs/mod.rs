//! Xenstore: the wire protocol ([`wire`], a pure codec) and a client over xenstored's socket or
//! `/dev/xen/xenbus` ([`XsClient`]).

mod client;
#[cfg(test)]
pub(crate) mod fake;
pub mod wire;

pub use client::{
    MAX_TX_ATTEMPTS, PATH_ENV, SOCKET_PATHS, Transaction, XENBUS_DEV, XsClient, candidates,
};
pub use wire::{Access, Perm, WatchEvent, XsErrno};
