//! An iperf3 server for the embedded guests: enough of iperf3's protocol (TCP, one or a few
//! streams, normal and reverse) that the stock `iperf3` client runs its tests against it.
//!
//! - [`proto`]: the protocol as plain data (state codes, cookie, JSON messages), no sockets.
//! - [`server`]: the state machine over smoltcp sockets.
//!
//! Not supported, refused with iperf3's "not implemented" error: UDP, SCTP, `--bidir`.
//! Ignored: `-b` (the server sends as fast as the socket takes), `-w`, `-M`, `-N` (Nagle is
//! always off), `--get-server-output` (no server output is kept). CPU use is reported as 0.

pub mod proto;
pub mod server;

pub use server::{Iperf3Server, PATTERN_PERIOD};
