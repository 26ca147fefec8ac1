//! AWS Signature Version 4 for Bedrock requests, by `aws-sigv4`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;

use crate::TranslateError;

/// The signing name of Bedrock's runtime API (Converse, ConverseStream, InvokeModel).
pub const SERVICE: &str = "bedrock";

/// Signs `req` for Bedrock in `region` with the given credentials at `time`: adds
/// `authorization` and `x-amz-date`, and `x-amz-security-token` with a session token
/// (temporary credentials from STS or an instance role).
///
/// Every header already on the request is signed, so set them all (`content-type`, …)
/// before signing and change none after; `host` comes from the URI when it is not a header.
/// The URI's path is signed as it is (percent-encoded, as [`super::converse_path`] makes it)
/// and the body's SHA-256 is part of the signature. Bedrock needs no
/// `x-amz-content-sha256` header, so none is added.
///
/// # Errors
/// `InvalidRequest` when the request cannot be signed: a URI without a host, a header value
/// that is not visible ASCII, or credentials that do not fit in a header.
pub fn sign(
    req: &mut http::Request<Bytes>,
    region: &str,
    access_key: &str,
    secret_key: &str,
    session_token: Option<&str>,
    time: SystemTime,
) -> Result<(), TranslateError> {
    sign_for_service(req, SERVICE, region, access_key, secret_key, session_token, time)
}

/// [`sign`] for any AWS service's signing name; AWS's published SigV4 test vectors use the
/// service `service`.
///
/// # Errors
/// As [`sign`].
pub fn sign_for_service(
    req: &mut http::Request<Bytes>,
    service: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
    session_token: Option<&str>,
    time: SystemTime,
) -> Result<(), TranslateError> {
    let fail = |e: &dyn std::fmt::Display| {
        TranslateError::InvalidRequest(format!("cannot sign the AWS request: {e}"))
    };
    // "llmgw" names where the credentials came from in aws-credential-types' debug output.
    let identity =
        Credentials::new(access_key, secret_key, session_token.map(str::to_owned), None, "llmgw").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail(&e))?
        .into();

    // aws-sigv4 panics on a URI without a host; refuse it here instead.
    if req.uri().host().is_none() {
        return Err(fail(&"the URI has no host"));
    }
    let uri = req.uri().to_string();
    let mut headers = Vec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let value = value.to_str().map_err(|_| fail(&format!("header `{name}` is not visible ASCII")))?;
        headers.push((name.as_str(), value));
    }
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(req.body().as_ref()),
    )
    .map_err(|e| fail(&e))?;
    let (instructions, _signature) = sigv4_sign(signable, &params).map_err(|e| fail(&e))?.into_parts();

    // Applied by hand rather than with `apply_to_request_http1x`, which panics on a header
    // value it cannot represent.
    let (new_headers, _query) = instructions.into_parts();
    for h in new_headers {
        let mut value = http::HeaderValue::from_str(h.value()).map_err(|e| fail(&e))?;
        // aws-sigv4 marks only the session token; the signature is a credential too, kept
        // out of logs and of HTTP/2 header compression tables.
        value.set_sensitive(h.sensitive() || h.name() == "authorization");
        req.headers_mut().insert(h.name(), value);
    }
    Ok(())
}
