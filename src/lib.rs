//! regmirror: mirrors Kamailio registrations onto every node of an Asterisk farm.
pub mod cli;
pub mod config;
pub mod core;
pub mod runtime;
pub mod status;
pub mod store;
