//! Fuzz targets for splitnet: everything a guest or xenstored controls.
//!
//! Each module holds one target's `run(data)`, called by the libFuzzer binary of the same name
//! in `fuzz_targets/`, and checks invariants, not only the absence of panics. The input is
//! decoded by [`Input`] (a cursor that reads zeros once the bytes run out, so every input is a
//! valid program), and [`Enc`] writes the same encoding for the seed corpora ([`seeds`]).
//!
//! The targets that drive netback ([`netback_tx`], [`netback_rx`], [`netback_ctrl`],
//! [`xenbus_keys`]) share a
//! world built on the embedded hypervisor with `testkit` ([`world`]): a backend, one hostile
//! frontend whose every page is a sentinel unless it is granted writable to the backend
//! ([`hostile`]), and a well-behaved pair of guests that must still exchange a frame byte-exact
//! at the end; what their scenes do alike (setup, the backend pass, the grant ops, the end
//! checks) is in [`scene`].

pub mod bridge_forward;
pub mod extra_parse;
pub mod hostile;
mod input;
pub mod netback_ctrl;
pub mod netback_rx;
pub mod netback_tx;
pub mod scene;
pub mod seeds;
pub mod world;
pub mod xenbus_keys;
pub mod xenstore_wire;

pub use input::{Enc, Input, Scenario};
