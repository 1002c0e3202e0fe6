//! Real Xen, from a Linux dom0 or driver domain's userspace: the raw layer under the seam.
//!
//! - [`xs::XsClient`] (xenstored's socket, or `/dev/xen/xenbus`): read, write, directory,
//!   permissions, watches, transactions over the xenstore wire protocol ([`xs::wire`]).

mod error;
#[allow(unsafe_code)]
mod sys;
pub mod xs;

pub use error::{Error, Result};
pub use xs::XsClient;
