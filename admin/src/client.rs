//! The connection to the control plane: endpoint, TLS, timeouts, and the admin token sent with
//! every call.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use llmgw_shared::proto::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use crate::AdminError;

/// 5 s: a control plane that has not accepted a TCP connection by then is down or unreachable,
/// and a script should hear so rather than hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole connection (TCP, TLS and HTTP/2 handshakes) gets twice the TCP connect timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// 30 s: every admin call is a few store reads or one transaction; longer means something is
/// stuck. Calls that wait on purpose (`key revoke --wait`, a large `apply`) add their own time.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect, from the global flags.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub endpoint: String,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM files) for mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// A connected Admin client.
pub(crate) struct Client {
    admin: AdminClient<Channel>,
    /// `Bearer TOKEN`, marked sensitive so it is never logged.
    authorization: Option<MetadataValue<Ascii>>,
    endpoint: String,
}

impl Client {
    /// Connects now, so an unreachable control plane is reported as such, once.
    pub(crate) async fn connect(c: &Connection) -> Result<Self, AdminError> {
        let url = normalize(&c.endpoint)?;
        let authorization = match &c.token {
            None => None,
            Some(token) => {
                let mut value =
                    MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        AdminError::Usage(
                            "the admin token contains characters a header cannot carry (check --token or \
                         LLMGW_ADMIN_TOKEN)"
                                .to_owned(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| AdminError::Usage(format!("invalid --endpoint \"{url}\": {}", chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tls_config(c.ca_cert.as_deref(), c.client_identity.as_ref())?)
                .map_err(|e| AdminError::Usage(format!("cannot set up TLS: {}", chain(&e))))?;
        } else if c.ca_cert.is_some() || c.client_identity.is_some() {
            return Err(AdminError::Usage(format!(
                "--ca-cert and --client-cert need an https:// endpoint, not {url}"
            )));
        }
        let channel = match tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(AdminError::Unreachable { endpoint: url, detail: chain(&e) }),
            Err(_) => {
                let detail = format!("no connection within {}s", HANDSHAKE_TIMEOUT.as_secs());
                return Err(AdminError::Unreachable { endpoint: url, detail });
            }
        };
        Ok(Client { admin: AdminClient::new(channel), authorization, endpoint: url })
    }

    /// Makes one call with the token and a deadline: `call(msg, timeout, |mut c, r| async move
    /// { c.get(r).await })`.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        message: Req,
        timeout: Duration,
        method: F,
    ) -> Result<Resp, AdminError>
    where
        F: FnOnce(AdminClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut request = Request::new(message);
        // The deadline goes to the server too (grpc-timeout), so it can give up in time.
        request.set_timeout(timeout);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        match tokio::time::timeout(timeout, method(self.admin.clone(), request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(AdminError::from_status(&status, &self.endpoint)),
            Err(_) => Err(AdminError::Timeout { endpoint: self.endpoint.clone(), after: timeout }),
        }
    }
}

/// `host:port` means `http://host:port`; only http:// and https:// are accepted.
fn normalize(endpoint: &str) -> Result<String, AdminError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let url = match endpoint.split_once("://") {
        None if endpoint.is_empty() => return Err(AdminError::Usage("--endpoint is empty".to_owned())),
        None => format!("http://{endpoint}"),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            _ => {
                return Err(AdminError::Usage(format!(
                    "--endpoint \"{endpoint}\" is not an http:// or https:// URL"
                )));
            }
        },
    };
    Ok(url)
}

fn tls_config(
    ca_cert: Option<&std::path::Path>,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<ClientTlsConfig, AdminError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| AdminError::Usage(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let mut config = ClientTlsConfig::new().with_webpki_roots();
    if let Some(path) = ca_cert {
        config = config.ca_certificate(Certificate::from_pem(read("--ca-cert", path)?));
    }
    if let Some((cert, key)) = identity {
        let identity =
            tonic::transport::Identity::from_pem(read("--client-cert", cert)?, read("--client-key", key)?);
        config = config.identity(identity);
    }
    Ok(config)
}

/// An error and its causes on one line, leaving out tonic's bare "transport error" heading.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.last().is_some_and(|last| last == &text || last.ends_with(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_or_https_urls() {
        assert_eq!(normalize("http://127.0.0.1:7070").unwrap(), "http://127.0.0.1:7070");
        assert_eq!(normalize("HTTPS://cp.example:443/").unwrap(), "https://cp.example:443");
        assert_eq!(normalize("cp:7070").unwrap(), "http://cp:7070");
        assert!(normalize("ftp://cp").is_err());
        assert!(normalize(" ").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let c = Connection {
            endpoint: format!("http://127.0.0.1:{port}"),
            token: None,
            ca_cert: None,
            client_identity: None,
        };
        let Err(e) = Client::connect(&c).await else { panic!("connected to a closed port") };
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("cannot reach the control plane at http://127.0.0.1:{port}: ")));
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[tokio::test]
    async fn a_token_a_header_cannot_carry_is_a_usage_error() {
        let c = Connection {
            endpoint: "http://127.0.0.1:1".into(),
            token: Some("a\nb".into()),
            ca_cert: None,
            client_identity: None,
        };
        assert!(matches!(Client::connect(&c).await, Err(AdminError::Usage(_))));
    }
}
