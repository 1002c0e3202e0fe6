use super::*;
use crate::xs::fake::FakeXenstored;
use crate::xs::wire::Access;

/// Long enough never to fire on a loaded machine; only an upper bound on waiting for an event
/// that has already been sent.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(30));

fn client(d: &FakeXenstored) -> XsClient {
    XsClient::connect(d.path()).expect("connect to the fake xenstored")
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

#[test]
fn read_write_directory_rm_round_trip() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    let be = "/local/domain/0/backend/vif/1/0";
    c.write(&format!("{be}/state"), b"1").unwrap();
    c.write(&format!("{be}/mac"), b"00:16:3e:00:00:01").unwrap();
    assert_eq!(c.read(&format!("{be}/state")).unwrap(), b"1");
    assert_eq!(
        c.read_string(&format!("{be}/mac")).unwrap(),
        "00:16:3e:00:00:01"
    );
    assert_eq!(c.directory(be).unwrap(), ["mac", "state"]);
    assert_eq!(c.directory("/local/domain/0/backend/vif").unwrap(), ["1"]);

    c.rm("/local/domain/0/backend/vif/1").unwrap();
    assert!(c.read(&format!("{be}/state")).unwrap_err().is_not_found());
    assert_eq!(
        c.directory("/local/domain/0/backend/vif").unwrap(),
        Vec::<String>::new()
    );
    // rm of a missing node under an existing parent is not an error.
    c.rm("/local/domain/0/backend/vif/9").unwrap();
    assert_eq!(
        d.state().value("/local/domain/0/backend/vif/1/0/state"),
        None
    );
}

#[test]
fn mkdir_and_permissions_round_trip() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    c.mkdir("/vm/1").unwrap();
    assert_eq!(c.read("/vm/1").unwrap(), b"");
    let perms = [
        Perm {
            domid: 0,
            access: Access::Both,
        },
        Perm {
            domid: 5,
            access: Access::Read,
        },
    ];
    c.set_permissions("/vm/1", &perms).unwrap();
    assert_eq!(c.get_permissions("/vm/1").unwrap(), perms);
    // mkdir of an existing node keeps its value.
    c.write("/vm/1", b"keep").unwrap();
    c.mkdir("/vm/1").unwrap();
    assert_eq!(c.read("/vm/1").unwrap(), b"keep");
}

#[test]
fn watch_events_are_returned_by_read_watch() {
    let d = FakeXenstored::start();
    let mut a = client(&d);
    let mut b = client(&d);
    a.watch("/vm", "tok").unwrap();
    assert_eq!(
        a.read_watch(PATIENCE).unwrap(),
        Some(ev("/vm", "tok")),
        "first firing"
    );

    b.write("/vm/x", b"1").unwrap();
    assert_eq!(a.read_watch(PATIENCE).unwrap(), Some(ev("/vm/x", "tok")));
    b.write("/elsewhere", b"1").unwrap();

    a.unwatch("/vm", "tok").unwrap();
    b.write("/vm/y", b"1").unwrap();
    // b's write was answered after any event it fired was sent to a: nothing is in flight.
    assert_eq!(a.read_watch(Some(Duration::ZERO)).unwrap(), None);
    assert!(a.unwatch("/vm", "tok").unwrap_err().xs_errno() == Some(&XsErrno::Enoent));
}

#[test]
fn a_watch_event_before_a_reply_is_queued_not_taken_for_the_reply() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    c.watch("/be", "t").unwrap();
    d.state().script.events_before_reply = true;
    c.write("/be/state", b"2").unwrap();
    assert!(c.has_buffered_events());
    // A READ whose reply also trails an event from another writer.
    let mut other = client(&d);
    other.write("/be/feature-sg", b"1").unwrap();
    assert_eq!(c.read("/be/state").unwrap(), b"2");

    assert_eq!(
        c.read_watch(Some(Duration::ZERO)).unwrap(),
        Some(ev("/be", "t"))
    );
    assert_eq!(
        c.read_watch(Some(Duration::ZERO)).unwrap(),
        Some(ev("/be/state", "t"))
    );
    assert_eq!(
        c.read_watch(Some(Duration::ZERO)).unwrap(),
        Some(ev("/be/feature-sg", "t"))
    );
    assert_eq!(c.read_watch(Some(Duration::ZERO)).unwrap(), None);
    assert!(!c.has_buffered_events());
}

#[test]
fn replies_dribbled_one_byte_per_write_are_reassembled() {
    let d = FakeXenstored::start();
    d.state().script.dribble = true;
    let mut c = client(&d);
    c.write("/a/b", b"value").unwrap();
    assert_eq!(c.read("/a/b").unwrap(), b"value");
    assert_eq!(c.directory("/a").unwrap(), ["b"]);
    c.watch("/a", "w").unwrap();
    assert_eq!(c.read_watch(PATIENCE).unwrap(), Some(ev("/a", "w")));
}

#[test]
fn a_transaction_that_gets_eagain_once_is_retried_and_succeeds() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    c.write("/counter", b"41").unwrap();
    d.state().script.eagain_commits = 1;
    let mut runs = 0;
    let v = c
        .transaction(|tx| {
            runs += 1;
            assert_ne!(tx.id(), 0);
            let n: u32 = tx.read_string("/counter")?.parse().expect("a number");
            tx.write("/counter", (n + 1).to_string().as_bytes())?;
            Ok(n + 1)
        })
        .unwrap();
    assert_eq!((v, runs), (42, 2));
    assert_eq!(
        c.read("/counter").unwrap(),
        b"42",
        "applied once, not twice"
    );
    let st = d.state();
    assert_eq!(st.count(MsgType::TransactionStart), 2);
    assert_eq!(st.count(MsgType::TransactionEnd), 2);
    // Both runs of the body read and wrote inside a transaction (the two outside did not).
    let in_tx = |ty| st.log.iter().filter(|(t, tx)| *t == ty && *tx != 0).count();
    assert_eq!((in_tx(MsgType::Read), in_tx(MsgType::Write)), (2, 2));
}

#[test]
fn a_transaction_that_keeps_conflicting_gives_up() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    d.state().script.eagain_commits = u32::MAX;
    let err = c.transaction(|tx| tx.write("/x", b"1")).unwrap_err();
    assert_eq!(
        err,
        Error::TransactionConflict {
            attempts: MAX_TX_ATTEMPTS
        }
    );
    assert!(err.to_string().contains("retry later"));
    assert_eq!(
        d.state().count(MsgType::TransactionStart),
        MAX_TX_ATTEMPTS as usize
    );
    assert!(
        c.read("/x").unwrap_err().is_not_found(),
        "nothing committed"
    );
}

#[test]
fn a_failing_transaction_body_aborts_and_returns_its_error() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    let err = c
        .transaction(|tx| {
            tx.write("/t/a", b"1")?;
            tx.read("/missing")
        })
        .unwrap_err();
    assert!(err.is_not_found());
    assert!(
        c.read("/t/a").unwrap_err().is_not_found(),
        "aborted, not committed"
    );
    assert_eq!(d.state().count(MsgType::TransactionStart), 1);
}

#[test]
fn error_replies_become_typed_errors() {
    let d = FakeXenstored::start();
    d.state().script.deny_prefix = Some("/secret".into());
    let mut c = client(&d);
    let err = c.read("/nope").unwrap_err();
    assert_eq!(
        err,
        Error::Xenstore {
            op: MsgType::Read,
            path: "/nope".into(),
            errno: XsErrno::Enoent
        }
    );
    assert!(err.to_string().contains("READ /nope: ENOENT"), "{err}");
    let err = c.write("/secret/key", b"x").unwrap_err();
    assert_eq!(err.xs_errno(), Some(&XsErrno::Eacces));
    assert!(err.to_string().contains("run as root in dom0"), "{err}");
    // The connection is still good after error replies.
    c.write("/fine", b"1").unwrap();
}

#[test]
fn an_oversize_request_is_refused_before_sending_and_the_connection_survives() {
    let d = FakeXenstored::start();
    let mut c = client(&d);
    let err = c.write("/big", &vec![b'x'; PAYLOAD_MAX]).unwrap_err();
    assert!(
        matches!(err, Error::Wire(WireError::PayloadTooLong { .. })),
        "{err:?}"
    );
    assert!(matches!(c.read(""), Err(Error::Wire(WireError::EmptyPath))));
    c.write("/small", b"1").unwrap();
    assert_eq!(
        d.state().count(MsgType::Write),
        1,
        "the refused write never reached the daemon"
    );
}

#[test]
fn a_hang_up_is_reported_as_disconnected_and_sticks() {
    let d = FakeXenstored::start();
    d.state().script.hang_up_on_read = Some("/bye".into());
    let mut c = client(&d);
    assert_eq!(c.read("/bye").unwrap_err(), Error::Disconnected);
    assert_eq!(c.write("/x", b"1").unwrap_err(), Error::Disconnected);
    assert_eq!(
        c.read_watch(Some(Duration::ZERO)).unwrap_err(),
        Error::Disconnected
    );
}

#[test]
fn open_looks_at_the_env_override_else_the_sockets_then_xenbus() {
    assert_eq!(
        candidates(Some(OsStr::new("/tmp/xs.sock"))),
        [PathBuf::from("/tmp/xs.sock")]
    );
    assert_eq!(
        candidates(None),
        [
            "/var/run/xenstored/socket",
            "/run/xenstored/socket",
            "/dev/xen/xenbus"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(
        candidates(Some(OsStr::new(""))).len(),
        3,
        "an empty override is no override"
    );
}

#[test]
fn connecting_to_nothing_says_what_to_do() {
    let err = XsClient::connect("/nonexistent/xenstored/socket").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no xenstore at /nonexistent/xenstored/socket"),
        "{msg}"
    );
    assert!(msg.contains("is xenstored running?"), "{msg}");
}
