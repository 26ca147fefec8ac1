//! Provider adapters: how a request is built for, and an answer read from, each provider kind.

pub mod openai;
