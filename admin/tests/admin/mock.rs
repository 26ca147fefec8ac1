//! An in-process Admin server with canned answers that records every request and the
//! `authorization` metadata it came with. Calls without `Bearer <token>` are refused.

use std::sync::{Arc, Mutex};

use llmgw_shared::proto::admin_server::{Admin, AdminServer};
use llmgw_shared::proto::*;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

pub const TOKEN: &str = "test-admin-token";

/// What the server answers; `fail` replaces every answer.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub apply: ApplyResponse,
    pub get: GetResponse,
    pub create_key: CreateKeyResponse,
    pub revoke_key: RevokeKeyResponse,
    pub usage: UsageResponse,
    pub edges: ListEdgesResponse,
    pub audit: ListAuditResponse,
    pub fail: Option<Status>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Apply(ApplyRequest),
    Get(GetRequest),
    CreateKey(CreateKeyRequest),
    RevokeKey(RevokeKeyRequest),
    Usage(UsageRequest),
    ListEdges(ListEdgesRequest),
    ListAudit(ListAuditRequest),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub call: Call,
}

struct Mock {
    answers: Answers,
    calls: Arc<Mutex<Vec<Recorded>>>,
}

impl Mock {
    fn answer<Req, Resp>(
        &self,
        request: Request<Req>,
        wrap: fn(Req) -> Call,
        answer: &Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: Clone,
    {
        let authorization =
            request.metadata().get("authorization").map(|v| v.to_str().unwrap_or("<not ascii>").to_owned());
        let refused = authorization.as_deref() != Some(&format!("Bearer {TOKEN}"));
        self.calls.lock().unwrap().push(Recorded { authorization, call: wrap(request.into_inner()) });
        if refused {
            return Err(Status::unauthenticated("invalid admin token"));
        }
        match &self.answers.fail {
            Some(status) => Err(status.clone()),
            None => Ok(Response::new(answer.clone())),
        }
    }
}

#[tonic::async_trait]
impl Admin for Mock {
    async fn apply(&self, r: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        self.answer(r, Call::Apply, &self.answers.apply)
    }
    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.answer(r, Call::Get, &self.answers.get)
    }
    async fn create_key(&self, r: Request<CreateKeyRequest>) -> Result<Response<CreateKeyResponse>, Status> {
        self.answer(r, Call::CreateKey, &self.answers.create_key)
    }
    async fn revoke_key(&self, r: Request<RevokeKeyRequest>) -> Result<Response<RevokeKeyResponse>, Status> {
        self.answer(r, Call::RevokeKey, &self.answers.revoke_key)
    }
    async fn usage(&self, r: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        self.answer(r, Call::Usage, &self.answers.usage)
    }
    async fn list_edges(&self, r: Request<ListEdgesRequest>) -> Result<Response<ListEdgesResponse>, Status> {
        self.answer(r, Call::ListEdges, &self.answers.edges)
    }
    async fn list_audit(&self, r: Request<ListAuditRequest>) -> Result<Response<ListAuditResponse>, Status> {
        self.answer(r, Call::ListAudit, &self.answers.audit)
    }
}

/// A running mock; stops when dropped.
pub struct Running {
    pub endpoint: String,
    calls: Arc<Mutex<Vec<Recorded>>>,
    _stop: oneshot::Sender<()>,
}

impl Running {
    pub fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().unwrap().clone()
    }

    /// The one call the server received.
    pub fn only_call(&self) -> Recorded {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "expected exactly one call, got {calls:?}");
        calls.into_iter().next().unwrap()
    }
}

pub async fn start(answers: Answers) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = oneshot::channel::<()>();
    let service = AdminServer::new(Mock { answers, calls: Arc::clone(&calls) });
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    Running { endpoint, calls, _stop: stop }
}
