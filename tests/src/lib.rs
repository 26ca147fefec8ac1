//! Test harness for llmgw: mock providers for end-to-end tests and benchmarks, and the sync load
//! simulator (`llmgw-sim`).

pub mod etcd;
pub mod mock;
pub mod sim;
