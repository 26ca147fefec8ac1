//! Test harness for llmgw: mock providers for end-to-end tests and benchmarks.

pub mod etcd;
pub mod mock;
