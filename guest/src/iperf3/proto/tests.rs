use super::*;

/// The parameters iperf3 3.12 sends for `iperf3 -c ADDR -t 2 -R`, plus keys this server
/// does not know (a newer client's), which must be ignored.
const PARAMS_312_REVERSE: &str = r#"{"tcp":true,"omit":0,"time":2,"num":0,"blockcount":0,"parallel":1,"reverse":true,"len":131072,"pacing_timer":1000,"client_version":"3.12","future_key":{"nested":[1,2]},"title":"x"}"#;

#[track_caller]
fn frame(bytes: &[u8]) -> Result<(usize, bool), ProtoError> {
    FrameReader::new(MAX_PARAMS_JSON).push(bytes)
}

#[test]
fn state_codes_match_iperf_api_h() {
    let table = [
        (State::TestStart, 1),
        (State::TestRunning, 2),
        (State::TestEnd, 4),
        (State::ParamExchange, 9),
        (State::CreateStreams, 10),
        (State::ServerTerminate, 11),
        (State::ClientTerminate, 12),
        (State::ExchangeResults, 13),
        (State::DisplayResults, 14),
        (State::IperfStart, 15),
        (State::IperfDone, 16),
        (State::AccessDenied, -1),
        (State::ServerError, -2),
    ];
    for (state, code) in table {
        assert_eq!(state.code(), code, "{state:?}");
        assert_eq!(State::from_code(code), Some(state));
        assert_eq!(State::from_byte(state.byte()), Some(state));
    }
    assert_eq!(State::AccessDenied.byte(), 0xFF);
    assert_eq!(State::ServerError.byte(), 0xFE);
    // Defined by iperf3 but never sent, and junk: unknown.
    for code in [0i8, 3, 5, 6, 7, 8, 17, 100, -3, i8::MIN] {
        assert_eq!(State::from_code(code), None, "{code}");
    }
}

#[test]
fn server_error_carries_both_codes_big_endian() {
    let msg = server_error_message(IE_NUMSTREAMS, 0x0102_0304);
    assert_eq!(msg, [0xFE, 0, 0, 0, 6, 1, 2, 3, 4]);
}

#[test]
fn stream_ids_skip_two_like_iperf3() {
    let ids: Vec<i64> = (0..4).map(stream_id).collect();
    assert_eq!(ids, [1, 3, 4, 5]);
}

#[test]
fn params_from_a_stock_client_parse_and_unknown_keys_are_ignored() {
    let p = TestParams::from_json(PARAMS_312_REVERSE.as_bytes()).expect("stock params");
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!((p.omit, p.time, p.num, p.blockcount), (0, 2, 0, 0));
    assert_eq!(p.parallel, 1);
    assert!(p.reverse);
    assert!(!p.bidirectional);
    assert_eq!(p.len, 131072);
    assert_eq!(p.client_version.as_deref(), Some("3.12"));
}

#[test]
fn params_defaults_and_float_numbers() {
    let p = TestParams::from_json(b"{}").expect("empty object");
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!(p.parallel, 1);
    assert!(!p.reverse);
    // cJSON prints values above INT_MAX with %g: still whole numbers.
    let p = TestParams::from_json(br#"{"bandwidth":10000000000,"num":1e10,"udp":true}"#)
        .expect("float-printed numbers");
    assert_eq!(p.bandwidth, 10_000_000_000);
    assert_eq!(p.num, 10_000_000_000);
    assert_eq!(p.protocol, Protocol::Udp);
    let p = TestParams::from_json(br#"{"sctp":true,"bidirectional":true,"parallel":4}"#)
        .expect("sctp bidir");
    assert_eq!(p.protocol, Protocol::Sctp);
    assert!(p.bidirectional);
    assert_eq!(p.parallel, 4);
}

#[test]
fn params_with_impossible_values_are_refused() {
    for (json, field) in [
        (&br#"{"time":-1}"#[..], "time"),
        (br#"{"time":1.5}"#, "time"),
        (br#"{"omit":5000000000}"#, "omit"),
        (br#"{"parallel":0}"#, "parallel"),
        (br#"{"parallel":1e300}"#, "parallel"),
    ] {
        match TestParams::from_json(json) {
            Err(ProtoError::BadParam { field: f, .. }) => assert_eq!(f, field),
            other => panic!(
                "{}: expected BadParam, got {other:?}",
                String::from_utf8_lossy(json)
            ),
        }
    }
    for json in [
        &b"not json"[..],
        b"[1,2,3]",
        br#"{"time":"2"}"#,
        br#"{"reverse":1}"#,
        br#"{"time":2"#,
        b"",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(TestParams::from_json(json), Err(ProtoError::BadJson(_))),
            "{}",
            String::from_utf8_lossy(json)
        );
    }
}

#[test]
fn frame_reader_assembles_a_message_split_anywhere() {
    let msg = encode_message(&serde_json::json!({"time": 2})).expect("encode");
    assert_eq!(&msg[..4], &(msg.len() as u32 - 4).to_be_bytes());
    for split in 0..=msg.len() {
        let mut r = FrameReader::new(MAX_PARAMS_JSON);
        let (a, done_a) = r.push(&msg[..split]).expect("first part");
        assert_eq!(a, split);
        let (b, done_b) = r.push(&msg[split..]).expect("second part");
        assert_eq!(a + b, msg.len());
        assert!(done_a || done_b);
        assert_eq!(r.body(), &msg[4..]);
    }
}

#[test]
fn frame_reader_takes_no_byte_past_its_message() {
    let mut bytes = encode_message(&serde_json::json!({})).expect("encode");
    bytes.push(State::IperfDone.byte());
    let mut r = FrameReader::new(MAX_PARAMS_JSON);
    assert_eq!(r.push(&bytes).expect("push"), (bytes.len() - 1, true));
    r.reset(MAX_RESULTS_JSON);
    assert_eq!(r.push(&[0, 0]).expect("half header"), (2, false));
    assert!(r.body().is_empty());
}

#[test]
fn frame_reader_refuses_empty_and_oversize_lengths() {
    assert!(matches!(
        frame(&[0, 0, 0, 0]),
        Err(ProtoError::EmptyMessage)
    ));
    let over = (MAX_PARAMS_JSON as u32 + 1).to_be_bytes();
    assert!(matches!(
        frame(&over),
        Err(ProtoError::MessageTooLarge { len, max }) if len as usize == MAX_PARAMS_JSON + 1 && max == MAX_PARAMS_JSON
    ));
    assert!(matches!(
        frame(&[0xFF; 4]),
        Err(ProtoError::MessageTooLarge { len: u32::MAX, .. })
    ));
    // Exactly the limit is fine.
    let at = (MAX_PARAMS_JSON as u32).to_be_bytes();
    assert_eq!(frame(&at).expect("at limit"), (4, false));
}

#[test]
fn results_json_has_the_fields_iperf3_get_results_requires() {
    let results = Results {
        cpu_util_total: 0.0,
        cpu_util_user: 0.0,
        cpu_util_system: 0.0,
        sender_has_retransmits: -1,
        streams: vec![StreamResult {
            id: 1,
            bytes: 12345,
            retransmits: -1,
            jitter: 0.0,
            errors: 0,
            packets: 0,
            start_time: 0.0,
            end_time: 2.0,
        }],
    };
    let msg = encode_message(&results).expect("encode");
    let v: serde_json::Value = serde_json::from_slice(&msg[4..]).expect("json");
    for key in [
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
    ] {
        assert!(v[key].is_number(), "{key}");
    }
    let s = &v["streams"][0];
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
        assert!(s[key].is_number(), "stream {key}");
    }
    assert_eq!(s["bytes"], 12345);
    assert_eq!(v["sender_has_retransmits"], -1);
    assert_eq!(Results::from_json(&msg[4..]).expect("round trip"), results);
}

/// What iperf3 3.12 sends as the client of a reverse test: its cJSON prints -1 as 2^64 - 1.
const CLIENT_RESULTS_312_REVERSE: &str = r#"{"cpu_util_total":7.3874151758173969,"cpu_util_user":0.76081415346407977,"cpu_util_system":6.6265018417831874,"sender_has_retransmits":18446744073709551615,"congestion_used":"bbr","streams":[{"id":1,"bytes":23652672,"retransmits":18446744073709551615,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":2.000198}]}"#;

#[test]
fn client_results_from_iperf3_3_12_parse_with_minus_one_printed_unsigned() {
    let r = Results::from_json(CLIENT_RESULTS_312_REVERSE.as_bytes()).expect("3.12 results");
    assert_eq!(r.sender_has_retransmits, -1);
    assert_eq!(r.streams[0].retransmits, -1);
    assert_eq!(r.streams[0].bytes, 23_652_672);
    assert_eq!(r.streams[0].id, 1);
    // Byte counts past INT_MAX that cJSON printed with %g.
    let big = br#"{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1,"bytes":5e9,"retransmits":0,"jitter":0,"errors":0,"packets":0}]}"#;
    assert_eq!(
        Results::from_json(big).expect("5e9 bytes").streams[0].bytes,
        5_000_000_000
    );
}

#[test]
fn client_results_missing_required_fields_are_refused() {
    // What iperf3 3.12 sends as a client (extra keys ignored).
    let ok = br#"{"cpu_util_total":1.5,"cpu_util_user":0.5,"cpu_util_system":1.0,"sender_has_retransmits":1,"congestion_used":"cubic","streams":[{"id":1,"bytes":100,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":2.0001}]}"#;
    let r = Results::from_json(ok).expect("stock client results");
    assert_eq!(r.streams[0].bytes, 100);
    for bad in [
        &br#"{"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[]}"#[..],
        br#"{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0}"#,
        br#"{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1}]}"#,
        br#"{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1,"bytes":-5,"retransmits":0,"jitter":0,"errors":0,"packets":0}]}"#,
    ] {
        assert!(Results::from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn errors_say_what_was_wrong() {
    let e = ProtoError::MessageTooLarge {
        len: 9000,
        max: 8192,
    };
    assert_eq!(
        e.to_string(),
        "iperf3 client announced a 9000-byte JSON message; at most 8192 are accepted"
    );
    assert!(ProtoError::UnexpectedState(0xFD).to_string().contains("-3"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "tcp",
        "udp",
        "sctp",
        "omit",
        "time",
        "num",
        "blockcount",
        "parallel",
        "reverse",
        "bidirectional",
        "len",
        "window",
        "MSS",
        "nodelay",
        "bandwidth",
        "client_version",
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
        "streams",
        "id",
        "bytes",
        "retransmits",
        "jitter",
        "errors",
        "packets",
        "unknown",
    ];

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            Just(serde_json::json!(1e300)),
            Just(serde_json::json!(-0.0)),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                    serde_json::Value::Object(
                        kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_shaped_junk_never_panics_the_parsers(v in value()) {
            let bytes = serde_json::to_vec(&v).expect("serialize");
            if let Ok(p) = TestParams::from_json(&bytes) {
                prop_assert!(p.parallel >= 1);
            }
            let _ = Results::from_json(&bytes);
        }

        #[test]
        fn raw_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = TestParams::from_json(&bytes);
            let _ = Results::from_json(&bytes);
        }

        #[test]
        fn frame_reader_never_takes_more_than_its_message(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        ) {
            let mut r = FrameReader::new(64);
            for chunk in &chunks {
                match r.push(chunk) {
                    Ok((used, done)) => {
                        prop_assert!(used <= chunk.len());
                        prop_assert!(r.body().len() <= 64);
                        if done {
                            let len = r.body().len();
                            prop_assert!(len > 0);
                            break;
                        }
                        prop_assert_eq!(used, chunk.len());
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
