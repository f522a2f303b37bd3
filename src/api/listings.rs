//! Tag list, catalog and referrers.

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, LINK};
use http::HeaderValue;

use super::headers::{value, OCI_FILTERS_APPLIED};
use super::params::Params;
use crate::meta::Page;
use crate::oci::{media, Digest, RepoName};
use crate::registry::{Error, Registry};

pub async fn tags(reg: &Registry, repo: &RepoName, params: &Params) -> Result<Response, Error> {
    let (n, last) = params.page()?;
    let page = reg.tags(repo, last, n).await?;
    let link = next_link(&format!("/v2/{repo}/tags/list"), n, &page);
    let body = serde_json::json!({ "name": repo, "tags": page.items });
    Ok(json(body, link))
}

/// The repositories `visible` admits.
pub async fn catalog(
    reg: &Registry,
    params: &Params,
    visible: impl Fn(&str) -> bool,
) -> Result<Response, Error> {
    let (n, last) = params.page()?;
    let page = reg.catalog(last, n, visible).await?;
    let link = next_link("/v2/_catalog", n, &page);
    Ok(json(
        serde_json::json!({ "repositories": page.items }),
        link,
    ))
}

pub async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
    params: &Params,
) -> Result<Response, Error> {
    let filter = params.get("artifactType").filter(|t| !t.is_empty());
    let manifests = reg.referrers(repo, subject, filter).await?;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = json(body, None);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(media::OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

/// `Link: <path?n=…&last=…>; rel="next"` when the page was not the last.
fn next_link(path: &str, n: usize, page: &Page) -> Option<HeaderValue> {
    let last = page.items.last().filter(|_| page.more)?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    Some(value(format!("<{path}?{query}>; rel=\"next\"")))
}

fn json(body: serde_json::Value, link: Option<HeaderValue>) -> Response {
    let mut resp = ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(link) = link {
        resp.headers_mut().insert(LINK, link);
    }
    resp
}
