//! The backend's control plane over xenstore (Linux's `xenbus.c`).
//!
//! The toolstack creates `/local/domain/<be>/backend/vif/<fe>/<devid>` (see
//! `Hypervisor::add_vif`). The backend watches that tree; for each new device in state
//! Initialising it writes its features and goes to InitWait, then watches the frontend's state.
//! When the frontend reaches Connected (having written its ring refs and event channel), the
//! backend reads the keys, maps the rings, binds the channel and goes to Connected. Frontend
//! Closing/Closed tears the vif down and the backend goes Closed. A frontend whose keys are
//! missing or ask for something the backend does not do gets a clear `error` node and Closed.

use hypervisor::{DomId, GrantRef, Port, XsConnection};

use crate::vif::{FrontendKeys, RxMode, VifId};

pub use hypervisor::XenbusState;

/// The features this backend offers, written to its directory before InitWait.
pub fn features(allow_flip: bool) -> [(&'static str, &'static str); 11] {
    [
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "0"),
        ("feature-gso-tcpv6", "0"),
        ("feature-ipv6-csum-offload", "0"),
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", if allow_flip { "1" } else { "0" }),
        ("feature-rx-notify", "1"),
        ("feature-split-event-channels", "0"),
        ("multi-queue-max-queues", "1"),
        ("feature-ctrl-ring", "0"),
        ("feature-multicast-control", "0"),
    ]
}

/// One vif device as the control plane tracks it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Which vif.
    pub id: VifId,
    /// Its backend directory.
    pub be_path: String,
    /// The frontend's directory (from the backend dir's `frontend` node).
    pub fe_path: String,
    /// The state this backend last wrote.
    pub state: XenbusState,
}

/// Parses `<base>/<fe>/<devid>[/...]` into (fe, devid).
pub fn parse_device_path(base: &str, path: &str) -> Option<(DomId, u32)> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    let mut it = rest.split('/');
    let fe = it.next()?.parse().ok()?;
    let devid = it.next()?.parse().ok()?;
    Some((fe, devid))
}

/// Reads and validates the frontend's keys (`connect_data_rings`, `read_xenbus_vif_flags`).
/// The error string is what the backend writes to its `error` node and logs.
pub fn read_frontend_keys(
    xs: &XsConnection,
    fe_path: &str,
    allow_flip: bool,
) -> Result<FrontendKeys, String> {
    let read_u32 = |key: &str| -> Result<Option<u32>, String> {
        match xs.read(&format!("{fe_path}/{key}")) {
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{key} is {v:?}, not a number")),
            Err(_) => Ok(None),
        }
    };
    if let Some(n) = read_u32("multi-queue-num-queues")?
        && n > 1
    {
        return Err(format!(
            "multi-queue-num-queues {n} is above this backend's maximum of 1"
        ));
    }
    if read_u32("event-channel-tx")?.is_some() && read_u32("event-channel")?.is_none() {
        return Err("split event channels requested but feature-split-event-channels is 0".into());
    }
    let tx = read_u32("tx-ring-ref")?.ok_or("tx-ring-ref missing")?;
    let rx = read_u32("rx-ring-ref")?.ok_or("rx-ring-ref missing")?;
    let evtchn = read_u32("event-channel")?.ok_or("event-channel missing")?;
    let mode = match read_u32("request-rx-copy")?.unwrap_or(0) {
        0 if allow_flip => RxMode::Flip,
        0 => {
            return Err(
                "frontend asks for page flipping (request-rx-copy=0) but feature-rx-flip is 0"
                    .into(),
            );
        }
        _ => RxMode::Copy,
    };
    if read_u32("feature-rx-notify")?.unwrap_or(0) == 0 {
        return Err("feature-rx-notify is mandatory".into());
    }
    Ok(FrontendKeys {
        tx_ring_ref: GrantRef(tx),
        rx_ring_ref: GrantRef(rx),
        event_channel: Port(evtchn),
        mode,
    })
}
