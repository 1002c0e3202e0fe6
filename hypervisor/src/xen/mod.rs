//! Real Xen, from a Linux dom0 or driver domain's userspace: the raw layer under the seam.
//!
//! - [`Gntdev`] (`/dev/xen/gntdev`): batched grant copies with the local side given by virtual
//!   address, and grant maps ([`GntdevMapping`]) of a guest's pages (rings).
//! - [`xs::XsClient`] (xenstored's socket, or `/dev/xen/xenbus`): read, write, directory,
//!   permissions, watches, transactions over the xenstore wire protocol ([`xs::wire`]).

mod error;
#[allow(unsafe_code)]
pub mod gntdev;
#[allow(unsafe_code)]
mod sys;
pub mod xs;

pub use error::{Error, Result};
pub use gntdev::{GNTDEV_PATH, Gntdev, GntdevMapping, GrantCopySegment, GrantSide};
pub use xs::XsClient;
