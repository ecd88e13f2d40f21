//! Sans-IO core: no tokio, no sockets, time passed in.
pub mod digest;
pub mod notify;
pub mod sip;
