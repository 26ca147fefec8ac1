//! What the mock remembers for tests to assert on: hit counts per name, and the last requests.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::route::query_param;

/// One request as the mock received it (control requests under `/_mock/` are not recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Lower-case names; a repeated header's values joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; `null` when empty, a string when it was not JSON.
    pub body: Value,
    /// The body exactly as received (read as UTF-8, lossily): for asserting what a relay
    /// passed through byte for byte.
    #[serde(default)]
    pub raw_body: String,
}

impl RecordedRequest {
    /// The header's value, by case-insensitive name.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The first value of a query parameter, percent-decoded: `query("api-version")`.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.path.split_once('?')?;
        query_param(query, name).map(Cow::into_owned)
    }

    /// The region of a SigV4 `authorization` header's credential scope
    /// (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`): where a Bedrock request was signed
    /// for.
    #[must_use]
    pub fn aws_region(&self) -> Option<&str> {
        let authorization = self.header("authorization")?;
        let (_, after) = authorization.split_once("Credential=")?;
        let scope = after.split([',', ' ']).next()?;
        scope.split('/').nth(2)
    }
}

/// Hit counters and a ring of the last `limit` requests. Plain mutexes: each is held for a
/// map or deque update, never across an await.
pub(crate) struct Ledger {
    hits: Mutex<HashMap<Cow<'static, str>, u64>>,
    requests: Mutex<VecDeque<Raw>>,
    limit: usize,
}

/// A request as received. Kept raw (moved, not copied: the body `Bytes` is shared) and turned
/// into a [`RecordedRequest`] only when read, so recording costs the hot path almost nothing.
pub(crate) struct Raw {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl From<&Raw> for RecordedRequest {
    fn from(raw: &Raw) -> Self {
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in &raw.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let raw_body = String::from_utf8_lossy(&raw.body).into_owned();
        let body = if raw.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw.body).into_owned()))
        };
        Self {
            method: raw.method.as_str().to_owned(),
            path: raw
                .uri
                .path_and_query()
                .map_or_else(|| raw.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers,
            body,
            raw_body,
        }
    }
}

impl Ledger {
    pub(crate) fn new(limit: usize) -> Self {
        Self { hits: Mutex::default(), requests: Mutex::new(VecDeque::with_capacity(limit.min(1024))), limit }
    }

    pub(crate) fn hit(&self, name: impl Into<Cow<'static, str>>) {
        let name = name.into();
        let mut hits = lock(&self.hits);
        match hits.get_mut(name.as_ref()) {
            Some(count) => *count += 1,
            None => {
                hits.insert(name, 1);
            }
        }
    }

    pub(crate) fn record(&self, request: Raw) {
        if self.limit == 0 {
            return;
        }
        let evicted = {
            let mut requests = lock(&self.requests);
            let evicted = (requests.len() >= self.limit).then(|| requests.pop_front()).flatten();
            requests.push_back(request);
            evicted
        };
        // Freed outside the lock.
        drop(evicted);
    }

    pub(crate) fn count(&self, name: &str) -> u64 {
        lock(&self.hits).get(name).copied().unwrap_or(0)
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.hits).iter().map(|(name, count)| (name.to_string(), *count)).collect()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).iter().map(RecordedRequest::from).collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.hits).clear();
        lock(&self.requests).clear();
    }
}

/// A panicking test thread must not make every later assertion fail with a poison error.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
