//! `io/xenbus.h`: the states both ends of a split device publish in their `state` node, and the
//! xenstore layout the toolstack gives a vif.

use crate::types::DomId;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XenbusState {
    /// 0.
    Unknown = 0,
    /// 1: the device is being set up.
    Initialising = 1,
    /// 2: the backend wrote its features and waits for the frontend.
    InitWait = 2,
    /// 3: the frontend's keys are written (unused by netfront, which goes straight to Connected).
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: tearing down.
    Closing = 5,
    /// 6: torn down.
    Closed = 6,
    /// 7.
    Reconfiguring = 7,
    /// 8.
    Reconfigured = 8,
}

impl XenbusState {
    /// Parses a `state` node's value.
    pub fn parse(s: &str) -> Option<Self> {
        use XenbusState::*;
        Some(match s.trim().parse::<u32>().ok()? {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// The node value.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

/// Paths of a vif device pair, as the toolstack (libxl) lays them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPaths {
    /// `/local/domain/<backend>/backend/vif/<frontend>/<devid>`.
    pub backend: String,
    /// `/local/domain/<frontend>/device/vif/<devid>`.
    pub frontend: String,
}

impl VifPaths {
    /// The directories of `frontend`'s vif `devid`, served by `backend`.
    pub fn new(frontend: DomId, backend: DomId, devid: u32) -> Self {
        Self {
            backend: format!("/local/domain/{backend}/backend/vif/{frontend}/{devid}"),
            frontend: format!("/local/domain/{frontend}/device/vif/{devid}"),
        }
    }

    /// The `(path, value)` nodes the toolstack writes to add this vif (`frontend`'s vif `devid`,
    /// served by `backend`, with MAC `mac`), in write order: on the backend side `frontend`,
    /// `frontend-id`, `handle`, `mac`, `online` = 1 and `state` = 1 (Initialising); then on the
    /// frontend side `backend`, `backend-id`, `handle`, `mac` and `state` = 1.
    pub fn toolstack_nodes(
        &self,
        frontend: DomId,
        backend: DomId,
        devid: u32,
        mac: &str,
    ) -> [(String, String); 11] {
        let (be, fe) = (&self.backend, &self.frontend);
        let state = XenbusState::Initialising.as_str();
        [
            (format!("{be}/frontend"), fe.clone()),
            (format!("{be}/frontend-id"), frontend.to_string()),
            (format!("{be}/handle"), devid.to_string()),
            (format!("{be}/mac"), mac.to_string()),
            (format!("{be}/online"), "1".into()),
            (format!("{be}/state"), state.into()),
            (format!("{fe}/backend"), be.clone()),
            (format!("{fe}/backend-id"), backend.to_string()),
            (format!("{fe}/handle"), devid.to_string()),
            (format!("{fe}/mac"), mac.to_string()),
            (format!("{fe}/state"), state.into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vif_nodes_cross_link_both_ends() {
        let p = VifPaths::new(7, 2, 1);
        assert_eq!(p.backend, "/local/domain/2/backend/vif/7/1");
        assert_eq!(p.frontend, "/local/domain/7/device/vif/1");
        let nodes = p.toolstack_nodes(7, 2, 1, "00:16:3e:00:00:07");
        let get = |k: &str| nodes.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("/local/domain/2/backend/vif/7/1/frontend"),
            Some(p.frontend.as_str())
        );
        assert_eq!(
            get("/local/domain/2/backend/vif/7/1/frontend-id"),
            Some("7")
        );
        assert_eq!(
            get("/local/domain/7/device/vif/1/backend"),
            Some(p.backend.as_str())
        );
        assert_eq!(get("/local/domain/7/device/vif/1/backend-id"), Some("2"));
        assert_eq!(
            get("/local/domain/7/device/vif/1/mac"),
            Some("00:16:3e:00:00:07")
        );
        assert_eq!(get("/local/domain/2/backend/vif/7/1/state"), Some("1"));
        assert_eq!(get("/local/domain/7/device/vif/1/state"), Some("1"));
        assert_eq!(
            get("/local/domain/7/device/vif/1/online"),
            None,
            "online is the backend's"
        );
    }
}
