use super::*;
use crate::sys::poll_readable;
use crate::xs::fake::FakeXenstored;

/// Only an upper bound on waiting for an event already sent; never reached when all is well.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(30));

fn connect(d: &FakeXenstored, domid: DomId) -> XenXs {
    XenXs::connect(d.path(), domid).expect("connect to the fake xenstored")
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

fn readable(fd: BorrowedFd<'_>) -> bool {
    poll_readable(fd, Some(Duration::ZERO)).unwrap()
}

/// Reads and discards events until none is left.
fn drain(xs: &XenXs) {
    while xs.read_watch(Some(Duration::ZERO)).unwrap().is_some() {}
}

#[test]
fn nodes_round_trip_through_the_trait() {
    let d = FakeXenstored::start();
    let xs = connect(&d, 0);
    let be = "/local/domain/0/backend/vif/1/0";
    xs.write(&format!("{be}/state"), "2").unwrap();
    xs.write(&format!("{be}/mac"), "00:16:3e:00:00:01").unwrap();
    xs.mkdir(&format!("{be}/queues")).unwrap();
    assert_eq!(xs.read(&format!("{be}/state")).unwrap(), "2");
    assert_eq!(xs.directory(be).unwrap(), ["mac", "queues", "state"]);
    xs.set_permissions(
        be,
        &[
            XsPerm {
                domid: 0,
                perm: XsPermLevel::None,
            },
            XsPerm {
                domid: 1,
                perm: XsPermLevel::Read,
            },
        ],
    )
    .unwrap();
    let perms = d.state().tree[be].perms.clone();
    assert_eq!(
        perms,
        [
            Perm {
                domid: 0,
                access: Access::None
            },
            Perm {
                domid: 1,
                access: Access::Read
            }
        ]
    );
    xs.rm(be).unwrap();
    assert_eq!(d.state().value(&format!("{be}/state")), None);
}

#[test]
fn xenstore_errors_become_the_seams_errors() {
    let d = FakeXenstored::start();
    d.state().script.deny_prefix = Some("/local/domain/0".into());
    let xs = connect(&d, 3);
    assert_eq!(
        xs.read("/local/domain/3/nothing"),
        Err(Error::XsNoEntry("/local/domain/3/nothing".into()))
    );
    assert_eq!(
        xs.directory("/nowhere"),
        Err(Error::XsNoEntry("/nowhere".into()))
    );
    assert_eq!(
        xs.write("/local/domain/0/x", "1"),
        Err(Error::XsPermissionDenied {
            domid: 3,
            path: "/local/domain/0/x".into(),
            access: "write"
        })
    );
    assert_eq!(
        xs.read("/local/domain/0/x"),
        Err(Error::XsPermissionDenied {
            domid: 3,
            path: "/local/domain/0/x".into(),
            access: "read"
        })
    );
    assert_eq!(
        xs.unwatch("/vm", "never-set"),
        Err(Error::XsNoWatch {
            path: "/vm".into(),
            token: "never-set".into()
        })
    );
    assert_eq!(xs.read(""), Err(Error::XsInvalidPath(String::new())));
    assert_eq!(
        xs.write("/a\0b", "1"),
        Err(Error::XsInvalidPath("/a\0b".into()))
    );
    // A refused request was never sent: the connection still works.
    xs.write("/local/domain/3/ok", "1").unwrap();
}

#[test]
fn read_watch_honours_zero_finite_and_unlimited_timeouts() {
    let d = FakeXenstored::start();
    let xs = connect(&d, 0);
    let other = connect(&d, 0);
    xs.watch("/local/domain/1/device", "fe").unwrap();
    assert_eq!(
        xs.read_watch(None).unwrap(),
        Some(ev("/local/domain/1/device", "fe")),
        "a new watch fires once at once"
    );
    assert_eq!(xs.read_watch(Some(Duration::ZERO)).unwrap(), None);
    assert_eq!(xs.read_watch(Some(Duration::from_millis(5))).unwrap(), None);
    other
        .write("/local/domain/1/device/vif/0/state", "1")
        .unwrap();
    assert_eq!(
        xs.read_watch(None).unwrap(),
        Some(ev("/local/domain/1/device/vif/0/state", "fe"))
    );
    xs.unwatch("/local/domain/1/device", "fe").unwrap();
}

#[test]
fn as_fd_is_readable_while_events_wait_in_the_client() {
    let d = FakeXenstored::start();
    // A change on this connection's own watch is announced before the write's reply: the
    // client queues the event while it waits for the reply, and the socket is left empty.
    d.state().script.events_before_reply = true;
    let xs = connect(&d, 0);
    let fd = xs.as_fd().unwrap();
    xs.watch("/a", "one").unwrap();
    xs.watch("/a", "two").unwrap();
    // Each new watch fires once, after its reply.
    assert!(poll_readable(fd, PATIENCE).unwrap());
    assert_eq!(xs.read_watch(PATIENCE).unwrap(), Some(ev("/a", "one")));
    assert_eq!(xs.read_watch(PATIENCE).unwrap(), Some(ev("/a", "two")));
    assert!(!readable(fd), "nothing waiting anywhere");

    xs.write("/a/x", "1").unwrap();
    let socket_readable = readable(xs.lock().client.as_fd());
    assert!(
        !socket_readable,
        "both events were read along with the reply"
    );
    assert!(xs.lock().client.has_buffered_events());
    assert!(readable(fd), "buffered events make as_fd readable");
    let mut got = vec![xs.read_watch(Some(Duration::ZERO)).unwrap().unwrap()];
    assert!(readable(fd), "one event still buffered");
    got.push(xs.read_watch(Some(Duration::ZERO)).unwrap().unwrap());
    got.sort_by(|a, b| a.token.cmp(&b.token));
    assert_eq!(got, [ev("/a/x", "one"), ev("/a/x", "two")]);
    assert!(!readable(fd), "all collected");
}

#[test]
fn as_fd_is_readable_when_events_arrive_on_the_socket() {
    let d = FakeXenstored::start();
    let xs = connect(&d, 0);
    let other = connect(&d, 0);
    xs.watch("/b", "t").unwrap();
    assert_eq!(xs.read_watch(PATIENCE).unwrap(), Some(ev("/b", "t")));
    drain(&xs);
    let fd = xs.as_fd().unwrap();
    assert!(!readable(fd));
    other.write("/b/y", "1").unwrap();
    assert!(
        poll_readable(fd, PATIENCE).unwrap(),
        "the socket wakes the poller"
    );
    assert_eq!(xs.read_watch(PATIENCE).unwrap(), Some(ev("/b/y", "t")));
    assert!(!readable(fd));
}

#[test]
fn a_connection_is_a_seam_xenstore() {
    fn seam<S: XenStore + Sync>(_: &S) {}
    let d = FakeXenstored::start();
    seam(&connect(&d, 0));
}
