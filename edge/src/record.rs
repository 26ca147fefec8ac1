//! What the edge records when a request finishes: usage, metrics, and one access-log line.
//! Never a secret or a prompt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use llmgw_shared::pricing::{Tokens, cost_micro_usd};
use llmgw_shared::proto::Pricing;

use crate::config::KeyEntry;
use crate::metrics as m;
use crate::state::Edge;
use crate::usage::UsageKey;

/// The route a request took, once known.
pub struct Routed {
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
    pub pricing: Option<Pricing>,
    pub metrics: Arc<crate::metrics::TargetMetrics>,
}

/// Finished exactly once: explicitly, or on drop when the client went away first (499).
pub struct RequestRecord {
    edge: Arc<Edge>,
    done: bool,
    pub request_id: HeaderValue,
    pub start: Instant,
    pub path: &'static str,
    pub key: Option<Arc<KeyEntry>>,
    pub team: Option<Arc<str>>,
    pub routed: Option<Routed>,
    pub stream: bool,
    pub ttft: Option<Duration>,
    pub tokens: Tokens,
    /// Quota reserved before forwarding, settled with the actual amounts when this finishes.
    pub reservation: Option<crate::quota::Reservation>,
    /// When the first attempt handed its request to the upstream connection (cleared by a
    /// second attempt: a retried request's time is not the gateway's own).
    upstream_sent: Option<Instant>,
    attempts_sent: u32,
    /// Time spent waiting for the client's body: the client's, not the gateway's.
    pub client_wait: Duration,
}

impl RequestRecord {
    pub fn new(edge: Arc<Edge>, request_id: HeaderValue, start: Instant, path: &'static str) -> Self {
        m::in_flight().increment(1.0);
        Self {
            edge,
            done: false,
            request_id,
            start,
            path,
            key: None,
            team: None,
            routed: None,
            stream: false,
            ttft: None,
            tokens: Tokens::default(),
            reservation: None,
            upstream_sent: None,
            attempts_sent: 0,
            client_wait: Duration::ZERO,
        }
    }

    /// An attempt is about to hand its request to the upstream connection.
    pub fn sending(&mut self) {
        self.attempts_sent += 1;
        self.upstream_sent = (self.attempts_sent == 1).then(Instant::now);
    }

    /// The answer is handed to the client's connection; `read_at` is when the upstream bytes it
    /// was made from had been read. Records the gateway's own time, once, for first attempts.
    pub fn handed_over(&mut self, read_at: Instant) {
        if let Some(sent) = self.upstream_sent.take() {
            let own = sent.saturating_duration_since(self.start).saturating_sub(self.client_wait)
                + read_at.elapsed();
            m::overhead().record(own.as_secs_f64());
        }
    }

    /// Records the outcome. `error` is a fixed label (an error code), never free text.
    pub fn finish(&mut self, status: u16, error: Option<&'static str>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let edge = &*self.edge;
        m::in_flight().decrement(1.0);
        let elapsed = self.start.elapsed();
        let cost = self.routed.as_ref().map_or(0, |r| cost_micro_usd(r.pricing.as_ref(), self.tokens));
        if let Some(r) = self.reservation.take() {
            edge.quota.settle(r, cost, self.tokens.input + self.tokens.output);
        }
        if let (Some(k), Some(r)) = (&self.key, &self.routed) {
            let key = UsageKey {
                key_id: k.id.clone(),
                project: k.project.clone(),
                team: self.team.clone(),
                model: r.model.clone(),
                provider: r.provider.clone(),
                upstream_model: r.upstream_model.clone(),
            };
            edge.usage.record(&key, self.tokens, cost, error.is_some() || status >= 400);
        }
        match &self.routed {
            Some(r) => {
                let tm = &r.metrics;
                if status == 200 {
                    tm.ok.increment(1);
                } else {
                    let (model, provider) = (r.model.to_string(), r.provider.to_string());
                    metrics::counter!(m::REQUESTS, "model" => model, "provider" => provider, "status" => status.to_string())
                        .increment(1);
                }
                tm.duration.record(elapsed.as_secs_f64());
                if let Some(t) = self.ttft {
                    tm.ttft.record(t.as_secs_f64());
                }
                tm.tokens_in.increment(self.tokens.input);
                tm.tokens_out.increment(self.tokens.output);
                tm.cost.increment(cost);
            }
            None => {
                metrics::counter!(m::REQUESTS, "model" => "-", "provider" => "-", "status" => status.to_string()).increment(1);
                metrics::histogram!(m::REQUEST_DURATION, "model" => "-", "provider" => "-")
                    .record(elapsed.as_secs_f64());
            }
        }
        tracing::info!(
            target: "llmgw::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            path = self.path,
            status,
            error = error.unwrap_or(""),
            key = self.key.as_ref().map_or("-", |k| &*k.name),
            model = self.routed.as_ref().map_or("-", |r| &*r.model),
            provider = self.routed.as_ref().map_or("-", |r| &*r.provider),
            upstream_model = self.routed.as_ref().map_or("-", |r| &*r.upstream_model),
            stream = self.stream,
            input_tokens = self.tokens.input,
            output_tokens = self.tokens.output,
            cost_micro_usd = cost,
            ttft_ms = self.ttft.map(|t| t.as_secs_f64() * 1e3),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "request"
        );
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        // 499: nginx's "client closed request", the convention log pipelines know.
        self.finish(499, Some("client_closed"));
    }
}
