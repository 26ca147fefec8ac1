//! End-to-end tests: the real `llmgw` binary, mock providers on real sockets, real clients.

// A test harness: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;
mod harness;

mod admin_cli;
mod budgets;
mod cluster;
mod dev;
mod edge_errors;
mod edge_ops;
mod edge_proxy;
mod exactly_once;
mod limits;
mod providers;
mod responses;
mod routing;
mod scale;
mod sdk_openai;
