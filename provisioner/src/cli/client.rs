//! The CLI's client of the daemon's operator API: finds the daemon (STATE/api-url,
//! STATE/api-token, `--api`, `PROVISIONER_TOKEN`), decodes answers into the
//! views of [`crate::views`] and turns failures into advice.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::daemon;
use crate::views::ErrorBody;

/// A thin client of the daemon's API that turns failures into advice.
#[derive(Debug)]
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    state: PathBuf,
}

impl Client {
    pub(crate) fn new(api: Option<String>, state: &Path) -> anyhow::Result<Client> {
        let base = match api {
            Some(api) => api,
            None => std::fs::read_to_string(state.join(daemon::URL_FILE))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned()),
        };
        let token = match std::env::var("PROVISIONER_TOKEN") {
            Ok(token) => token,
            Err(_) => {
                let path = state.join(daemon::TOKEN_FILE);
                std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).with_context(|| {
                    format!(
                        "no API token: set PROVISIONER_TOKEN, or point --state at the daemon's state \
                         directory (cannot read {})",
                        path.display()
                    )
                })?
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
            state: state.to_owned(),
        })
    }

    /// `GET path`, decoded.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let text = self.call(reqwest::Method::GET, path, None).await?;
        decode(reqwest::Method::GET, path, &text)
    }

    /// `POST path` without a body, decoded.
    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let text = self.call(reqwest::Method::POST, path, None).await?;
        decode(reqwest::Method::POST, path, &text)
    }

    /// `method path` with a JSON body, decoded.
    pub(crate) async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let text = self.call(method.clone(), path, Some(body)).await?;
        decode(method, path, &text)
    }

    /// `DELETE path`; the answer has no body.
    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, path, None).await?;
        Ok(())
    }

    /// Sends a request; the text of a successful answer, else an error that
    /// says what the daemon said and what to do.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|err| {
            if err.is_connect() || err.is_timeout() {
                anyhow::anyhow!(
                    "cannot reach the provisioner daemon at {}: is `provisioner serve` running? \
                     (set --api or PROVISIONER_API for another address)",
                    self.base
                )
            } else {
                anyhow::Error::new(err).context(format!("request to {url} failed"))
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the daemon's answer")?;
        if status.is_success() {
            return Ok(text);
        }
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
            error: if text.is_empty() {
                "(no message)".to_owned()
            } else {
                text.clone()
            },
            hint: None,
            details: vec![],
        });
        let mut message = format!("{} (HTTP {})", body.error, status.as_u16());
        for detail in &body.details {
            message.push_str(&format!("\n  {detail}"));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            message.push_str(&format!(
                "\nthe daemon refused the API token: use the token in {} (or PROVISIONER_TOKEN)",
                self.state.join(daemon::TOKEN_FILE).display()
            ));
        } else if let Some(hint) = &body.hint {
            message.push_str(&format!("\nhint: {hint}"));
        }
        bail!(message)
    }
}

/// Decodes an answer into its view; a mismatch names the field.
fn decode<T: DeserializeOwned>(
    method: reqwest::Method,
    path: &str,
    text: &str,
) -> anyhow::Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "the daemon's answer to {method} {path} is not what this CLI reads ({}{}): are the \
             CLI and the daemon the same version? (`provisioner --version`)",
            if at == "." {
                String::new()
            } else {
                format!("at {at}: ")
            },
            e.inner()
        )
    })
}

/// The API path of a node, its name percent-encoded.
pub(crate) fn node_path(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/nodes/{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatched_answer_names_the_field_and_the_fix() {
        let err = decode::<crate::views::ReloadReport>(
            reqwest::Method::POST,
            "/api/v1/site/reload",
            r#"{"added":[],"updated":[],"missing":[],"unchanged":"three"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("POST /api/v1/site/reload"), "{err}");
        assert!(err.contains("at unchanged: invalid type"), "{err}");
        assert!(err.contains("same version"), "{err}");
    }

    #[test]
    fn node_names_are_percent_encoded() {
        assert_eq!(node_path("node-001"), "/api/v1/nodes/node-001");
        assert_eq!(node_path("a b/c"), "/api/v1/nodes/a%20b%2Fc");
    }
}
