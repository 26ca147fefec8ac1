//! OpenAI's embeddings and model list (Azure's embeddings too): deterministic vectors seeded by
//! each input's text.

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Serialize;

use super::behaviour::Behaviour;
use super::openai::json;
use super::request::{Call, Input};

/// Embedding width when the request names no `dimensions`; 4096 caps what one may ask for.
const EMBEDDING_DIMENSIONS: u64 = 8;
const MAX_EMBEDDING_DIMENSIONS: u64 = 4096;

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    /// Little-endian f32s, base64: what the Python SDK asks for by default.
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A deterministic unit vector per input, seeded by the input's text.
pub(crate) fn embeddings_json(call: &Call<'_>, behaviour: &Behaviour) -> Bytes {
    let dimensions =
        call.dimensions.unwrap_or(EMBEDDING_DIMENSIONS).clamp(1, MAX_EMBEDDING_DIMENSIONS) as usize;
    let data = call
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let seed = match input {
                Input::Text(text) => fnv1a(text.as_bytes()),
                Input::Tokens(n) => fnv1a(&n.to_le_bytes()),
            };
            let floats = unit_vector(seed, dimensions);
            let embedding = if call.base64 {
                let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64(&bytes))
            } else {
                Vector::Floats(floats)
            };
            Embedding { object: "embedding", index, embedding }
        })
        .collect();
    let prompt_tokens = behaviour.usage.map_or(call.prompt_tokens, |(p, _)| p);
    json(&EmbeddingList {
        object: "list",
        data,
        model: call.model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    })
}

/// `GET /v1/models`: the same small list every time.
pub(crate) fn models_json() -> Bytes {
    static MODELS: LazyLock<Bytes> = LazyLock::new(|| {
        #[derive(Serialize)]
        struct Model {
            id: &'static str,
            object: &'static str,
            created: u64,
            owned_by: &'static str,
        }
        #[derive(Serialize)]
        struct List {
            object: &'static str,
            data: Vec<Model>,
        }
        let data = ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
            .into_iter()
            .map(|id| Model { id, object: "model", created: 1_700_000_000, owned_by: "mock" })
            .collect();
        json(&List { object: "list", data })
    });
    MODELS.clone()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// xorshift64 from `seed`, scaled to [-1, 1], then normalized to length 1.
fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn unit_vectors_are_deterministic_and_normalized() {
        let a = unit_vector(fnv1a(b"hello"), 8);
        assert_eq!(a, unit_vector(fnv1a(b"hello"), 8));
        assert_ne!(a, unit_vector(fnv1a(b"world"), 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
