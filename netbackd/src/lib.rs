//! netbackd: the splitnet driver-domain program.
//!
//! Today the crate holds the services its embedded guests run ([`guest`]): ICMP echo (answered
//! by smoltcp's `Interface`), TCP echo (port 7), TCP discard (port 9) and an iperf3 server
//! (port 5201) that the stock `iperf3` client can test against. They work over any smoltcp
//! device; in netbackd the device is netfront.
#![forbid(unsafe_code)]

pub mod guest;
