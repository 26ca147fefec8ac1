//! The calendar lives in `llmgw-shared`, where edges serving a config file without a control
//! plane use it too.

pub use llmgw_shared::period::*;
