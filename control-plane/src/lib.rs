//! The control plane: stores, admin API, config compiler and broadcaster, usage ledger.

pub mod store;
