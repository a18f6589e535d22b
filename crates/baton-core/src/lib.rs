//! Baton's core: the domain model, the task state machine, and the operation layer that
//! every surface (CLI, HTTP, MCP) calls, over a storage trait that each backend implements.
//!
//! # Layout
//! - [`model`], [`state`]: what a task is and which operations each state accepts.
//! - [`ops`]: one function per operation, run inside a storage transaction.
//! - [`store`]: the storage boundary ([`store::Tx`], [`store::Store`]).
//! - [`engine`]: [`Baton`], the handle surfaces hold: runs operations as write jobs, with
//!   idempotency keys, the long-poll claim and the reaper.
//! - [`admission`]: refuses new work while the store is far behind.
//! - [`blobs`]: the object store that holds artifacts' bytes.
//! - `dispatch`: wakes as many waiting long-poll claims as there is work for.
//! - [`metrics`]: what a replica measures of its work, for `/metrics`.
//! - [`replay`]: rebuilds projections from the event log and compares them with the live ones.
//! - [`error`]: the catalogue of stable error codes.

pub mod access;
pub mod admission;
pub mod api;
pub mod blobs;
mod dispatch;
pub mod engine;
pub mod error;
pub mod id;
pub mod metrics;
pub mod model;
pub mod object;
pub mod ops;
pub mod replay;
pub mod schema;
pub mod state;
pub mod store;
pub mod time;

pub use engine::{Baton, LeaseOp, LeaseOut};
pub use error::{Code, Error, Result};
