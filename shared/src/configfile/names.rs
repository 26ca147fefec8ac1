//! What a name may look like, and "did you mean" hints for names that do not resolve.

/// Providers, teams, projects and keys: `[a-z0-9][a-z0-9._-]{0,62}`, so a name is safe in an
/// etcd key, a metric label and a URL path without escaping.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    check(name, 63, |c| c.is_ascii_lowercase(), |c| matches!(c, '.' | '_' | '-'))
        .map_err(|why| format!("invalid name \"{name}\": {why}; names match [a-z0-9][a-z0-9._-]{{0,62}}"))
}

/// Model aliases are what clients send as `model`, so they also take the forms providers use:
/// `gpt-4o`, `meta-llama/Llama-3.1-8B-Instruct`, `llama3:8b`, `claude-3-5-sonnet@20240620`.
pub(super) fn check_alias(name: &str) -> Result<(), String> {
    check(name, 128, |c| c.is_ascii_alphabetic(), |c| matches!(c, '.' | '_' | '-' | '/' | ':' | '@')).map_err(
        |why| {
            format!(
                "invalid model alias \"{name}\": {why}; aliases are letters, digits and . _ - / : @, \
                 starting with a letter or digit, at most 128 characters"
            )
        },
    )
}

/// An upstream model id is passed through as is; it only has to be a plausible token.
pub(super) fn check_upstream_model(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("must not be empty".to_owned())
    } else if id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("invalid upstream model id \"{id}\": no spaces or control characters, at most 256 bytes"))
    } else {
        Ok(())
    }
}

fn check(
    name: &str,
    max: usize,
    letter: impl Fn(char) -> bool,
    punct: impl Fn(char) -> bool,
) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !(letter(c) || c.is_ascii_digit()) => return Err("bad first character"),
        Some(_) => {}
    }
    if name.len() > max {
        return Err("too long");
    }
    if chars.all(|c| letter(c) || c.is_ascii_digit() || punct(c)) { Ok(()) } else { Err("bad character") }
}

/// ` (did you mean "openai"?)` when one of `known` is a likely typo of `name`, else nothing.
pub(super) fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let best =
        known.into_iter().map(|k| (distance(name, k), k)).filter(|(d, k)| *d <= 2.max(k.len() / 4)).min();
    best.map(|(_, k)| format!(" (did you mean \"{k}\"?)")).unwrap_or_default()
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["openai", "local-vllm", "a", "team.search_2", "0"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "OpenAI", "-x", "a b", "a/b", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases() {
        for ok in ["gpt-4o", "meta-llama/Llama-3.1-8B-Instruct", "llama3:8b", "claude@2024"] {
            assert!(check_alias(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "a b", "a\u{e9}"] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("opanai", ["openai", "anthropic"]), " (did you mean \"openai\"?)");
        assert_eq!(did_you_mean("zzz", ["openai"]), "");
    }
}
