//! `netbackd ctl`: asking a running netbackd over its control socket, `<run dir>/ctl.sock`
//! (mode 0600 in a 0700 directory: root only).
//!
//! One request per connection, one JSON line each way: `{"cmd":"list"}`, `{"cmd":"stats"}`,
//! `{"cmd":"dump","vif":"vif1.0"}`, `{"cmd":"close","vif":"vif1.0"}`; the answer is
//! `{"ok":...}` or `{"error":"..."}`.
//!
//! The daemon's side never lets the socket hold its data path up: a thread of its own
//! ([`spawn`]) accepts, reads the request (with a deadline) and writes the answer; only the
//! request itself crosses to the backend's thread, through a channel the backend's loop looks
//! at once per pass and answers a bounded number of ([`CtlQueue::serve`]), after a byte on its
//! wake descriptor ends its wait.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::time::Duration;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::cli::{DEFAULT_RUN_DIR, parse_vif};
use crate::daemon::Waker;

/// The socket's name in the run directory.
pub const SOCKET_NAME: &str = "ctl.sock";
/// Requests the backend answers per pass at most.
pub const PER_PASS: usize = 4;
/// How long the control thread waits for a client's request, or to write an answer.
const IO_DEADLINE: Duration = Duration::from_secs(2);
/// How long it waits for the backend's answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// The longest request line read.
const MAX_REQUEST: u64 = 4096;

/// `netbackd ctl`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// The running netbackd's --run-dir.
    #[arg(long, default_value = DEFAULT_RUN_DIR, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// The control socket (default: ctl.sock in --run-dir).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// What to ask.
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// What `netbackd ctl` asks.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCmd {
    /// Every device: vif, domid, devid, state, mode, switch, MAC, IPs, queues, rate, counters.
    List {
        /// The answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every counter (as --stats-json writes them).
    Stats {
        /// The answer as JSON (the text form is what SIGUSR1 prints).
        #[arg(long)]
        json: bool,
    },
    /// A vif's rings (shared and private indices) and pending work, as Linux's debugfs io_ring.
    Dump {
        /// vif<domid>.<devid>
        vif: String,
        /// The answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Close a device as the toolstack's detach does (Closing, then Closed): its guest sees the
    /// backend go; it connects again if its frontend starts over.
    Close {
        /// vif<domid>.<devid>
        vif: String,
    },
}

/// A request on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Every device.
    List,
    /// Every counter.
    Stats,
    /// A vif's rings.
    Dump {
        /// `vif<domid>.<devid>`.
        vif: String,
    },
    /// Close a device.
    Close {
        /// `vif<domid>.<devid>`.
        vif: String,
    },
}

/// An answer on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// What was asked for.
    Ok(serde_json::Value),
    /// Why not, and what to do.
    Error(String),
}

/// A request waiting for the backend, with where its answer goes.
#[derive(Debug)]
pub struct Pending {
    /// The request.
    pub req: Request,
    reply: SyncSender<Reply>,
}

/// The backend's end: requests the control thread has read.
#[derive(Debug)]
pub struct CtlQueue {
    rx: Receiver<Pending>,
}

impl CtlQueue {
    /// Answers at most [`PER_PASS`] waiting requests with `answer`; never blocks.
    pub fn serve(&self, mut answer: impl FnMut(&Request) -> Reply) {
        for _ in 0..PER_PASS {
            match self.rx.try_recv() {
                Ok(p) => {
                    // A client that went away meanwhile just misses its answer.
                    let _ = p.reply.try_send(answer(&p.req));
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// Why the control socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Another netbackd answers on it.
    #[error(
        "another netbackd answers on {}: give this one another --run-dir",
        path.display()
    )]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The run directory or the socket could not be made.
    #[error(
        "cannot {op} {}: {source}; check --run-dir (default /run/netbackd) is a directory root \
         may write",
        path.display()
    )]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket in `run_dir` (made 0700 if missing), mode 0600. A socket left by
/// a netbackd that died is replaced; one a live netbackd answers on is not.
pub fn bind(run_dir: &Path) -> Result<(UnixListener, PathBuf), CtlError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| CtlError::Io { op, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(io("create the run directory", run_dir))?;
    let path = run_dir.join(SOCKET_NAME);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(CtlError::InUse { path });
        }
        std::fs::remove_file(&path).map_err(io("remove the stale socket", &path))?;
    }
    let listener = UnixListener::bind(&path).map_err(io("bind the control socket", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict the control socket", &path))?;
    Ok((listener, path))
}

/// The control thread's end of the channel to the backend.
#[derive(Debug)]
pub struct CtlFeed(Sender<Pending>);

/// The channel between the control thread and the backend's loop.
pub fn channel() -> (CtlQueue, CtlFeed) {
    let (tx, rx) = std::sync::mpsc::channel();
    (CtlQueue { rx }, CtlFeed(tx))
}

/// Serves `listener` on a thread of its own, handing each request through `feed` to the
/// backend's [`CtlQueue`] (and waking it with `waker`).
pub fn spawn(listener: UnixListener, feed: CtlFeed, waker: Waker) -> std::io::Result<()> {
    let tx = feed.0;
    std::thread::Builder::new()
        .name("netbackd-ctl".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => handle(stream, &tx, &waker),
                    Err(e) => tracing::warn!(error = %e, "ctl: accept failed"),
                }
            }
        })?;
    Ok(())
}

fn handle(stream: UnixStream, tx: &Sender<Pending>, waker: &Waker) {
    let _ = stream.set_read_timeout(Some(IO_DEADLINE));
    let _ = stream.set_write_timeout(Some(IO_DEADLINE));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut line = String::new();
    let reply =
        match BufReader::new(std::io::Read::take(read_half, MAX_REQUEST)).read_line(&mut line) {
            Err(e) => Reply::Error(format!("cannot read the request: {e}")),
            Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
                Err(e) => Reply::Error(format!(
                    "not a request ({e}): send one line such as {{\"cmd\":\"list\"}}"
                )),
                Ok(req) => {
                    tracing::debug!(request = ?req, "ctl request");
                    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
                    if tx
                        .send(Pending {
                            req,
                            reply: reply_tx,
                        })
                        .is_err()
                    {
                        Reply::Error("netbackd is stopping".into())
                    } else {
                        waker.wake();
                        reply_rx.recv_timeout(ANSWER_DEADLINE).unwrap_or_else(|_| {
                            Reply::Error(
                                "the backend did not answer within 5 s (its data path may be \
                             wedged: see its log)"
                                    .into(),
                            )
                        })
                    }
                }
            },
        };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let mut stream = stream;
    let _ = stream.write_all(&out);
}

/// Sends one request to the netbackd at `socket` and returns its answer.
pub fn request(socket: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach netbackd at {}: {e} (is it running? as root? with this --run-dir?)",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(ANSWER_DEADLINE + IO_DEADLINE));
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from netbackd: {e}"))?;
    match serde_json::from_str::<Reply>(&answer) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(e)) => Err(e),
        Err(e) => Err(format!(
            "netbackd's answer is not one this ctl reads ({e}): {answer}"
        )),
    }
}

/// Checks a vif name as `ctl dump` and `ctl close` take it.
pub fn check_vif(vif: &str) -> Result<(), String> {
    parse_vif(vif)
        .map(|_| ())
        .ok_or_else(|| format!("{vif:?} is not a vif: write vif<domid>.<devid>, e.g. vif1.0"))
}

/// Runs `netbackd ctl ...`: prints the answer; `Err` is the message for stderr.
pub fn run(args: &CtlArgs) -> Result<(), String> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.run_dir.join(SOCKET_NAME));
    let (req, json) = match &args.cmd {
        CtlCmd::List { json } => (Request::List, *json),
        CtlCmd::Stats { json } => (Request::Stats, *json),
        CtlCmd::Dump { vif, json } => {
            check_vif(vif)?;
            (Request::Dump { vif: vif.clone() }, *json)
        }
        CtlCmd::Close { vif } => {
            check_vif(vif)?;
            (Request::Close { vif: vif.clone() }, false)
        }
    };
    let v = request(&socket, &req)?;
    if json {
        let v = if req == Request::Stats {
            &v["report"]
        } else {
            &v
        };
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return Ok(());
    }
    print!("{}", crate::ctl_text::render(&req, &v));
    Ok(())
}
