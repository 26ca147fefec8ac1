//! `key create` (prints the secret, once) and `key revoke [--wait]`.

use std::io::Write;

use llmgw_shared::proto::{
    Budget, CreateKeyRequest, CreateKeyResponse, Limits, ModelSet, Period, RevokeKeyRequest,
    RevokeKeyResponse,
};
use serde::Serialize;

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output};
use crate::{AdminError, KeyCreateArgs, KeyRevokeArgs, PeriodArg};

const SHOWN_ONCE: &str = "the secret is shown once: store it now, it cannot be shown again";

/// `-o json` of `key create`: exactly these fields (CONFIG.md).
#[derive(Debug, Serialize)]
struct Created<'a> {
    id: &'a str,
    name: &'a str,
    secret: &'a str,
}

pub(crate) fn create_request(a: &KeyCreateArgs) -> Result<CreateKeyRequest, AdminError> {
    let expires_in_seconds = match a.expires_in {
        None => 0,
        Some(d) => i64::try_from(d.as_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| AdminError::Usage("--expires-in must be at least 1s".to_owned()))?,
    };
    let limits = (a.rpm.is_some() || a.tpm.is_some())
        .then(|| Limits { rpm: a.rpm.unwrap_or(0), tpm: a.tpm.unwrap_or(0) });
    let budget = match (a.budget_usd, a.period) {
        (Some(limit_usd), Some(period)) => Some(Budget { limit_usd, period: period_of(period).into() }),
        (None, None) => None,
        // clap makes each flag require the other; kept as an error for callers building args.
        _ => return Err(AdminError::Usage("--budget-usd and --period go together".to_owned())),
    };
    let (team, project) = match (&a.team, &a.project) {
        (Some(t), None) => (t.clone(), String::new()),
        (None, Some(p)) => (String::new(), p.clone()),
        _ => return Err(AdminError::Usage("a key needs exactly one of --team and --project".to_owned())),
    };
    Ok(CreateKeyRequest {
        name: a.name.clone(),
        team,
        project,
        models: a.models.as_ref().map(|names| ModelSet { names: names.clone() }),
        limits,
        budget,
        expires_in_seconds,
    })
}

fn period_of(p: PeriodArg) -> Period {
    match p {
        PeriodArg::Daily => Period::Daily,
        PeriodArg::Weekly => Period::Weekly,
        PeriodArg::Monthly => Period::Monthly,
        PeriodArg::Total => Period::Total,
    }
}

pub(crate) async fn create(
    client: &Client,
    args: &KeyCreateArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let request = create_request(args)?;
    let response =
        client.call(request, REQUEST_TIMEOUT, |mut c, r| async move { c.create_key(r).await }).await?;
    print_created(&response, output, out)
}

fn print_created(
    r: &CreateKeyResponse,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let created = Created { id: &r.id, name: &r.name, secret: &r.secret };
    match output {
        Output::Json => render::write_all(out, &render::json(&created)?),
        Output::Yaml => {
            let yaml = serde_yaml_ng::to_string(&created).map_err(|e| AdminError::Render(e.to_string()))?;
            render::write_all(out, &format!("{yaml}# {SHOWN_ONCE}\n"))
        }
        Output::Table => render::write_all(
            out,
            &format!("id:     {}\nname:   {}\nsecret: {}\n\nNote: {SHOWN_ONCE}.\n", r.id, r.name, r.secret),
        ),
    }
}

/// `-o json` of `key revoke`.
#[derive(Debug, Serialize)]
struct Revoked<'a> {
    key: &'a str,
    revision: u64,
    waited: bool,
    edges_applied: u32,
    edges_total: u32,
}

pub(crate) async fn revoke(
    client: &Client,
    args: &KeyRevokeArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let wait_ms = u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX);
    let request = RevokeKeyRequest {
        name_or_id: args.key.clone(),
        wait: args.wait,
        wait_timeout_ms: if args.wait { wait_ms } else { 0 },
    };
    // The server waits up to the wait timeout, then answers: the call gets that on top.
    let deadline = if args.wait { REQUEST_TIMEOUT + args.timeout } else { REQUEST_TIMEOUT };
    let response = client.call(request, deadline, |mut c, r| async move { c.revoke_key(r).await }).await?;
    print_revoked(args, &response, output, out)?;
    if args.wait && response.edges_applied < response.edges_total {
        return Err(AdminError::EdgesBehind {
            revision: response.revision,
            applied: response.edges_applied,
            total: response.edges_total,
            waited: args.timeout,
        });
    }
    Ok(())
}

fn print_revoked(
    args: &KeyRevokeArgs,
    r: &RevokeKeyResponse,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    if output != Output::Table {
        let revoked = Revoked {
            key: &args.key,
            revision: r.revision,
            waited: args.wait,
            edges_applied: r.edges_applied,
            edges_total: r.edges_total,
        };
        return render::structured(out, output, &revoked);
    }
    let mut text = format!("revoked key {} at revision {}\n", args.key, r.revision);
    if args.wait {
        text.push_str(&match r.edges_total {
            0 => "no edges connected\n".to_owned(),
            total => format!("applied on {} of {total} edges\n", r.edges_applied),
        });
    }
    render::write_all(out, &text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args() -> KeyCreateArgs {
        KeyCreateArgs {
            name: "ranker-prod".into(),
            team: None,
            project: Some("ranker".into()),
            models: None,
            rpm: None,
            tpm: None,
            budget_usd: None,
            period: None,
            expires_in: None,
        }
    }

    #[test]
    fn create_request_fields() {
        let r = create_request(&args()).unwrap();
        assert_eq!((r.team.as_str(), r.project.as_str()), ("", "ranker"));
        assert_eq!((r.models, r.limits, r.budget, r.expires_in_seconds), (None, None, None, 0));
        let a = KeyCreateArgs {
            models: Some(vec!["chat".into()]),
            tpm: Some(1000),
            budget_usd: Some(2.5),
            period: Some(PeriodArg::Weekly),
            expires_in: Some(Duration::from_secs(3600)),
            ..args()
        };
        let r = create_request(&a).unwrap();
        assert_eq!(r.models, Some(ModelSet { names: vec!["chat".into()] }));
        assert_eq!(r.limits, Some(Limits { rpm: 0, tpm: 1000 }));
        assert_eq!(r.budget, Some(Budget { limit_usd: 2.5, period: Period::Weekly.into() }));
        assert_eq!(r.expires_in_seconds, 3600);
        let both = KeyCreateArgs { team: Some("t".into()), ..args() };
        assert!(matches!(create_request(&both), Err(AdminError::Usage(_))));
        let half = KeyCreateArgs { budget_usd: Some(1.0), ..args() };
        assert!(matches!(create_request(&half), Err(AdminError::Usage(_))));
    }

    fn created(output: Output) -> String {
        let r = CreateKeyResponse {
            id: "k_1".into(),
            name: "n".into(),
            secret: "sk-llmgw-x".into(),
            revision: 3,
        };
        let mut out = Vec::new();
        print_created(&r, output, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn created_json_has_exactly_id_name_secret() {
        let v: serde_json::Value = serde_json::from_str(&created(Output::Json)).unwrap();
        assert_eq!(v, serde_json::json!({"id": "k_1", "name": "n", "secret": "sk-llmgw-x"}));
        let yaml = created(Output::Yaml);
        let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v, serde_json::json!({"id": "k_1", "name": "n", "secret": "sk-llmgw-x"}));
        assert!(yaml.contains("shown once"));
        let table = created(Output::Table);
        assert!(table.contains("secret: sk-llmgw-x\n") && table.contains("shown once"), "{table}");
    }
}
