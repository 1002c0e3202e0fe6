//! The guest services in process: a guest and a scripted client, two smoltcp interfaces on an
//! in-memory wire with a simulated clock. The iperf3 client here is this test's own, written
//! from iperf3's client (`iperf_client_api.c`); the stock binary runs against netbackd's guests
//! in netbackd's `tests/program.rs`.

mod support;

use guest::iperf3::PATTERN_PERIOD;
use guest::{DISCARD_PORT, ECHO_PORT, IPERF3_PORT, ServicesConfig};
use serde_json::Value;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use support::pipe::Net;

const COOKIE: &[u8; 37] = b"abcdefghijklmnopqrstuvwxyz234567abcd\0";
const OTHER_COOKIE: &[u8; 37] = b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\0";

// State bytes, spelled out from iperf_api.h rather than taken from the crate under test.
const TEST_START: u8 = 1;
const TEST_RUNNING: u8 = 2;
const TEST_END: u8 = 4;
const PARAM_EXCHANGE: u8 = 9;
const CREATE_STREAMS: u8 = 10;
const CLIENT_TERMINATE: u8 = 12;
const EXCHANGE_RESULTS: u8 = 13;
const DISPLAY_RESULTS: u8 = 14;
const IPERF_DONE: u8 = 16;
const ACCESS_DENIED: u8 = 0xFF;
const SERVER_ERROR: u8 = 0xFE;

fn config() -> ServicesConfig {
    ServicesConfig {
        tcp_buffer: 256 * 1024,
        ..ServicesConfig::default()
    }
}

/// A length-prefixed JSON message.
fn message(json: &str) -> Vec<u8> {
    let mut m = (json.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(json.as_bytes());
    m
}

/// Parameters as iperf3 3.12 sends them for a 1 s test, with `extra` keys spliced in.
fn params(parallel: u32, extra: &str) -> String {
    params_timed(parallel, 1, extra)
}

/// Parameters for a `time`-second test (0: ended by bytes), with `extra` keys spliced in.
fn params_timed(parallel: u32, time: u32, extra: &str) -> String {
    format!(
        r#"{{"tcp":true,"omit":0,"time":{time},"blockcount":0,"parallel":{parallel},{extra}"len":131072,"pacing_timer":1000,"client_version":"3.12"}}"#
    )
}

/// Client results for streams `(id, bytes)`, shaped like iperf3 3.12's.
fn client_results(streams: &[(i64, u64)]) -> String {
    let streams: Vec<String> = streams
        .iter()
        .map(|(id, bytes)| {
            format!(
                r#"{{"id":{id},"bytes":{bytes},"retransmits":18446744073709551615,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":1.0}}"#
            )
        })
        .collect();
    format!(
        r#"{{"cpu_util_total":1.0,"cpu_util_user":0.5,"cpu_util_system":0.5,"sender_has_retransmits":1,"streams":[{}]}}"#,
        streams.join(",")
    )
}

/// Connect the control connection and exchange parameters; returns it once the server
/// asked for streams.
#[track_caller]
fn start_test(net: &mut Net, params: &str) -> SocketHandle {
    let ctrl = net.connect(IPERF3_PORT);
    net.send(ctrl, COOKIE);
    assert_eq!(net.recv_exact(ctrl, 1), [PARAM_EXCHANGE]);
    net.send(ctrl, &message(params));
    assert_eq!(net.recv_exact(ctrl, 1), [CREATE_STREAMS]);
    ctrl
}

/// Connect `n` data streams; returns them once the server said TEST_START, TEST_RUNNING.
#[track_caller]
fn connect_streams(net: &mut Net, ctrl: SocketHandle, n: usize) -> Vec<SocketHandle> {
    let streams: Vec<_> = (0..n)
        .map(|_| {
            let s = net.connect(IPERF3_PORT);
            net.send(s, COOKIE);
            s
        })
        .collect();
    assert_eq!(net.recv_exact(ctrl, 2), [TEST_START, TEST_RUNNING]);
    streams
}

/// TEST_END, the results exchange, IPERF_DONE; returns the server's results.
#[track_caller]
fn finish_test(net: &mut Net, ctrl: SocketHandle, ours: &[(i64, u64)]) -> Value {
    assert_eq!(net.recv_exact(ctrl, 1), [EXCHANGE_RESULTS]);
    net.send(ctrl, &message(&client_results(ours)));
    let len = u32::from_be_bytes(net.recv_exact(ctrl, 4).try_into().expect("4 bytes"));
    let json = net.recv_exact(ctrl, len as usize);
    let results: Value = serde_json::from_slice(&json).expect("server results are JSON");
    assert_eq!(net.recv_exact(ctrl, 1), [DISPLAY_RESULTS]);
    net.send(ctrl, &[IPERF_DONE]);
    net.close(ctrl);
    results
}

/// A whole normal test sending `len` bytes on one stream; returns the server's results.
#[track_caller]
fn normal_test(net: &mut Net, len: usize) -> Value {
    let ctrl = start_test(net, &params(1, ""));
    let streams = connect_streams(net, ctrl, 1);
    let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    net.send(streams[0], &data);
    net.flush(streams[0]);
    net.send(ctrl, &[TEST_END]);
    let results = finish_test(net, ctrl, &[(1, len as u64)]);
    net.close(streams[0]);
    results
}

#[track_caller]
fn assert_results_shape(results: &Value) {
    for key in [
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
    ] {
        assert!(results[key].is_number(), "{key} in {results}");
    }
    for s in results["streams"].as_array().expect("streams") {
        for key in [
            "id",
            "bytes",
            "retransmits",
            "jitter",
            "errors",
            "packets",
            "start_time",
            "end_time",
        ] {
            assert!(s[key].is_number(), "stream {key} in {results}");
        }
    }
}

#[test]
fn iperf3_normal_test_counts_every_byte_the_client_sent() {
    let mut net = Net::new(&config());
    let results = normal_test(&mut net, 2 << 20);
    assert_results_shape(&results);
    assert_eq!(results["sender_has_retransmits"], -1);
    assert_eq!(results["streams"][0]["id"], 1);
    assert_eq!(results["streams"][0]["bytes"], 2 << 20);
    assert_eq!(results["streams"][0]["retransmits"], -1);
    net.run_until("test counted", |n| n.stats().iperf3_tests_completed == 1);
    let stats = net.stats();
    assert_eq!(stats.iperf3.bytes_in, 2 << 20);
    assert_eq!(stats.iperf3.bytes_out, 0);
    assert_eq!(stats.iperf3.connections, 2);
    assert_eq!(
        (stats.iperf3_tests_aborted, stats.protocol_errors),
        (0, 0),
        "{stats:?}"
    );

    // Ready for the next test at once, on the same sockets.
    let again = normal_test(&mut net, 300_000);
    assert_eq!(again["streams"][0]["bytes"], 300_000);
    net.run_until("second test counted", |n| {
        n.stats().iperf3_tests_completed == 2
    });
}

#[test]
fn iperf3_reverse_test_sends_the_pattern_and_reports_what_arrived() {
    let mut net = Net::new(&config());
    let ctrl = start_test(&mut net, &params(1, r#""reverse":true,"#));
    let stream = connect_streams(&mut net, ctrl, 1)[0];

    // Read a good deal, checking every byte against the pattern, then end the test and read
    // on until the guest's FIN, as iperf3's client keeps draining after TEST_END.
    let mut offset = 0u64;
    let mut check = |chunk: &[u8]| {
        for &b in chunk {
            assert_eq!(b as u64, offset % PATTERN_PERIOD as u64, "byte {offset}");
            offset += 1;
        }
    };
    let first = net.recv_exact(stream, 3 << 20);
    check(&first);
    net.send(ctrl, &[TEST_END]);
    assert_eq!(net.recv_exact(ctrl, 1), [EXCHANGE_RESULTS]);
    let rest = net.recv_to_end(stream, &mut check);
    let received = first.len() as u64 + rest;
    assert_eq!(offset, received);

    net.send(ctrl, &message(&client_results(&[(1, received)])));
    let len = u32::from_be_bytes(net.recv_exact(ctrl, 4).try_into().expect("4 bytes"));
    let results: Value =
        serde_json::from_slice(&net.recv_exact(ctrl, len as usize)).expect("results JSON");
    assert_results_shape(&results);
    assert_eq!(results["sender_has_retransmits"], 0);
    // Everything the guest queued before TEST_END arrived, and nothing after it was queued.
    assert_eq!(results["streams"][0]["bytes"], received);
    assert_eq!(net.recv_exact(ctrl, 1), [DISPLAY_RESULTS]);
    net.send(ctrl, &[IPERF_DONE]);
    net.close(ctrl);
    net.close(stream);
    net.run_until("test counted", |n| n.stats().iperf3_tests_completed == 1);
    assert_eq!(net.stats().iperf3.bytes_out, received);

    // A normal test follows at once.
    assert_eq!(
        normal_test(&mut net, 100_000)["streams"][0]["bytes"],
        100_000
    );
}

#[test]
fn iperf3_omitted_seconds_are_not_counted() {
    let mut net = Net::new(&config());
    let omit_1s = r#"{"tcp":true,"omit":1,"time":3,"parallel":1,"len":131072}"#;
    let ctrl = start_test(&mut net, omit_1s);
    let stream = connect_streams(&mut net, ctrl, 1)[0];
    let started = net.now();
    net.send(stream, &[1; 100_000]);
    net.flush(stream);
    net.run_until("the omitted second to pass", |n| {
        (n.now() - started).total_millis() > 1_100
    });
    net.send(stream, &[2; 50_000]);
    net.flush(stream);
    net.send(ctrl, &[TEST_END]);
    let results = finish_test(&mut net, ctrl, &[(1, 50_000)]);
    assert_eq!(results["streams"][0]["bytes"], 50_000);
    let end_time = results["streams"][0]["end_time"]
        .as_f64()
        .expect("end_time");
    assert!(
        end_time > 0.0 && end_time < 1.0,
        "counted time {end_time} s should start after the omitted second"
    );
    net.close(stream);
    net.run_until("test counted", |n| n.stats().iperf3_tests_completed == 1);
    // The counters count every byte; the results only the counted ones.
    assert_eq!(net.stats().iperf3.bytes_in, 150_000);
}

#[test]
fn iperf3_two_streams_get_ids_1_and_3() {
    let mut net = Net::new(&config());
    let ctrl = start_test(&mut net, &params(2, ""));
    let streams = connect_streams(&mut net, ctrl, 2);
    net.send(streams[0], &[1; 100_000]);
    net.send(streams[1], &[2; 200_000]);
    net.flush(streams[0]);
    net.flush(streams[1]);
    net.send(ctrl, &[TEST_END]);
    let results = finish_test(&mut net, ctrl, &[(1, 100_000), (3, 200_000)]);
    let got: Vec<(i64, u64)> = results["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap_or(0),
                s["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(got, [(1, 100_000), (3, 200_000)]);
}

#[test]
fn iperf3_refuses_other_clients_while_a_test_runs() {
    let mut net = Net::new(&config());
    let ctrl = start_test(&mut net, &params(1, ""));

    // While streams connect, a connection with another cookie is refused after its cookie.
    let intruder = net.connect(IPERF3_PORT);
    net.send(intruder, OTHER_COOKIE);
    assert_eq!(net.recv_exact(intruder, 1), [ACCESS_DENIED]);
    net.recv_to_end(intruder, |_| {});
    net.close(intruder);

    let stream = connect_streams(&mut net, ctrl, 1)[0];
    // While running, a new client is refused before it says anything.
    let second = net.connect(IPERF3_PORT);
    assert_eq!(net.recv_exact(second, 1), [ACCESS_DENIED]);
    net.recv_to_end(second, |_| {});
    net.close(second);

    net.send(stream, &[0; 50_000]);
    net.flush(stream);
    net.send(ctrl, &[TEST_END]);
    let results = finish_test(&mut net, ctrl, &[(1, 50_000)]);
    assert_eq!(results["streams"][0]["bytes"], 50_000);
    net.close(stream);
    net.run_until("test counted", |n| n.stats().iperf3_tests_completed == 1);
    let stats = net.stats();
    assert_eq!(stats.iperf3_access_denied, 2);
    assert_eq!((stats.iperf3_tests_aborted, stats.protocol_errors), (0, 0));
}

/// Start a test, send `bad` at the point `at` names, and expect the guest to reset the control
/// connection and count one protocol error.
#[track_caller]
fn expect_protocol_error(net: &mut Net, at: &str, bad: &[u8]) {
    let before = net.stats();
    let ctrl = net.connect(IPERF3_PORT);
    let mut streams = Vec::new();
    match at {
        "cookie" => {
            net.send(ctrl, &COOKIE[..10]);
            net.sock(ctrl).close();
        }
        "params" => {
            net.send(ctrl, COOKIE);
            assert_eq!(net.recv_exact(ctrl, 1), [PARAM_EXCHANGE]);
            net.send(ctrl, bad);
        }
        "running" | "results" => {
            net.send(ctrl, COOKIE);
            assert_eq!(net.recv_exact(ctrl, 1), [PARAM_EXCHANGE]);
            net.send(ctrl, &message(&params(1, "")));
            assert_eq!(net.recv_exact(ctrl, 1), [CREATE_STREAMS]);
            streams = connect_streams(net, ctrl, 1);
            if at == "results" {
                net.send(ctrl, &[TEST_END]);
                assert_eq!(net.recv_exact(ctrl, 1), [EXCHANGE_RESULTS]);
            }
            net.send(ctrl, bad);
        }
        _ => unreachable!("{at}"),
    }
    net.wait_closed(ctrl);
    if at != "cookie" {
        assert_eq!(
            net.sock(ctrl).state(),
            tcp::State::Closed,
            "{at}: control connection should be reset"
        );
    }
    for s in streams {
        net.wait_closed(s);
    }
    let after = net.stats();
    assert_eq!(
        after.protocol_errors,
        before.protocol_errors + 1,
        "{at} {bad:?}"
    );
}

#[test]
fn iperf3_malformed_input_closes_the_connection_and_the_next_test_runs() {
    let mut net = Net::new(&config());
    expect_protocol_error(&mut net, "cookie", b"");
    expect_protocol_error(&mut net, "params", &[0xFF, 0xFF, 0xFF, 0xFF]);
    expect_protocol_error(&mut net, "params", &[0, 0, 0x20, 1]); // 8 KiB + 1
    expect_protocol_error(&mut net, "params", &[0, 0, 0, 0]);
    expect_protocol_error(&mut net, "params", &message("{not json"));
    expect_protocol_error(&mut net, "params", &message(r#"{"time":-3}"#));
    expect_protocol_error(&mut net, "running", &[0x63]);
    expect_protocol_error(&mut net, "running", &[EXCHANGE_RESULTS]);
    expect_protocol_error(&mut net, "results", &message(r#"{"streams":[]}"#));
    expect_protocol_error(
        &mut net,
        "results",
        &message(&client_results(&[(7, 1)])), // a stream this test lacks
    );
    let stats = net.stats();
    assert_eq!(stats.protocol_errors, 10);
    // All but the cookie case had started a test.
    assert_eq!(stats.iperf3_tests_aborted, 9);
    assert_eq!(normal_test(&mut net, 10_000)["streams"][0]["bytes"], 10_000);
}

#[test]
fn iperf3_unsupported_requests_get_server_error() {
    let mut net = Net::new(&config());
    for (params, code) in [
        (params(1, r#""udp":true,"#), 13u8), // IEUNIMP
        (params(1, r#""bidirectional":true,"#), 13),
        (params(3, ""), 6), // IENUMSTREAMS: at most 2 configured
    ] {
        let ctrl = net.connect(IPERF3_PORT);
        net.send(ctrl, COOKIE);
        assert_eq!(net.recv_exact(ctrl, 1), [PARAM_EXCHANGE]);
        net.send(ctrl, &message(&params));
        let reply = net.recv_exact(ctrl, 9);
        assert_eq!(reply, [SERVER_ERROR, 0, 0, 0, code, 0, 0, 0, 0], "{params}");
        net.recv_to_end(ctrl, |_| {});
        net.close(ctrl);
    }
    let stats = net.stats();
    assert_eq!((stats.iperf3_tests_aborted, stats.protocol_errors), (3, 0));
    assert_eq!(normal_test(&mut net, 1000)["streams"][0]["bytes"], 1000);
}

#[test]
fn iperf3_terminated_or_vanished_clients_abort_the_test() {
    let mut net = Net::new(&config());
    // Tests by byte count (`-n`): no server time limit, so only the event itself can end them.
    let by_bytes = r#""num":1000000,"#;
    let quickly = 1000; // steps: 0.1 simulated seconds

    // CLIENT_TERMINATE while running.
    let ctrl = start_test(&mut net, &params_timed(1, 0, by_bytes));
    let stream = connect_streams(&mut net, ctrl, 1)[0];
    net.send(ctrl, &[CLIENT_TERMINATE]);
    net.run_until_within("abort on CLIENT_TERMINATE", quickly, |n| {
        n.stats().iperf3_tests_aborted == 1
    });
    net.wait_closed(stream);
    net.close(ctrl);

    // The control connection closed while streams connect.
    let ctrl = start_test(&mut net, &params_timed(1, 0, by_bytes));
    net.sock(ctrl).close();
    net.run_until_within("abort on control FIN", quickly, |n| {
        n.stats().iperf3_tests_aborted == 2
    });
    net.wait_closed(ctrl);

    // A data stream reset while running.
    let ctrl = start_test(&mut net, &params_timed(1, 0, by_bytes));
    let stream = connect_streams(&mut net, ctrl, 1)[0];
    net.sock(stream).abort();
    net.run_until_within("abort on stream reset", quickly, |n| {
        n.stats().iperf3_tests_aborted == 3
    });
    net.wait_closed(ctrl);

    // A client silent after TEST_RUNNING of a 1 s test: iperf3's limit (time + 40 s) ends it,
    // not earlier.
    let ctrl = start_test(&mut net, &params(1, ""));
    let _stream = connect_streams(&mut net, ctrl, 1)[0];
    let started = net.now();
    net.run_until("server time limit", |n| n.stats().iperf3_tests_aborted == 4);
    let waited = (net.now() - started).total_millis();
    assert!(
        (40_500..41_500).contains(&waited),
        "limit hit after {waited} simulated ms"
    );
    net.wait_closed(ctrl);

    let stats = net.stats();
    assert_eq!(
        (stats.iperf3_tests_completed, stats.protocol_errors),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(normal_test(&mut net, 1000)["streams"][0]["bytes"], 1000);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whatever a client sends on the control connection, in any phase, the server ends
        /// that test (once the client goes away) and runs the next one normally.
        #[test]
        fn random_control_bytes_in_any_phase_leave_the_server_ready(
            phase in 0..3usize,
            garbage in prop::collection::vec(any::<u8>(), 1..48),
        ) {
            let mut net = Net::new(&config());
            let ctrl = net.connect(IPERF3_PORT);
            net.send(ctrl, COOKIE);
            prop_assert_eq!(net.recv_exact(ctrl, 1), [PARAM_EXCHANGE]);
            let mut streams = Vec::new();
            if phase >= 1 {
                net.send(ctrl, &message(&params(1, "")));
                prop_assert_eq!(net.recv_exact(ctrl, 1), [CREATE_STREAMS]);
                streams = connect_streams(&mut net, ctrl, 1);
            }
            if phase == 2 {
                net.send(ctrl, &[TEST_END]);
                prop_assert_eq!(net.recv_exact(ctrl, 1), [EXCHANGE_RESULTS]);
            }
            net.send(ctrl, &garbage);
            for _ in 0..2000 {
                net.step();
            }
            for h in streams.into_iter().chain([ctrl]) {
                net.sock(h).abort();
            }
            // Promptly: the server's own time limit must not be what ends it.
            net.run_until_within("the test to end", 1000, |n| {
                let s = n.stats();
                s.iperf3_tests_aborted + s.iperf3_tests_completed == 1
            });
            prop_assert_eq!(normal_test(&mut net, 5000)["streams"][0]["bytes"].as_u64(), Some(5000));
        }
    }
}

#[test]
fn echo_returns_1_mib_byte_exact_on_4_concurrent_connections_and_listens_again() {
    let mut net = Net::new(&config());
    for round in 0..2u8 {
        let conns: Vec<SocketHandle> = (0..4).map(|_| net.connect(ECHO_PORT)).collect();
        // A fifth is refused: every echo socket is busy.
        let fifth = net.connect_nowait(ECHO_PORT);
        net.wait_closed(fifth);
        let data: Vec<Vec<u8>> = (0..4u8)
            .map(|c| {
                (0..256 * 1024u32)
                    .map(|i| (i.wrapping_mul(31) as u8) ^ c ^ round)
                    .collect()
            })
            .collect();
        for (c, d) in conns.iter().zip(&data) {
            net.send(*c, d);
            net.sock(*c).close();
        }
        for (c, d) in conns.iter().zip(&data) {
            let mut back = Vec::new();
            net.recv_to_end(*c, |chunk| back.extend_from_slice(chunk));
            assert!(back == *d, "round {round}: echo differs");
            net.wait_closed(*c);
        }
    }
    let stats = net.stats();
    assert_eq!(stats.echo.connections, 8);
    assert_eq!(stats.echo.bytes_in, 2 << 20);
    assert_eq!(stats.echo.bytes_out, 2 << 20);
}

#[test]
fn discard_counts_bytes_and_sends_nothing() {
    let mut net = Net::new(&config());
    let c = net.connect(DISCARD_PORT);
    net.send(c, &vec![0x5A; 1 << 20]);
    net.sock(c).close();
    let back = net.recv_to_end(c, |_| {});
    assert_eq!(back, 0);
    net.wait_closed(c);
    let stats = net.stats();
    assert_eq!(stats.discard.bytes_in, 1 << 20);
    assert_eq!(stats.discard.bytes_out, 0);
    assert_eq!(stats.discard.connections, 1);
}
