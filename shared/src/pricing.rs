//! Cost of a request from its token counts and the target's pricing.

use crate::proto::Pricing;

/// Tokens a provider reported for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// Part of `input` served from the provider's prompt cache.
    pub cached_input: u64,
}

/// Cost in micro-USD (1e-6 USD), rounded up so many small requests never add up to less than
/// they cost. Prices are USD per million tokens, so tokens × price is micro-USD directly.
#[must_use]
pub fn cost_micro_usd(pricing: Option<&Pricing>, tokens: Tokens) -> u64 {
    let Some(p) = pricing else { return 0 };
    let cached = tokens.cached_input.min(tokens.input);
    let cached_price = p.cached_input_per_mtok.unwrap_or(p.input_per_mtok);
    let micro = (tokens.input - cached) as f64 * p.input_per_mtok
        + cached as f64 * cached_price
        + tokens.output as f64 * p.output_per_mtok;
    if micro.is_finite() && micro > 0.0 { micro.ceil() as u64 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_per_million_tokens() {
        let p = Pricing { input_per_mtok: 0.15, output_per_mtok: 0.60, cached_input_per_mtok: None };
        let t = Tokens { input: 1_000_000, output: 1_000_000, cached_input: 0 };
        assert_eq!(cost_micro_usd(Some(&p), t), 750_000);
        let t = Tokens { input: 10, output: 20, cached_input: 0 };
        // 1.5 + 12 = 13.5 micro-USD, rounded up.
        assert_eq!(cost_micro_usd(Some(&p), t), 14);
    }

    #[test]
    fn cached_tokens_use_their_price() {
        let p = Pricing { input_per_mtok: 2.0, output_per_mtok: 0.0, cached_input_per_mtok: Some(1.0) };
        let t = Tokens { input: 100, output: 0, cached_input: 40 };
        assert_eq!(cost_micro_usd(Some(&p), t), 160);
        assert_eq!(cost_micro_usd(None, t), 0);
    }
}
