//! Sans-IO core: no tokio, no sockets, time passed in.
pub mod binding;
pub mod congestion;
pub mod digest;
pub mod door;
pub mod farm;
pub mod mirror;
pub mod notify;
pub mod peer;
pub mod response;
pub mod sip;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transaction;
