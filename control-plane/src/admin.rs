//! The admin gRPC API: what `llmgw admin` calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmgw_shared::keys::{SECRET_PREFIX, hash_secret};
use llmgw_shared::proto::admin_server::Admin;
use llmgw_shared::proto::{
    self, ApplyRequest, ApplyResponse, Change, CreateKeyRequest, CreateKeyResponse, GetRequest, GetResponse,
    ListAuditRequest, ListAuditResponse, ListEdgesRequest, ListEdgesResponse, Resource, ResourceKind,
    RevokeKeyRequest, RevokeKeyResponse, UsageRequest, UsageResponse, credential::Source, resource,
};
use rand::Rng;
use tonic::{Request, Response, Status};

use crate::auth::Actor;
use crate::broadcast::Broadcaster;
use crate::compile::{self, CompileError, Write};
use crate::edges::Registry;
use crate::layout;
use crate::seal::MasterKey;
use crate::store::{Compare, CompareOp, CompareTarget, Op, Store};
use crate::usage::{Counters, Ledger, UsageFilter};
use crate::view::View;
use crate::{audit, metrics as m};

#[derive(Clone)]
pub struct AdminService {
    pub store: Arc<dyn Store>,
    pub broadcaster: Arc<Broadcaster>,
    pub registry: Arc<Registry>,
    pub master_key: Option<Arc<MasterKey>>,
    pub ledger: Arc<Ledger>,
}

/// How long an admin call waits for its own change to show in this replica's view.
const VIEW_PATIENCE: Duration = Duration::from_secs(10);

fn actor<T>(req: &Request<T>) -> String {
    req.extensions().get::<Actor>().map_or_else(|| "unknown".into(), |a| a.0.clone())
}

impl From<CompileError> for Status {
    fn from(e: CompileError) -> Self {
        match e {
            CompileError::Invalid(m) => Status::invalid_argument(m),
            CompileError::Seal(e) => Status::failed_precondition(e.to_string()),
            CompileError::Conflict => Status::aborted(e.to_string()),
            CompileError::Store(e) => Status::unavailable(e.to_string()),
        }
    }
}

fn observe<T>(method: &'static str, start: Instant, r: &Result<T, Status>) {
    let code = match r {
        Ok(_) => "ok".to_owned(),
        Err(s) => format!("{:?}", s.code()).to_lowercase(),
    };
    metrics::counter!(m::ADMIN_CALLS, "method" => method, "code" => code).increment(1);
    metrics::histogram!(m::ADMIN_LATENCY, "method" => method).record(start.elapsed().as_secs_f64());
}

/// Listings never carry a secret: sealed credentials keep only their key id, keys lose their hash.
fn redact(mut r: Resource) -> Resource {
    match &mut r.resource {
        Some(resource::Resource::Provider(p)) => {
            for c in &mut p.credentials {
                if let Some(Source::Sealed(s)) = &mut c.source {
                    s.nonce.clear();
                    s.ciphertext.clear();
                }
            }
        }
        Some(resource::Resource::Key(k)) => k.secret_sha256.clear(),
        _ => {}
    }
    r
}

/// A redacted one-resource document for the audit log.
fn doc(r: Option<&Resource>) -> String {
    let Some(r) = r else { return String::new() };
    let mut s = proto::Snapshot::default();
    match redact(r.clone()).resource {
        Some(resource::Resource::Provider(p)) => s.providers.push(p),
        Some(resource::Resource::Model(x)) => s.models.push(x),
        Some(resource::Resource::Team(x)) => s.teams.push(x),
        Some(resource::Resource::Project(x)) => s.projects.push(x),
        Some(resource::Resource::Key(x)) => s.keys.push(x),
        None => {}
    }
    llmgw_shared::configfile::to_yaml(&s).unwrap_or_default()
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'))
}

fn new_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    // 40 characters of base62: ~238 bits.
    let body: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{SECRET_PREFIX}{body}")
}

impl AdminService {
    async fn commit(&self, writes: Vec<Write>, audit: Op) -> Result<i64, Status> {
        let revision = compile::commit(&*self.store, writes, vec![audit]).await?;
        // The caller's next read (on this replica) must see the change.
        let start = Instant::now();
        self.broadcaster.wait_for(revision, VIEW_PATIENCE).await;
        metrics::histogram!(m::WATCH_LAG).record(start.elapsed().as_secs_f64());
        Ok(revision)
    }

    async fn apply(&self, req: Request<ApplyRequest>) -> Result<ApplyResponse, Status> {
        let who = actor(&req);
        let req = req.into_inner();
        let desired = req.desired.unwrap_or_default();
        let view = self.broadcaster.view();
        let writes = compile::plan_apply(&desired, req.prune, &view, self.master_key.as_deref())?;
        let changes: Vec<Change> = writes.iter().map(|w| w.change.clone()).collect();
        if req.dry_run || writes.is_empty() {
            return Ok(ApplyResponse { changes, revision: view.revision.max(0) as u64 });
        }
        let summary: Vec<String> = changes
            .iter()
            .map(|c| {
                let kind = ResourceKind::try_from(c.kind).unwrap_or(ResourceKind::Unspecified);
                format!("{} {} {}", c.action, crate::broadcast::kind_name(kind), c.name)
            })
            .collect();
        let (before, after) = match writes.as_slice() {
            [w] => {
                let kind = ResourceKind::try_from(w.change.kind).unwrap_or(ResourceKind::Unspecified);
                let before = view.get(kind, &w.change.name).map(|s| &s.resource);
                let after = match w.ops.first() {
                    Some(Op::Put { value, .. }) => layout::decode(kind, value).ok(),
                    _ => None,
                };
                (doc(before), doc(after.as_ref()))
            }
            _ => (String::new(), summary.join("\n")),
        };
        let audit = audit::record(&who, "apply", &format!("{} changes", changes.len()), before, after);
        let revision = self.commit(writes, audit).await?;
        tracing::info!(actor = %who, changes = changes.len(), revision, "applied");
        Ok(ApplyResponse { changes, revision: revision as u64 })
    }

    fn get(&self, req: &GetRequest) -> GetResponse {
        let view = self.broadcaster.view();
        let kind = ResourceKind::try_from(req.kind).unwrap_or(ResourceKind::Unspecified);
        let mut state = view.snapshot(redact);
        if kind != ResourceKind::Unspecified {
            let keep = |k: ResourceKind| k == kind;
            if !keep(ResourceKind::Provider) {
                state.providers.clear();
            }
            if !keep(ResourceKind::Model) {
                state.models.clear();
            }
            if !keep(ResourceKind::Team) {
                state.teams.clear();
            }
            if !keep(ResourceKind::Project) {
                state.projects.clear();
            }
            if !keep(ResourceKind::Key) {
                state.keys.clear();
            }
        }
        GetResponse { state: Some(state) }
    }

    fn check_scope(view: &View, req: &CreateKeyRequest) -> Result<(), Status> {
        match (req.team.is_empty(), req.project.is_empty()) {
            (false, true) if view.get(ResourceKind::Team, &req.team).is_none() => {
                Err(Status::not_found(format!("no team named {:?}", req.team)))
            }
            (true, false) if view.get(ResourceKind::Project, &req.project).is_none() => {
                Err(Status::not_found(format!("no project named {:?}", req.project)))
            }
            (false, true) | (true, false) => Ok(()),
            _ => Err(Status::invalid_argument("set exactly one of team and project")),
        }
    }

    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Result<CreateKeyResponse, Status> {
        let who = actor(&req);
        let req = req.into_inner();
        if !valid_name(&req.name) {
            return Err(Status::invalid_argument(format!(
                "key name {:?} must match [a-z0-9][a-z0-9._-]{{0,62}}",
                req.name
            )));
        }
        let view = self.broadcaster.view();
        Self::check_scope(&view, &req)?;
        for m in req.models.iter().flat_map(|s| &s.names) {
            if view.get(ResourceKind::Model, m).is_none() {
                return Err(Status::not_found(format!("no model named {m:?}")));
            }
        }
        if view.key(&req.name).is_some() {
            return Err(Status::already_exists(format!("a key named {:?} already exists", req.name)));
        }
        let secret = new_secret();
        let now = compile::now_unix();
        let key = proto::Key {
            id: compile::new_id(),
            name: req.name.clone(),
            project: req.project,
            team: req.team,
            secret_sha256: hash_secret(&secret).to_vec(),
            models: req.models,
            limits: req.limits,
            budget: req.budget,
            expires_at_unix: if req.expires_in_seconds > 0 { now + req.expires_in_seconds } else { 0 },
            revoked: false,
            created_at_unix: now,
            secret_prefix: secret.chars().take(SECRET_PREFIX.len() + 4).collect(),
        };
        let res = Resource { resource: Some(resource::Resource::Key(key.clone())) };
        let skey = layout::store_key(ResourceKind::Key, &key.id);
        let idx = format!("{}{}", layout::KEY_NAMES, key.name).into_bytes();
        let absent = |k: &[u8]| Compare {
            key: k.to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::CreateRevision(0),
        };
        let write = Write {
            change: Change {
                action: "create".into(),
                kind: ResourceKind::Key as i32,
                name: key.name.clone(),
            },
            compares: vec![absent(&skey), absent(&idx)],
            ops: vec![
                Op::Put { key: skey, value: layout::encode(&res), lease: 0 },
                Op::Put { key: idx, value: key.id.clone().into_bytes(), lease: 0 },
            ],
        };
        let audit =
            audit::record(&who, "key.create", &format!("key {}", key.name), String::new(), doc(Some(&res)));
        let revision = match self.commit(vec![write], audit).await {
            Err(s) if s.code() == tonic::Code::Aborted => {
                return Err(Status::already_exists(format!("a key named {:?} already exists", key.name)));
            }
            r => r?,
        };
        tracing::info!(actor = %who, key = %key.name, id = %key.id, revision, "key created");
        Ok(CreateKeyResponse { id: key.id, name: key.name, secret, revision: revision as u64 })
    }

    async fn revoke_key(&self, req: Request<RevokeKeyRequest>) -> Result<RevokeKeyResponse, Status> {
        let who = actor(&req);
        let req = req.into_inner();
        let view = self.broadcaster.view();
        let (key, mod_revision) = view
            .key(&req.name_or_id)
            .ok_or_else(|| Status::not_found(format!("no key named {:?}", req.name_or_id)))?;
        let mut key = key.clone();
        let revision = if key.revoked {
            mod_revision
        } else {
            let before = Resource { resource: Some(resource::Resource::Key(key.clone())) };
            key.revoked = true;
            let after = Resource { resource: Some(resource::Resource::Key(key.clone())) };
            let skey = layout::store_key(ResourceKind::Key, &key.id);
            let write = Write {
                change: Change {
                    action: "update".into(),
                    kind: ResourceKind::Key as i32,
                    name: key.name.clone(),
                },
                compares: vec![Compare {
                    key: skey.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(mod_revision),
                }],
                ops: vec![Op::Put { key: skey, value: layout::encode(&after), lease: 0 }],
            };
            let audit = audit::record(
                &who,
                "key.revoke",
                &format!("key {}", key.name),
                doc(Some(&before)),
                doc(Some(&after)),
            );
            let r = self.commit(vec![write], audit).await?;
            tracing::info!(actor = %who, key = %key.name, revision = r, "key revoked");
            r
        };
        let (mut applied, mut total) = (0, 0);
        if req.wait {
            let patience =
                Duration::from_millis(if req.wait_timeout_ms == 0 { 10_000 } else { req.wait_timeout_ms });
            (applied, total) = self
                .registry
                .wait_applied(revision as u64, patience)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(RevokeKeyResponse { revision: revision as u64, edges_applied: applied, edges_total: total })
    }

    /// Usage from the ledger's view, once it caught up with the store (so a report acked before
    /// the call is in the answer). `since_unix` 0: the all-time counters; else the hourly buckets
    /// from the hour containing it. Keys show by name; a deleted key by its id.
    async fn usage(&self, req: &UsageRequest) -> Result<UsageResponse, Status> {
        self.broadcaster.loaded(VIEW_PATIENCE).await?;
        let revision = self.ledger.sync(VIEW_PATIENCE).await?;
        // Key names too, as of the same revision (a key created on another replica just now).
        self.broadcaster.wait_for(revision, VIEW_PATIENCE).await;
        let view = self.broadcaster.view();
        let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let key_id = given(&req.key).map(|k| view.key(&k).map_or(k.clone(), |(key, _)| key.id.clone()));
        let filter = UsageFilter {
            team: given(&req.team),
            project: given(&req.project),
            key_id,
            model: given(&req.model),
            since: (req.since_unix != 0).then_some(req.since_unix),
        };
        let mut rows: std::collections::BTreeMap<[String; 5], Counters> = std::collections::BTreeMap::new();
        for (g, c) in self.ledger.rows(&filter) {
            let key = view
                .key(&g.key_id)
                .filter(|(k, _)| k.id == g.key_id)
                .map_or(g.key_id, |(k, _)| k.name.clone());
            rows.entry([g.team, g.project, key, g.model, g.provider]).or_default().add(c);
        }
        let rows = rows
            .into_iter()
            .map(|([team, project, key, model, provider], c)| proto::UsageRowView {
                team,
                project,
                key,
                model,
                provider,
                requests: c.requests,
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
                cost_usd: c.cost_usd(),
                errors: c.errors,
            })
            .collect();
        Ok(UsageResponse { rows })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let start = Instant::now();
        let r = match self.broadcaster.loaded(VIEW_PATIENCE).await {
            Ok(()) => AdminService::apply(self, req).await,
            Err(e) => Err(e),
        };
        observe("apply", start, &r);
        r.map(Response::new)
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let start = Instant::now();
        let r = self.broadcaster.loaded(VIEW_PATIENCE).await.map(|()| AdminService::get(self, req.get_ref()));
        observe("get", start, &r);
        r.map(Response::new)
    }

    async fn create_key(
        &self,
        req: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        let start = Instant::now();
        let r = match self.broadcaster.loaded(VIEW_PATIENCE).await {
            Ok(()) => AdminService::create_key(self, req).await,
            Err(e) => Err(e),
        };
        observe("create_key", start, &r);
        r.map(Response::new)
    }

    async fn revoke_key(
        &self,
        req: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        let start = Instant::now();
        let r = match self.broadcaster.loaded(VIEW_PATIENCE).await {
            Ok(()) => AdminService::revoke_key(self, req).await,
            Err(e) => Err(e),
        };
        observe("revoke_key", start, &r);
        r.map(Response::new)
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let start = Instant::now();
        let r = AdminService::usage(self, req.get_ref()).await;
        observe("usage", start, &r);
        r.map(Response::new)
    }

    async fn list_edges(
        &self,
        _req: Request<ListEdgesRequest>,
    ) -> Result<Response<ListEdgesResponse>, Status> {
        let start = Instant::now();
        let r = self
            .registry
            .list()
            .await
            .map(|edges| ListEdgesResponse {
                edges,
                revision: self.broadcaster.view().config_revision.max(0) as u64,
            })
            .map_err(|e| Status::unavailable(e.to_string()));
        observe("list_edges", start, &r);
        r.map(Response::new)
    }

    async fn list_audit(
        &self,
        req: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let start = Instant::now();
        let r = audit::list(&*self.store, req.get_ref().since_unix)
            .await
            .map(|records| ListAuditResponse { records })
            .map_err(|e| Status::unavailable(e.to_string()));
        observe("list_audit", start, &r);
        r.map(Response::new)
    }
}
