//! `get providers|models|teams|projects|keys|all`: `-o yaml` is the config-file format (so
//! `get all -o yaml > f && apply -f f` changes nothing), `-o json` the same resources as JSON
//! plus what only the control plane knows about keys (id, secret prefix, creation time), and
//! the table a compact listing.

use std::io::Write;

use llmgw_shared::configfile;
use llmgw_shared::proto::{self, GetRequest, ResourceKind, Snapshot, credential::Source};
use serde_json::{Value, json};

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output, Table};
use crate::{AdminError, GetArgs, GetKind};

pub(crate) async fn run(
    client: &Client,
    args: &GetArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let request = GetRequest { kind: resource_kind(args.what).into() };
    let response = client.call(request, REQUEST_TIMEOUT, |mut c, r| async move { c.get(r).await }).await?;
    let state = only(args.what, response.state.unwrap_or_default());
    let text = match output {
        Output::Yaml => configfile::to_yaml(&state)?,
        Output::Json => render::json(&to_json(args.what, &state)?)?,
        Output::Table => table(args.what, &state),
    };
    render::write_all(out, &text)
}

fn resource_kind(what: GetKind) -> ResourceKind {
    match what {
        GetKind::Providers => ResourceKind::Provider,
        GetKind::Models => ResourceKind::Model,
        GetKind::Teams => ResourceKind::Team,
        GetKind::Projects => ResourceKind::Project,
        GetKind::Keys => ResourceKind::Key,
        GetKind::All => ResourceKind::Unspecified,
    }
}

/// The sections asked for, whatever the server sent, with any plain credential value replaced
/// by "the stored credential": a listing never prints a secret, even from a server that sent one.
fn only(what: GetKind, mut s: Snapshot) -> Snapshot {
    let keep = |kind: GetKind| what == GetKind::All || what == kind;
    if !keep(GetKind::Providers) {
        s.providers.clear();
    }
    if !keep(GetKind::Models) {
        s.models.clear();
    }
    if !keep(GetKind::Teams) {
        s.teams.clear();
    }
    if !keep(GetKind::Projects) {
        s.projects.clear();
    }
    if !keep(GetKind::Keys) {
        s.keys.clear();
    }
    for credential in s.providers.iter_mut().flat_map(|p| &mut p.credentials) {
        if matches!(credential.source, Some(Source::Value(_))) {
            credential.source = None;
        }
    }
    for key in &mut s.keys {
        key.secret_sha256.clear();
    }
    s
}

/// The config-file format as JSON (the same field names), with `revision`, and each key's
/// `id`, `secret_prefix` and `created_at`.
fn to_json(what: GetKind, s: &Snapshot) -> Result<Value, AdminError> {
    let yaml = configfile::to_yaml(s)?;
    let mut v: Value = serde_yaml_ng::from_str(&yaml).map_err(|e| AdminError::Render(e.to_string()))?;
    let Some(top) = v.as_object_mut() else {
        return Err(AdminError::Render("the config-file form is not a mapping".to_owned()));
    };
    top.insert("revision".to_owned(), json!(s.revision));
    for (section, kind) in [
        ("providers", GetKind::Providers),
        ("models", GetKind::Models),
        ("teams", GetKind::Teams),
        ("projects", GetKind::Projects),
        ("keys", GetKind::Keys),
    ] {
        if what == GetKind::All || what == kind {
            top.entry(section).or_insert_with(|| json!([]));
        }
    }
    if let Some(keys) = top.get_mut("keys").and_then(Value::as_array_mut) {
        for (k, v) in s.keys.iter().zip(keys) {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("id".to_owned(), json!(k.id));
                obj.insert("secret_prefix".to_owned(), json!(k.secret_prefix));
                let created = (k.created_at_unix != 0).then(|| render::time(k.created_at_unix));
                obj.insert("created_at".to_owned(), json!(created));
            }
        }
    }
    Ok(v)
}

fn table(what: GetKind, s: &Snapshot) -> String {
    let sections = [
        ("providers", providers(s)),
        ("models", models(s)),
        ("teams", teams(s)),
        ("projects", projects(s)),
        ("keys", keys(s)),
    ];
    let mut text = String::new();
    for (name, t) in sections.iter().filter(|(_, t)| !t.is_empty()) {
        if what == GetKind::All {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("{}:\n", name.to_uppercase()));
        }
        text.push_str(&t.render());
    }
    if text.is_empty() {
        let what = match what {
            GetKind::All => "resources",
            GetKind::Providers => "providers",
            GetKind::Models => "models",
            GetKind::Teams => "teams",
            GetKind::Projects => "projects",
            GetKind::Keys => "keys",
        };
        text = format!("no {what}\n");
    }
    text
}

fn providers(s: &Snapshot) -> Table {
    let mut t = Table::new(&["NAME", "KIND", "BASE_URL", "CREDENTIALS"]);
    for p in &s.providers {
        let kind = proto::ProviderKind::try_from(p.kind)
            .map_or_else(|_| p.kind.to_string(), |k| render::enum_name(k.as_str_name(), "PROVIDER_KIND_"));
        let credentials: Vec<String> = p
            .credentials
            .iter()
            .map(|c| match &c.source {
                Some(Source::Env(var)) => format!("env:{var}"),
                Some(Source::File(path)) => format!("file:{path}"),
                Some(Source::Value(_)) => "value".to_owned(),
                Some(Source::Sealed(_)) | None => "sealed".to_owned(),
            })
            .collect();
        t.row(vec![p.name.clone(), kind, p.base_url.clone(), credentials.join(", ")]);
    }
    t
}

fn models(s: &Snapshot) -> Table {
    let mut t = Table::new(&["NAME", "STRATEGY", "TARGETS"]);
    for m in &s.models {
        let strategy = match proto::Strategy::try_from(m.strategy) {
            Ok(proto::Strategy::Unspecified) => "priority".to_owned(),
            Ok(k) => render::enum_name(k.as_str_name(), "STRATEGY_"),
            Err(_) => m.strategy.to_string(),
        };
        let targets: Vec<String> = m
            .targets
            .iter()
            .map(|x| {
                let weight = if x.weight > 1 { format!(" (weight {})", x.weight) } else { String::new() };
                format!("{}:{}{weight}", x.provider, x.model)
            })
            .collect();
        t.row(vec![m.name.clone(), strategy, targets.join(", ")]);
    }
    t
}

fn teams(s: &Snapshot) -> Table {
    let mut t = Table::new(&["NAME", "MODELS", "LIMITS", "BUDGET"]);
    for x in &s.teams {
        t.row(vec![x.name.clone(), model_set(x.models.as_ref()), limits(x.limits), budget(x.budget)]);
    }
    t
}

fn projects(s: &Snapshot) -> Table {
    let mut t = Table::new(&["NAME", "TEAM", "MODELS", "LIMITS", "BUDGET"]);
    for x in &s.projects {
        let row = vec![
            x.name.clone(),
            x.team.clone(),
            model_set(x.models.as_ref()),
            limits(x.limits),
            budget(x.budget),
        ];
        t.row(row);
    }
    t
}

fn keys(s: &Snapshot) -> Table {
    let mut t =
        Table::new(&["NAME", "ID", "OWNER", "PREFIX", "MODELS", "LIMITS", "BUDGET", "EXPIRES", "STATUS"]);
    let now = render::now_unix_ms() / 1000;
    for k in &s.keys {
        let owner =
            if k.project.is_empty() { format!("team:{}", k.team) } else { format!("project:{}", k.project) };
        let status = if k.revoked {
            "revoked"
        } else if k.expires_at_unix != 0 && k.expires_at_unix <= now {
            "expired"
        } else {
            "active"
        };
        let expires =
            if k.expires_at_unix == 0 { "never".to_owned() } else { render::time(k.expires_at_unix) };
        t.row(vec![
            k.name.clone(),
            k.id.clone(),
            owner,
            k.secret_prefix.clone(),
            model_set(k.models.as_ref()),
            limits(k.limits),
            budget(k.budget),
            expires,
            status.to_owned(),
        ]);
    }
    t
}

fn model_set(m: Option<&proto::ModelSet>) -> String {
    match m {
        None => "all".to_owned(),
        Some(m) if m.names.is_empty() => "none".to_owned(),
        Some(m) => m.names.join(","),
    }
}

fn limits(l: Option<proto::Limits>) -> String {
    let l = l.unwrap_or_default();
    let parts: Vec<String> = [("rpm", l.rpm), ("tpm", l.tpm)]
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(name, v)| format!("{name} {v}"))
        .collect();
    parts.join(", ")
}

fn budget(b: Option<proto::Budget>) -> String {
    let Some(b) = b else { return String::new() };
    let period = match proto::Period::try_from(b.period) {
        Ok(proto::Period::Unspecified) => "total".to_owned(),
        Ok(p) => render::enum_name(p.as_str_name(), "PERIOD_"),
        Err(_) => b.period.to_string(),
    };
    format!("{}/{period}", render::usd(b.limit_usd))
}

#[cfg(test)]
mod tests;
