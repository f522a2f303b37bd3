//! Request bodies, one per endpoint format: Distribution's notification
//! envelope, Docker Hub's webhook JSON, and CloudEvents 1.0 (structured).
//! Each also carries berth's own view of the event (its kind, the moved
//! tag's previous digest, the base of a `base.updated`), so nothing is lost
//! in the translation.

use serde::Serialize;
use serde_json::{json, Value};

use crate::meta::events::{Event, Kind, Stored};
use crate::meta::webhooks::{distribution_action, Format};

pub const DISTRIBUTION_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
pub const CLOUDEVENTS_MEDIA_TYPE: &str = "application/cloudevents+json";

/// What a body says about where it came from.
pub struct Context<'a> {
    /// `https` or `http`: how clients reach this registry.
    pub scheme: &'a str,
    /// The serving node's address when a request named no `Host`.
    pub fallback_host: &'a str,
    /// The delivering node's id, Distribution's `source.instanceID`.
    pub instance: &'a str,
}

/// A rendered request body.
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// How many events one request of `format` carries at most.
pub fn batch_limit(format: Format, max_batch: u32) -> usize {
    match format {
        Format::Distribution => max_batch.max(1) as usize,
        Format::Hub | Format::CloudEvents => 1,
    }
}

/// The body of one request carrying `events` (at most [`batch_limit`]).
pub fn render(format: Format, events: &[Stored], ctx: &Context) -> Body {
    let value = match format {
        Format::Distribution => json!({
            "events": events.iter().map(|s| distribution(s, ctx)).collect::<Vec<_>>()
        }),
        Format::Hub => hub(&events[0], ctx),
        Format::CloudEvents => cloud_event(&events[0], ctx),
    };
    let content_type = match format {
        Format::Distribution => DISTRIBUTION_MEDIA_TYPE,
        Format::Hub => "application/json",
        Format::CloudEvents => CLOUDEVENTS_MEDIA_TYPE,
    };
    Body {
        content_type,
        bytes: serde_json::to_vec(&value).expect("JSON values always serialize"),
    }
}

/// The id a receiver sees: `INDEX-POSITION` for an event of the log;
/// `pull-<request id>` for a pull and `test-<request id>` for a test, which
/// are not in the log.
pub fn id_text(s: &Stored) -> String {
    match (s.id.index, s.event.kind) {
        (0, Kind::Pull) => format!("pull-{}", s.event.origin.request_id),
        (0, _) => format!("test-{}", s.event.origin.request_id),
        _ => s.id.to_string(),
    }
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn host<'a>(event: &'a Event, ctx: &'a Context) -> &'a str {
    match event.origin.host.as_str() {
        "" => ctx.fallback_host,
        host => host,
    }
}

/// Where a client fetches what the event is about.
fn target_url(event: &Event, ctx: &Context) -> Option<String> {
    let repo = event.repository.as_ref()?;
    let digest = event.digest.as_ref()?;
    let what = match event.media_type.as_deref() {
        Some("application/octet-stream") => "blobs",
        _ => "manifests",
    };
    Some(format!(
        "{}://{}/v2/{repo}/{what}/{digest}",
        ctx.scheme,
        host(event, ctx)
    ))
}

/// berth's own view of an event: the `data` of a CloudEvent, and the
/// `berth` member of the other formats.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Native<'a> {
    pub id: String,
    pub kind: &'static str,
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub platforms: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a str>,
    pub node: String,
}

pub fn native(s: &Stored) -> Native<'_> {
    let e = &s.event;
    Native {
        id: id_text(s),
        kind: e.kind.name(),
        time: rfc3339(e.origin.at_ms),
        repository: e.repository.as_ref().map(|r| r.to_string()),
        tag: e.tag.as_ref().map(|t| t.as_str()),
        digest: e.digest.as_ref().map(|d| d.as_str()),
        media_type: e.media_type.as_deref(),
        size: e.size,
        previous: e.previous.as_ref().map(|d| d.as_str()),
        platforms: &e.platforms,
        cause: e.cause.map(|c| c.name()),
        base: e.base.as_ref().map(|b| {
            json!({
                "repository": b.repository.to_string(),
                "tag": b.tag.as_str(),
                "previous": b.previous.as_str(),
                "current": b.current.as_str(),
                "matched": b.matched,
            })
        }),
        detail: e.detail.as_deref(),
        actor: e.origin.actor.as_deref(),
        node: format!("{:016x}", e.origin.node),
    }
}

fn distribution(s: &Stored, ctx: &Context) -> Value {
    let e = &s.event;
    let size = e.size.unwrap_or(0);
    let mut target = json!({
        "mediaType": e.media_type.as_deref().unwrap_or(""),
        "size": size,
        "length": size,
        "digest": e.digest.as_ref().map(|d| d.as_str()).unwrap_or(""),
        "repository": e.repository.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        "url": target_url(e, ctx).unwrap_or_default(),
    });
    if let Some(tag) = &e.tag {
        target["tag"] = json!(tag.as_str());
    }
    json!({
        "id": id_text(s),
        "timestamp": rfc3339(e.origin.at_ms),
        "action": distribution_action(e.kind),
        "target": target,
        "request": {
            "id": e.origin.request_id,
            "addr": e.origin.addr,
            "host": host(e, ctx),
            "method": e.origin.method,
            "useragent": e.origin.user_agent,
        },
        "actor": { "name": e.origin.actor.as_deref().unwrap_or("") },
        "source": {
            "addr": ctx.fallback_host,
            "instanceID": ctx.instance,
        },
        "berth": native(s),
    })
}

fn hub(s: &Stored, ctx: &Context) -> Value {
    let e = &s.event;
    let repo = e
        .repository
        .as_ref()
        .map(|r| r.to_string())
        .unwrap_or_default();
    let (namespace, name) = match repo.rsplit_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (String::new(), repo.clone()),
    };
    let base = format!("{}://{}", ctx.scheme, host(e, ctx));
    let pusher = e.origin.actor.as_deref().unwrap_or("");
    json!({
        "callback_url": format!("{base}/_berth/webhooks/callback/{}", id_text(s)),
        "push_data": {
            "pushed_at": e.origin.at_ms / 1000,
            "pusher": pusher,
            "tag": e.tag.as_ref().map(|t| t.as_str()).unwrap_or(""),
            "images": e.digest.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "media_type": e.media_type.as_deref().unwrap_or(""),
        },
        "repository": {
            "comment_count": 0,
            "date_created": e.origin.at_ms / 1000,
            "description": "",
            "dockerfile": "",
            "full_description": "",
            "is_official": false,
            "is_private": true,
            "is_trusted": false,
            "name": name,
            "namespace": namespace,
            "owner": namespace,
            "repo_name": repo,
            "repo_url": format!("{base}/v2/{repo}/"),
            "star_count": 0,
            "status": "Active",
        },
        "berth": native(s),
    })
}

fn cloud_event(s: &Stored, ctx: &Context) -> Value {
    let e = &s.event;
    let source = match &e.repository {
        Some(repo) => format!("/v2/{repo}"),
        None => "/_berth".to_owned(),
    };
    let subject = match (&e.tag, &e.digest) {
        (Some(tag), _) => Some(tag.to_string()),
        (None, Some(digest)) => Some(digest.to_string()),
        (None, None) => None,
    };
    let mut ce = json!({
        "specversion": "1.0",
        "id": id_text(s),
        "source": format!("{}://{}{source}", ctx.scheme, host(e, ctx)),
        "type": format!("berth.{}", e.kind.name()),
        "time": rfc3339(e.origin.at_ms),
        "datacontenttype": "application/json",
        "data": native(s),
    });
    if let Some(subject) = subject {
        ce["subject"] = json!(subject);
    }
    ce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::events::{EventId, Kind, Origin};

    fn stored(kind: Kind) -> Stored {
        let origin = Origin {
            actor: Some("alice".into()),
            node: 7,
            addr: "10.0.0.9:51000".into(),
            host: "registry.example:5000".into(),
            method: "PUT".into(),
            user_agent: "docker/24".into(),
            request_id: "r-1".into(),
            at_ms: 1_700_000_000_123,
        };
        let mut event = Event::new(kind, Some("acme/app".parse().unwrap()), &origin);
        event.tag = Some("v1".parse().unwrap());
        event.digest = Some(
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap(),
        );
        event.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        event.size = Some(512);
        Stored {
            id: EventId {
                index: 42,
                position: 1,
            },
            event,
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            scheme: "https",
            fallback_host: "node1:5000",
            instance: "0000000000000007",
        }
    }

    fn parse(body: &Body) -> Value {
        serde_json::from_slice(&body.bytes).unwrap()
    }

    #[test]
    fn distribution_envelope_carries_the_documented_fields() {
        let body = render(Format::Distribution, &[stored(Kind::Push)], &ctx());
        assert_eq!(body.content_type, DISTRIBUTION_MEDIA_TYPE);
        let v = parse(&body);
        let e = &v["events"][0];
        assert_eq!(e["id"], "42-1");
        assert_eq!(e["action"], "push");
        assert_eq!(e["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["target"]["size"], 512);
        assert_eq!(e["target"]["length"], 512);
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(
            e["target"]["url"],
            "https://registry.example:5000/v2/acme/app/manifests/sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
        assert_eq!(e["request"]["useragent"], "docker/24");
        assert_eq!(e["actor"]["name"], "alice");
        assert_eq!(e["source"]["instanceID"], "0000000000000007");
    }

    #[test]
    fn deletions_are_distribution_deletes_and_other_kinds_keep_their_names() {
        let v = parse(&render(
            Format::Distribution,
            &[stored(Kind::TagDeleted), stored(Kind::BaseUpdated)],
            &ctx(),
        ));
        assert_eq!(v["events"][0]["action"], "delete");
        assert_eq!(v["events"][1]["action"], "base.updated");
        assert_eq!(v["events"][1]["berth"]["kind"], "base.updated");
    }

    #[test]
    fn hub_payload_names_the_repository_and_the_push() {
        let v = parse(&render(Format::Hub, &[stored(Kind::Push)], &ctx()));
        assert_eq!(v["push_data"]["tag"], "v1");
        assert_eq!(v["push_data"]["pusher"], "alice");
        assert_eq!(v["push_data"]["pushed_at"], 1_700_000_000);
        assert_eq!(v["repository"]["repo_name"], "acme/app");
        assert_eq!(v["repository"]["namespace"], "acme");
        assert_eq!(v["repository"]["name"], "app");
    }

    #[test]
    fn cloudevents_have_the_required_attributes() {
        let body = render(Format::CloudEvents, &[stored(Kind::Push)], &ctx());
        assert_eq!(body.content_type, CLOUDEVENTS_MEDIA_TYPE);
        let v = parse(&body);
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "42-1");
        assert_eq!(v["type"], "berth.push");
        assert_eq!(v["source"], "https://registry.example:5000/v2/acme/app");
        assert_eq!(v["subject"], "v1");
        assert_eq!(v["data"]["size"], 512);
        assert_eq!(v["data"]["actor"], "alice");
    }
}
