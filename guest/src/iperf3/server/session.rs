//! The test itself, once a control connection exists: its phases from the parameters to
//! `IPERF_DONE`, the data streams, and how it ends.

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::{End, HANDSHAKE_TIMEOUT, Iperf3Server, Phase, Role, Test, closing, drain, send_all};
use crate::iperf3::proto::{
    IE_NUMSTREAMS, IE_UNIMP, MAX_RESULTS_JSON, Protocol, Results, State, StreamResult, TestParams,
    encode_message, server_error_message, stream_id,
};

impl Iperf3Server {
    /// The test's control connection and data streams, until nothing more can happen now.
    pub(super) fn poll_test(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let mut work = false;
        loop {
            let Some(t) = &self.test else { return work };
            let step = if t.deadline.is_some_and(|d| now >= d) {
                Err(End::Aborted)
            } else {
                match t.phase {
                    Phase::Params | Phase::Results => self.read_message(sockets, now),
                    Phase::Running => self
                        .move_stream_data(sockets, now)
                        .and_then(|moved| Ok(self.read_state(sockets, now)? || moved)),
                    Phase::CreateStreams | Phase::Display => self.read_state(sockets, now),
                }
            };
            match step {
                Ok(false) => return work,
                Ok(true) => work = true,
                Err(end) => {
                    self.end_test(end, sockets, now);
                    return true;
                }
            }
        }
    }

    /// Read the parameters or the results message and act on it once complete. `Ok(true)` if
    /// anything was read; `Err` if the test ends.
    fn read_message(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) -> Result<bool, End> {
        let Iperf3Server {
            slots,
            test,
            reader,
            max_streams,
            ..
        } = self;
        let Some(t) = test else { return Ok(false) };
        let ctrl = sockets.get_mut::<tcp::Socket<'static>>(slots[t.ctrl].handle);
        let mut read = false;
        let mut complete = false;
        while !complete && ctrl.can_recv() {
            let pushed = ctrl.recv(|buf| match reader.push(buf) {
                Ok((used, done)) => (used, Ok(done)),
                Err(e) => (0, Err(e)),
            });
            match pushed {
                Ok(Ok(done)) => complete = done,
                Ok(Err(_)) => return Err(End::ProtocolError),
                Err(_) => break,
            }
            read = true;
        }
        if !complete {
            return if ctrl.may_recv() {
                Ok(read)
            } else {
                Err(End::Aborted)
            };
        }
        match t.phase {
            Phase::Params => {
                let params =
                    TestParams::from_json(reader.body()).map_err(|_| End::ProtocolError)?;
                if params.protocol != Protocol::Tcp || params.bidirectional {
                    return Err(End::ServerError(IE_UNIMP));
                }
                let parallel = usize::try_from(params.parallel).unwrap_or(usize::MAX);
                if parallel > *max_streams {
                    return Err(End::ServerError(IE_NUMSTREAMS));
                }
                t.reverse = params.reverse;
                t.parallel = parallel;
                t.omit = params.omit;
                t.time = params.time;
                t.phase = Phase::CreateStreams;
                t.deadline = Some(now + HANDSHAKE_TIMEOUT);
                if !send_all(ctrl, &[State::CreateStreams.byte()]) {
                    return Err(End::Aborted);
                }
            }
            Phase::Results => {
                let theirs = Results::from_json(reader.body()).map_err(|_| End::ProtocolError)?;
                let ours = results(t);
                if theirs
                    .streams
                    .iter()
                    .any(|s| !ours.streams.iter().any(|o| o.id == s.id))
                {
                    return Err(End::ProtocolError);
                }
                let mut msg = encode_message(&ours).map_err(|_| End::Aborted)?;
                msg.push(State::DisplayResults.byte());
                if !send_all(ctrl, &msg) {
                    return Err(End::Aborted);
                }
                t.phase = Phase::Display;
            }
            Phase::CreateStreams | Phase::Running | Phase::Display => {}
        }
        Ok(true)
    }

    /// Read one state byte from the client and act on it. `Ok(true)` if one was read; `Err`
    /// if the test ends.
    fn read_state(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> Result<bool, End> {
        let Some(t) = &mut self.test else {
            return Ok(false);
        };
        let ctrl = sockets.get_mut::<tcp::Socket<'static>>(self.slots[t.ctrl].handle);
        let mut byte = [0u8; 1];
        match ctrl.recv_slice(&mut byte) {
            Ok(1) => {}
            // Nothing yet; or the client closed (or reset) its control connection.
            _ => {
                return if ctrl.may_recv() {
                    Ok(false)
                } else {
                    Err(End::Aborted)
                };
            }
        }
        match (t.phase, State::from_byte(byte[0])) {
            (Phase::Running, Some(State::TestEnd)) => {
                if !send_all(ctrl, &[State::ExchangeResults.byte()]) {
                    return Err(End::Aborted);
                }
                t.phase = Phase::Results;
                t.deadline = Some(now + HANDSHAKE_TIMEOUT);
                self.reader.reset(MAX_RESULTS_JSON);
                self.stop_streams(sockets, now);
                Ok(true)
            }
            (Phase::Display, Some(State::IperfDone)) => Err(End::Completed),
            (_, Some(State::ClientTerminate | State::IperfDone)) => Err(End::Aborted),
            // iperf3's server lets TEST_START pass in any phase.
            (_, Some(State::TestStart)) => Ok(true),
            _ => Err(End::ProtocolError),
        }
    }

    /// Receive (normal mode) or send (reverse mode) on every stream. `Err` if a stream died.
    fn move_stream_data(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) -> Result<bool, End> {
        let Iperf3Server {
            slots,
            test,
            pattern,
            counters,
            ..
        } = self;
        let Some(t) = test else { return Ok(false) };
        let counting = now >= t.count_from;
        let mut work = false;
        for s in &mut t.streams {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(slots[s.slot].handle);
            if t.reverse {
                if !sock.may_send() {
                    return Err(End::Aborted);
                }
                while let Ok(n @ 1..) = sock.send(|buf| {
                    let n = fill(buf, pattern, &mut s.pattern_pos);
                    (n, n)
                }) {
                    counters.bytes_out += n as u64;
                    if counting {
                        s.bytes += n as u64;
                    }
                    work = true;
                }
            } else {
                if !sock.may_recv() {
                    return Err(End::Aborted);
                }
                let n = drain(sock) as u64;
                counters.bytes_in += n;
                if counting {
                    s.bytes += n;
                }
                work |= n > 0;
            }
        }
        Ok(work)
    }

    /// `TEST_END`: count what has arrived, close every stream (a sender's queued data still
    /// goes out before its FIN: the client keeps reading until the results).
    fn stop_streams(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let Some(t) = &mut self.test else { return };
        let counting = now >= t.count_from;
        for s in &mut t.streams {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(self.slots[s.slot].handle);
            if !t.reverse {
                let n = drain(sock) as u64;
                self.counters.bytes_in += n;
                if counting {
                    s.bytes += n;
                }
            }
            sock.close();
            self.slots[s.slot].role = closing(now);
        }
        t.end = now;
    }

    /// Count the test's end and release its connections.
    pub(super) fn end_test(&mut self, end: End, sockets: &mut SocketSet<'static>, now: Instant) {
        if self.test.take().is_none() {
            return;
        }
        match end {
            End::Completed => self.completed += 1,
            End::ProtocolError => {
                self.protocol_errors += 1;
                self.aborted += 1;
            }
            End::Aborted | End::ServerError(_) => self.aborted += 1,
        }
        for slot in &mut self.slots {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(slot.handle);
            match (&slot.role, end) {
                (Role::Control, End::ProtocolError) | (Role::Stream, _) => sock.abort(),
                (Role::Control, End::ServerError(code)) => {
                    // Best effort: the client may be gone.
                    send_all(sock, &server_error_message(code, 0));
                    sock.close();
                }
                (Role::Control, _) => sock.close(),
                _ => continue,
            }
            slot.role = closing(now);
        }
    }
}

/// Our results: bytes per stream over the counted time.
fn results(t: &Test) -> Results {
    let micros = (t.end.total_micros() - t.count_from.total_micros()).max(0);
    let seconds = micros as f64 / 1e6;
    Results {
        cpu_util_total: 0.0,
        cpu_util_user: 0.0,
        cpu_util_system: 0.0,
        // smoltcp does not report retransmits: a sender says it has none to report.
        sender_has_retransmits: if t.reverse { 0 } else { -1 },
        streams: t
            .streams
            .iter()
            .enumerate()
            .map(|(k, s)| StreamResult {
                id: stream_id(k),
                bytes: s.bytes,
                retransmits: -1,
                jitter: 0.0,
                errors: 0,
                packets: 0,
                start_time: 0.0,
                end_time: seconds,
            })
            .collect(),
    }
}

/// Fill `buf` from the pattern starting at `pos`, wrapping; returns `buf.len()`.
fn fill(buf: &mut [u8], pattern: &[u8], pos: &mut usize) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(pattern.len() - *pos);
        buf[done..done + n].copy_from_slice(&pattern[*pos..*pos + n]);
        done += n;
        *pos = (*pos + n) % pattern.len();
    }
    done
}
