//! The official `openai` Python SDK as the client.

use llmgw_tests::mock::MockProvider;

use crate::fixtures::*;
use crate::harness::{Llmgw, run_python};

#[tokio::test]
async fn openai_python_sdk() {
    let mock = MockProvider::start().await.unwrap();
    let gw = Llmgw::edge(&config(&mock.base_url(), ""), &[]).await;
    let out = run_python(
        "openai_sdk.py",
        &[("LLMGW_BASE_URL", &gw.base_url()), ("LLMGW_KEY", KEY), ("LLMGW_LIMITED_KEY", LIMITED_KEY)],
    )
    .await;
    assert!(out.contains("all checks passed"), "{out}");
}
