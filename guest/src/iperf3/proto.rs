//! The iperf3 control protocol as plain data: state codes, the cookie, the 4-byte-length-prefixed
//! JSON messages, the client's test parameters and the results both sides exchange.
//!
//! Facts from iperf3's `iperf_api.h` / `iperf_api.c` (esnet/iperf, 3.12 and later):
//! - Every connection, control or data stream, starts with the client's 37-byte cookie (36
//!   ASCII characters and a NUL).
//! - State changes travel on the control connection as one signed byte each.
//! - JSON messages are a big-endian `u32` length followed by that many bytes of JSON. iperf3
//!   refuses an empty message and (since 3.17) a parameter message over 8 KiB.
//! - `SERVER_ERROR` is followed by two big-endian `i32`: iperf3's error code and an errno.
//!
//! Nothing here touches a socket: the server (`server.rs`) feeds bytes in and takes bytes out.

use serde::{Deserialize, Deserializer, Serialize};

/// Length of the cookie that starts every connection of a test.
pub const COOKIE_SIZE: usize = 37;

/// The cookie a client sends first on every connection of one test.
pub type Cookie = [u8; COOKIE_SIZE];

/// Largest parameter message accepted (iperf3's `MAX_PARAMS_JSON_STRING`).
pub const MAX_PARAMS_JSON: usize = 8 * 1024;

/// Largest results message accepted from a client (about 400 streams' worth).
pub const MAX_RESULTS_JSON: usize = 64 * 1024;

/// iperf3's error code for "not implemented yet" (`IEUNIMP`), sent with `SERVER_ERROR`.
pub const IE_UNIMP: i32 = 13;
/// iperf3's error code for "too many parallel streams" (`IENUMSTREAMS`).
pub const IE_NUMSTREAMS: i32 = 6;

/// A state byte on the control connection (iperf3's `TEST_START` ... `SERVER_ERROR`).
///
/// Codes iperf3 defines but never sends (`RESULT_REQUEST`, `STREAM_BEGIN`, `STREAM_RUNNING`,
/// `STREAM_END`, `ALL_STREAMS_END`) are unknown here, as they are to iperf3's own server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Server to client: streams are connected, start the clock.
    TestStart,
    /// Server to client: data may flow.
    TestRunning,
    /// Client to server: the test's time (or byte count) is up.
    TestEnd,
    /// Server to client: send your parameters.
    ParamExchange,
    /// Server to client: connect the data streams.
    CreateStreams,
    /// Server to client: the server is going away.
    ServerTerminate,
    /// Client to server: the client is going away (e.g. interrupted).
    ClientTerminate,
    /// Server to client: send your results, then read mine.
    ExchangeResults,
    /// Server to client: show the results.
    DisplayResults,
    /// Neither: the server's initial state.
    IperfStart,
    /// Client to server: the test is over, the control connection closes next.
    IperfDone,
    /// Server to client: a test is already running (or the cookie did not match).
    AccessDenied,
    /// Server to client: an error code and an errno follow.
    ServerError,
}

impl State {
    /// The byte on the wire (`ACCESS_DENIED` is -1, i.e. 0xFF).
    pub const fn code(self) -> i8 {
        match self {
            State::TestStart => 1,
            State::TestRunning => 2,
            State::TestEnd => 4,
            State::ParamExchange => 9,
            State::CreateStreams => 10,
            State::ServerTerminate => 11,
            State::ClientTerminate => 12,
            State::ExchangeResults => 13,
            State::DisplayResults => 14,
            State::IperfStart => 15,
            State::IperfDone => 16,
            State::AccessDenied => -1,
            State::ServerError => -2,
        }
    }

    /// The state for a byte read off the wire; `None` for anything iperf3 does not send.
    pub const fn from_code(code: i8) -> Option<State> {
        Some(match code {
            1 => State::TestStart,
            2 => State::TestRunning,
            4 => State::TestEnd,
            9 => State::ParamExchange,
            10 => State::CreateStreams,
            11 => State::ServerTerminate,
            12 => State::ClientTerminate,
            13 => State::ExchangeResults,
            14 => State::DisplayResults,
            15 => State::IperfStart,
            16 => State::IperfDone,
            -1 => State::AccessDenied,
            -2 => State::ServerError,
            _ => return None,
        })
    }

    /// The byte as sent.
    pub const fn byte(self) -> u8 {
        self.code().to_be_bytes()[0]
    }

    /// The state a received byte stands for.
    pub const fn from_byte(byte: u8) -> Option<State> {
        State::from_code(i8::from_be_bytes([byte]))
    }
}

/// The nine bytes of a `SERVER_ERROR` message: the state, then iperf3's error code and an errno.
pub fn server_error_message(ierrno: i32, errno: i32) -> [u8; 9] {
    let mut msg = [0u8; 9];
    msg[0] = State::ServerError.byte();
    msg[1..5].copy_from_slice(&ierrno.to_be_bytes());
    msg[5..9].copy_from_slice(&errno.to_be_bytes());
    msg
}

/// Why a message from a client was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A JSON message announced zero bytes.
    #[error("iperf3 client sent an empty JSON message")]
    EmptyMessage,
    /// A JSON message announced more bytes than this message may have.
    #[error("iperf3 client announced a {len}-byte JSON message; at most {max} are accepted")]
    MessageTooLarge {
        /// Announced length.
        len: u32,
        /// Largest allowed.
        max: usize,
    },
    /// The message was not JSON of the expected shape.
    #[error("iperf3 client sent malformed JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// A parameter had a value iperf3 itself could not have sent.
    #[error("iperf3 client parameter \"{field}\" {reason}")]
    BadParam {
        /// The JSON key.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A state byte that iperf3 does not send, or not in this phase.
    #[error("iperf3 client sent state byte {} out of turn", *.0 as i8)]
    UnexpectedState(u8),
    /// The results named a stream this test does not have.
    #[error("iperf3 client results name stream {0}, which this test lacks")]
    UnknownStream(i64),
}

/// Incremental reader of one length-prefixed JSON message; reused across messages.
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    header: [u8; 4],
    header_len: usize,
    /// Announced body length, once the header is complete.
    len: Option<usize>,
    body: Vec<u8>,
}

impl FrameReader {
    /// A reader that refuses messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            max,
            header: [0; 4],
            header_len: 0,
            len: None,
            body: Vec::new(),
        }
    }

    /// Forget any partial message and read the next one with limit `max`.
    pub fn reset(&mut self, max: usize) {
        self.max = max;
        self.header_len = 0;
        self.len = None;
        self.body.clear();
    }

    /// Take bytes from `input`. Returns how many were used and whether the message is now
    /// complete (then [`body`](Self::body) holds it and further input is not taken).
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, bool), ProtoError> {
        let mut used = 0;
        if self.len.is_none() {
            let take = (4 - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            used += take;
            if self.header_len < 4 {
                return Ok((used, false));
            }
            let len = u32::from_be_bytes(self.header);
            if len == 0 {
                return Err(ProtoError::EmptyMessage);
            }
            let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
            if len_usize > self.max {
                return Err(ProtoError::MessageTooLarge { len, max: self.max });
            }
            self.body.reserve(len_usize);
            self.len = Some(len_usize);
        }
        let len = self.len.unwrap_or(0);
        let take = (len - self.body.len()).min(input.len() - used);
        self.body.extend_from_slice(&input[used..used + take]);
        used += take;
        Ok((used, self.body.len() == len))
    }

    /// The complete message's JSON bytes (meaningful once `push` reported completion).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A JSON message as sent: big-endian length, then the compact JSON.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    let json = serde_json::to_vec(value).map_err(ProtoError::BadJson)?;
    let len = u32::try_from(json.len()).map_err(|_| ProtoError::MessageTooLarge {
        len: u32::MAX,
        max: u32::MAX as usize,
    })?;
    let mut msg = Vec::with_capacity(4 + json.len());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(&json);
    Ok(msg)
}

/// The parameters message exactly as iperf3 clients send it: every key optional, unknown keys
/// ignored, numbers possibly written as floats (cJSON prints large values with `%g`).
#[derive(Debug, Default, Deserialize)]
struct RawParams {
    tcp: Option<bool>,
    udp: Option<bool>,
    sctp: Option<bool>,
    omit: Option<f64>,
    time: Option<f64>,
    num: Option<f64>,
    blockcount: Option<f64>,
    parallel: Option<f64>,
    reverse: Option<bool>,
    bidirectional: Option<bool>,
    len: Option<f64>,
    window: Option<f64>,
    #[serde(rename = "MSS")]
    mss: Option<f64>,
    nodelay: Option<bool>,
    bandwidth: Option<f64>,
    client_version: Option<String>,
}

/// The transport a test asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (the default when the client names none).
    Tcp,
    /// UDP (`-u`).
    Udp,
    /// SCTP (`--sctp`).
    Sctp,
}

/// A client's test parameters, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TestParams {
    /// Transport of the data streams.
    pub protocol: Protocol,
    /// Seconds at the start not counted (`-O`).
    pub omit: u32,
    /// Test length in seconds (`-t`); 0 when the test ends by bytes or blocks.
    pub time: u32,
    /// Bytes to transfer (`-n`), 0 for none.
    pub num: u64,
    /// Blocks to transfer (`-k`), 0 for none.
    pub blockcount: u64,
    /// Number of data streams (`-P`).
    pub parallel: u32,
    /// Server sends (`-R`).
    pub reverse: bool,
    /// Both send (`--bidir`).
    pub bidirectional: bool,
    /// Block size the client reads/writes (`-l`), 0 if not given.
    pub len: u32,
    /// Socket buffer size asked for (`-w`), 0 if not given.
    pub window: u64,
    /// MSS asked for (`-M`), 0 if not given.
    pub mss: u32,
    /// Nagle off asked for (`-N`).
    pub nodelay: bool,
    /// Target bitrate in bit/s (`-b`), 0 if not given.
    pub bandwidth: u64,
    /// The client's version string, if it sent one.
    pub client_version: Option<String>,
}

/// A non-negative whole number no larger than `max`, as iperf3 could have sent it.
fn whole(value: Option<f64>, field: &'static str, max: u64) -> Result<u64, ProtoError> {
    let Some(v) = value else { return Ok(0) };
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 {
        return Err(ProtoError::BadParam {
            field,
            reason: "is not a non-negative whole number",
        });
    }
    if v > max as f64 {
        return Err(ProtoError::BadParam {
            field,
            reason: "is out of range",
        });
    }
    // In range and whole, so the conversion is exact.
    Ok(v as u64)
}

fn whole_u32(value: Option<f64>, field: &'static str) -> Result<u32, ProtoError> {
    let v = whole(value, field, u64::from(u32::MAX))?;
    u32::try_from(v).map_err(|_| ProtoError::BadParam {
        field,
        reason: "is out of range",
    })
}

impl TestParams {
    /// Parse and check a parameters message's JSON.
    pub fn from_json(json: &[u8]) -> Result<TestParams, ProtoError> {
        let raw: RawParams = serde_json::from_slice(json).map_err(ProtoError::BadJson)?;
        let protocol = if raw.udp == Some(true) {
            Protocol::Udp
        } else if raw.sctp == Some(true) {
            Protocol::Sctp
        } else {
            Protocol::Tcp
        };
        let parallel = match raw.parallel {
            None => 1,
            Some(_) => whole_u32(raw.parallel, "parallel")?,
        };
        if parallel == 0 {
            return Err(ProtoError::BadParam {
                field: "parallel",
                reason: "is zero",
            });
        }
        // `tcp` is informational once the others are absent; accept it either way.
        let _ = raw.tcp;
        Ok(TestParams {
            protocol,
            omit: whole_u32(raw.omit, "omit")?,
            time: whole_u32(raw.time, "time")?,
            num: whole(raw.num, "num", u64::MAX)?,
            blockcount: whole(raw.blockcount, "blockcount", u64::MAX)?,
            parallel,
            reverse: raw.reverse == Some(true),
            bidirectional: raw.bidirectional == Some(true),
            len: whole_u32(raw.len, "len")?,
            window: whole(raw.window, "window", u64::MAX)?,
            mss: whole_u32(raw.mss, "MSS")?,
            nodelay: raw.nodelay == Some(true),
            bandwidth: whole(raw.bandwidth, "bandwidth", u64::MAX)?,
            client_version: raw.client_version,
        })
    }
}

/// One stream's line in a results message (iperf3's `send_results`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamResult {
    /// Stream id: 1 for the first stream, then 3, 4, ... (iperf3 skips 2).
    #[serde(deserialize_with = "integer")]
    pub id: i64,
    /// Bytes this side sent (sender) or received (receiver), omitted seconds excluded.
    #[serde(deserialize_with = "byte_count")]
    pub bytes: u64,
    /// Retransmits if this side sent and can count them, else -1.
    #[serde(deserialize_with = "integer")]
    pub retransmits: i64,
    /// UDP jitter; 0 for TCP.
    pub jitter: f64,
    /// UDP errors; 0 for TCP.
    #[serde(deserialize_with = "integer")]
    pub errors: i64,
    /// UDP packets; 0 for TCP.
    #[serde(deserialize_with = "integer")]
    pub packets: i64,
    /// Seconds from the stream's start to its start (always 0, as iperf3 sends it).
    #[serde(default)]
    pub start_time: f64,
    /// Seconds from the stream's start to the end of the test.
    #[serde(default)]
    pub end_time: f64,
}

/// A byte count as cJSON prints it: an integer, or a whole number in `%g` form past `INT_MAX`.
fn byte_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        // Below 2^64 and whole, so the conversion is exact enough for a count.
        Some(f)
            if f.is_finite()
                && f >= 0.0
                && f.fract() == 0.0
                && f < 18_446_744_073_709_551_616.0 =>
        {
            Ok(f as u64)
        }
        _ => Err(D::Error::custom(
            "stream bytes is not a non-negative whole number",
        )),
    }
}

/// A signed integer as iperf3 clients print it. iperf3 3.12's cJSON prints -1 as
/// 18446744073709551615 (the value's 64-bit two's complement), so integers past `i64::MAX`
/// wrap back, as the sender meant them.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    if let Some(v) = n.as_i64() {
        return Ok(v);
    }
    if let Some(v) = n.as_u64() {
        return Ok(v as i64);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        _ => Err(D::Error::custom("is not a whole number")),
    }
}

/// A results message, as the server sends it and as the client's is read.
///
/// The client requires every field here (`get_results` fails without them); `congestion_used`
/// and `server_output_*` are optional and not sent: these guests have no congestion control
/// algorithm to name and keep no server-side report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// CPU use over the test, percent; the embedded guest does not measure it and sends 0.
    pub cpu_util_total: f64,
    /// User CPU, percent (0, as above).
    pub cpu_util_user: f64,
    /// System CPU, percent (0, as above).
    pub cpu_util_system: f64,
    /// -1 when this side only received; else 1 if it reports retransmits, 0 if not.
    #[serde(deserialize_with = "integer")]
    pub sender_has_retransmits: i64,
    /// One entry per stream.
    pub streams: Vec<StreamResult>,
}

impl Results {
    /// Parse a results message's JSON (the client's, at `EXCHANGE_RESULTS`).
    pub fn from_json(json: &[u8]) -> Result<Results, ProtoError> {
        serde_json::from_slice(json).map_err(ProtoError::BadJson)
    }
}

/// The id iperf3 gives the `index`-th stream (0-based) of a test: 1, then 3, 4, 5, ...
///
/// iperf3's `iperf_add_stream` numbers the first stream 1 and every later one from 3; the
/// gap is kept for compatibility between versions, and client and server must agree on it.
pub const fn stream_id(index: usize) -> i64 {
    if index == 0 { 1 } else { index as i64 + 2 }
}

#[cfg(test)]
mod tests;
