//! The one client of a node's admin API (`/_berth/…`) that every command
//! shares. It signs in as `--login` or with the cluster secret, trusts
//! `--ca-cert`, and turns a refusal into the node's own error message.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::CliResult;
use crate::api::admin::SECRET_HEADER;

/// How to reach a node and prove the caller may change access.
#[derive(Debug, Args)]
pub struct Connection {
    /// The node to ask (its client API URL); any node will do.
    #[arg(
        long,
        env = "BERTH_NODE",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    pub node: String,
    /// Sign in as this user (an administrator, or an owner of the
    /// organization changed); the password is read from BERTH_PASSWORD.
    #[arg(long, env = "BERTH_USER", value_name = "USER", global = true)]
    pub login: Option<String>,
    /// Or authorize with the cluster secret in this file: how the first
    /// administrator is made.
    #[arg(
        long,
        env = "BERTH_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        global = true
    )]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM certificate of the CA that signed an HTTPS node's certificate.
    #[arg(long, env = "BERTH_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
}

impl Connection {
    /// `--login` with the password from BERTH_PASSWORD, read now so that a
    /// missing one fails before anything is sent.
    pub fn login(&self) -> CliResult<Option<(String, String)>> {
        match &self.login {
            Some(user) => {
                let password = std::env::var("BERTH_PASSWORD")
                    .map_err(|_| "--login needs the password in BERTH_PASSWORD")?;
                Ok(Some((user.clone(), password)))
            }
            None => Ok(None),
        }
    }

    /// `http` trusting `--ca-cert` too, when given.
    pub fn trusting(&self, http: reqwest::ClientBuilder) -> CliResult<reqwest::ClientBuilder> {
        let Some(ca) = &self.ca_cert else {
            return Ok(http);
        };
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        Ok(http.add_root_certificate(cert))
    }

    /// `node`, asked with no credentials and the system's CAs; a command
    /// with flags of its own adds what it takes.
    pub fn to(node: String) -> Self {
        Connection {
            node,
            login: None,
            cluster_secret_file: None,
            ca_cert: None,
        }
    }
}

/// A node's admin API. Paths start with `/`, e.g. `/_berth/access`.
pub struct Client {
    http: reqwest::Client,
    node: String,
    secret: Option<String>,
    login: Option<(String, String)>,
}

impl Client {
    /// Reads the CA certificate, the cluster secret and BERTH_PASSWORD now,
    /// so a missing file or password fails before anything is sent.
    pub fn new(conn: &Connection) -> CliResult<Self> {
        Client::with_timeout(conn, Duration::from_secs(30))
    }

    /// Like [`Client::new`], for requests that may take longer than 30 s.
    pub fn with_timeout(conn: &Connection, timeout: Duration) -> CliResult<Self> {
        let http = conn.trusting(reqwest::Client::builder().timeout(timeout))?;
        let secret = match &conn.cluster_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let login = conn.login()?;
        Ok(Client {
            http: http.build()?,
            node: conn.node.clone(),
            secret,
            login,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        answer(self.request(Method::GET, path).send().await?).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> CliResult<T> {
        answer(self.request(Method::POST, path).json(body).send().await?).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> CliResult<T> {
        answer(self.request(Method::PUT, path).json(body).send().await?).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        answer(self.request(Method::DELETE, path).send().await?).await
    }

    /// The response to `GET path` with its body unread, for downloads; a
    /// refusal is an error as for the other calls.
    pub async fn get_raw(&self, path: &str) -> CliResult<Response> {
        let resp = self.request(Method::GET, path).send().await?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        Ok(resp)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, url(&self.node, path));
        if let Some(secret) = &self.secret {
            req = req.header(SECRET_HEADER, secret);
        }
        if let Some((user, password)) = &self.login {
            req = req.basic_auth(user, Some(password));
        }
        req
    }
}

/// `path` on `node`, whether or not the node's URL ends in `/`.
pub fn url(node: &str, path: &str) -> String {
    format!("{}{path}", node.trim_end_matches('/'))
}

/// The decoded body of a success, or the status and OCI error message of a
/// refusal. An empty body (`204 No Content`) reads as JSON `null`, so `()`
/// and `Option<_>` take it.
async fn answer<T: DeserializeOwned>(resp: Response) -> CliResult<T> {
    if !resp.status().is_success() {
        return Err(refusal(resp).await);
    }
    let url = resp.url().clone();
    let bytes = resp.bytes().await?;
    let json: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(json).map_err(|e| format!("{url}: unexpected answer: {e}").into())
}

/// The status and OCI error message of a refusal.
async fn refusal(resp: Response) -> Box<dyn std::error::Error> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["errors"][0]["message"]
        .as_str()
        .unwrap_or("no error message");
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            " (sign in with --login USER and the password in BERTH_PASSWORD, or give --cluster-secret-file)"
        }
        _ => "",
    };
    format!("{status}: {message}{hint}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        http::Response::builder()
            .status(status)
            .body(body.to_owned())
            .unwrap()
            .into()
    }

    #[tokio::test]
    async fn answers_decode_and_refusals_carry_the_nodes_message() {
        let shown: serde_json::Value = answer(response(200, r#"{"secret":"s"}"#)).await.unwrap();
        assert_eq!(shown["secret"], "s");
        let () = answer(response(204, "")).await.unwrap();
        let refused = r#"{"errors":[{"code":"DENIED","message":"not an owner"}]}"#;
        let e = answer::<()>(response(403, refused)).await.unwrap_err();
        assert_eq!(e.to_string(), "403 Forbidden: not an owner");
        let e = answer::<()>(response(401, ""))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("401 Unauthorized: no error message (sign in with --login"),
            "{e}"
        );
        assert_eq!(
            url("http://n:5000/", "/_berth/gc"),
            "http://n:5000/_berth/gc"
        );
    }
}
