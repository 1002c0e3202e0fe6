//! The ring's one error type: a peer that broke the protocol.

/// A shared-ring protocol violation by the peer. Hostile or buggy peers produce these; the caller
/// decides what happens to the connection (netback disables the vif, as Linux does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// `REQUEST_PROD_OVERFLOW`: the frontend's `req_prod` claims more outstanding requests than the
    /// ring holds (`req_prod - rsp_prod_pvt > size`), or moved back behind requests the backend
    /// already consumed (`req_prod - req_cons > size`).
    #[error(
        "frontend request producer overflow: req_prod {req_prod} is {} slots past rsp_prod_pvt \
         {rsp_prod_pvt} on a {size}-slot ring; the frontend is buggy or hostile, disconnect it",
        req_prod.wrapping_sub(*rsp_prod_pvt)
    )]
    RequestOverflow {
        /// The `req_prod` read from the shared page.
        req_prod: u32,
        /// The backend's private response producer.
        rsp_prod_pvt: u32,
        /// Ring size.
        size: u32,
    },
    /// `RESPONSE_PROD_OVERFLOW`: the backend's `rsp_prod` claims responses to requests the
    /// frontend never pushed (`rsp_prod - rsp_cons > req_prod - rsp_cons` with the frontend's
    /// last pushed `req_prod`, which includes `> size`).
    #[error(
        "backend response producer overflow: rsp_prod {rsp_prod} is past the {} outstanding \
         requests (rsp_cons {rsp_cons}, req_prod {req_prod}); the backend is buggy or hostile, \
         disconnect it",
        req_prod.wrapping_sub(*rsp_cons)
    )]
    ResponseOverflow {
        /// The `rsp_prod` read from the shared page.
        rsp_prod: u32,
        /// The frontend's private response consumer.
        rsp_cons: u32,
        /// The frontend's last pushed request producer.
        req_prod: u32,
    },
}
