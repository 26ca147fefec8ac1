//! End-to-end tests: the real `llmgw` binary, mock providers on real sockets, real clients.

mod fixtures;
mod harness;

mod edge_errors;
mod edge_ops;
mod edge_proxy;
mod sdk_openai;
