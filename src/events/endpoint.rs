//! An endpoint as an operator describes it (admin API, CLI or config
//! file), checked and turned into the [`Endpoint`] the metadata keeps. One
//! place decides what a valid endpoint is, whichever way it arrives.

use serde::{Deserialize, Serialize};

use super::guard;
use crate::meta::access::Resource;
use crate::meta::events::Kind;
use crate::meta::webhooks::{Endpoint, Format, Retry, Source};

pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_BATCH: u32 = 100;
const MAX_HEADERS: usize = 16;

/// What an operator gives for an endpoint. Absent fields take defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EndpointSpec {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub format: Option<String>,
    /// Event kinds (see [`Kind::parse_list`]); every kind but `pull` when
    /// absent.
    #[serde(default)]
    pub events: Option<String>,
    /// Repositories and `namespace/*`; every repository when empty
    /// (administrators only).
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
    /// `Name: value` lines.
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    #[serde(default)]
    pub max_batch: Option<u32>,
    #[serde(default)]
    pub allow_internal: bool,
    #[serde(default)]
    pub ignored_media_types: Vec<String>,
    #[serde(default)]
    pub ignored_actions: Vec<String>,
}

/// Ids are short and safe in a URL path and a log line.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "webhook id {id:?} must be 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )),
    }
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    value: T,
    low: T,
    high: T,
) -> Result<T, String> {
    match value >= low && value <= high {
        true => Ok(value),
        false => Err(format!(
            "{what} must be between {low} and {high}, not {value}"
        )),
    }
}

impl EndpointSpec {
    /// The endpoint this describes, or why it is not valid.
    pub fn build(self, source: Source, now: u64) -> Result<Endpoint, String> {
        check_id(&self.id)?;
        guard::check_url(&self.url, self.allow_internal)?;
        let format = match &self.format {
            Some(f) => f.parse::<Format>()?,
            None => Format::default(),
        };
        let events = match &self.events {
            Some(list) => Kind::parse_list(list)?,
            None => Kind::parse_list("all")?,
        };
        if events.is_empty() {
            return Err("an endpoint needs at least one event kind".into());
        }
        let mut repositories = Vec::new();
        for scope in &self.repositories {
            let name = scope.strip_suffix("/*").unwrap_or(scope);
            if name.parse::<crate::oci::RepoName>().is_err() {
                return Err(format!(
                    "{scope:?} is neither a repository name nor NAMESPACE/*"
                ));
            }
            repositories.push(Resource::from_scope(scope));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} headers"));
        }
        let mut headers = Vec::new();
        for line in &self.headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header {line:?} is not `Name: value`"))?;
            let (name, value) = (name.trim(), value.trim());
            http::HeaderName::try_from(name)
                .map_err(|_| format!("{name:?} is not a header name"))?;
            http::HeaderValue::try_from(value)
                .map_err(|_| format!("the value of header {name} is not valid"))?;
            headers.push((name.to_owned(), value.to_owned()));
        }
        if let Some(secret) = &self.secret {
            if secret.len() < 16 {
                return Err("a signing secret needs at least 16 characters".into());
            }
        }
        let defaults = Retry::default();
        let backoff_ms = within(
            "backoff",
            self.backoff_ms.unwrap_or(defaults.backoff_ms),
            10,
            3_600_000,
        )?;
        let retry = Retry {
            attempts: within(
                "attempts",
                self.attempts.unwrap_or(defaults.attempts),
                1,
                100,
            )?,
            backoff_ms,
            max_backoff_ms: within(
                "max backoff",
                self.max_backoff_ms
                    .unwrap_or(defaults.max_backoff_ms.max(backoff_ms)),
                backoff_ms,
                86_400_000,
            )?,
        };
        Ok(Endpoint {
            id: self.id,
            url: self.url,
            format,
            events,
            repositories,
            secret: self.secret,
            headers,
            timeout_ms: within(
                "timeout",
                self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                100,
                120_000,
            )?,
            retry,
            ignored_media_types: self.ignored_media_types,
            ignored_actions: self.ignored_actions,
            max_batch: within(
                "max batch",
                self.max_batch.unwrap_or(DEFAULT_MAX_BATCH),
                1,
                1000,
            )?,
            allow_internal: self.allow_internal,
            source,
            created: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> EndpointSpec {
        EndpointSpec {
            id: "ci".into(),
            url: url.into(),
            ..EndpointSpec::default()
        }
    }

    fn api() -> Source {
        Source::Api { by: "alice".into() }
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let e = spec("https://ci.example.com/hook")
            .build(api(), 10)
            .unwrap();
        assert_eq!(e.format, Format::Distribution);
        assert!(!e.events.contains(&Kind::Pull));
        assert!(e.events.contains(&Kind::BaseUpdated));
        assert_eq!(e.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(e.retry, Retry::default());
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = spec("https://ci.example.com/hook");
        s.id = "Bad Id".into();
        assert!(s.build(api(), 0).unwrap_err().contains("webhook id"));
        let mut s = spec("https://ci.example.com/hook");
        s.events = Some("push,explode".into());
        assert!(s.build(api(), 0).unwrap_err().contains("explode"));
        let mut s = spec("https://ci.example.com/hook");
        s.repositories = vec!["Not A Repo".into()];
        assert!(s.build(api(), 0).unwrap_err().contains("NAMESPACE/*"));
        let mut s = spec("https://ci.example.com/hook");
        s.headers = vec!["no colon".into()];
        assert!(s.build(api(), 0).unwrap_err().contains("Name: value"));
        let mut s = spec("https://ci.example.com/hook");
        s.secret = Some("short".into());
        assert!(s.build(api(), 0).unwrap_err().contains("16"));
        let mut s = spec("https://ci.example.com/hook");
        s.timeout_ms = Some(10);
        assert!(s.build(api(), 0).unwrap_err().contains("timeout"));
        let err = spec("http://127.0.0.1:8080/").build(api(), 0).unwrap_err();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn scopes_and_headers_are_kept() {
        let mut s = spec("https://ci.example.com/hook");
        s.repositories = vec!["acme/*".into(), "other/app".into()];
        s.headers = vec!["Authorization: Bearer x".into()];
        s.events = Some("push,delete".into());
        let e = s.build(api(), 0).unwrap();
        assert_eq!(
            e.repositories,
            vec![
                Resource::Namespace("acme".into()),
                Resource::Repository("other/app".into())
            ]
        );
        assert_eq!(e.headers, vec![("Authorization".into(), "Bearer x".into())]);
        assert_eq!(
            e.events,
            vec![Kind::Push, Kind::TagDeleted, Kind::ManifestDeleted]
        );
    }
}
