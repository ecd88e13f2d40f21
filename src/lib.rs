//! regmirror: mirrors Kamailio registrations onto every node of an Asterisk farm.
pub mod config;
pub mod core;
