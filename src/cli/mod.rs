//! Command-line front ends. Each subcommand returns the process exit code:
//! 0 ok, 1 usage or validation, 2 not found or duplicate, 3 database unreachable,
//! schema or privilege problem.
pub mod import;
pub mod kamailio_rpc;
pub mod node;
pub mod status;
pub mod user;

use crate::store::StoreError;

/// The exit code for a store error.
pub fn exit_code(err: &StoreError) -> u8 {
    match err {
        StoreError::Invalid { .. } => 1,
        StoreError::Duplicate(_) | StoreError::NotFound(_) => 2,
        StoreError::Unreachable(_)
        | StoreError::Schema(_)
        | StoreError::Denied(_)
        | StoreError::Injected(_)
        | StoreError::Database(_) => 3,
    }
}
