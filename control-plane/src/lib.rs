//! The control plane: stores, admin API, config compiler and broadcaster, usage ledger.
