//! The Redfish driver: a thin typed client on reqwest + serde_json.
//!
//! It reads only the fields it needs and tolerates the rest: missing or extra fields, no
//! `Members@odata.count`, no `BootSourceOverrideMode`, `If-Match` required or not, no
//! SessionService (Basic authentication then). Every resource is reached by following
//! `@odata.id` links from the service root and Action `target`s, never by building paths.
//!
//! Invariants: the password and the session token are [`Secret`]s and never reach a log
//! line or an error; requests are bounded by the configured timeout and never retried after
//! one (so a hung BMC costs one timeout, not several); 5xx answers and connection errors are
//! retried with exponential back-off; a BMC's answer never makes this module panic.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Bmc, BmcConfig, BmcError, BootDevice, BootMode, BootOverride, Credentials, Drive, Inventory,
    MemoryModule, Nic, PcieDevice, PowerAction, PowerState, Processor, Secret, TlsPolicy,
};
use crate::site::BmcUrl;

/// The service root every Redfish service has.
const SERVICE_ROOT: &str = "/redfish/v1/";
/// Guard against a BMC whose collection `nextLink`s loop.
const MAX_PAGES: usize = 100;
/// At most this much of an unparsable body goes into an error.
const BODY_EXCERPT: usize = 200;

#[derive(Debug)]
enum Auth {
    /// No credentials configured (lab emulators only).
    Anonymous,
    /// HTTP Basic on every request (the BMC has no usable SessionService).
    Basic,
    /// A Redfish session: `X-Auth-Token`, deleted at `location` on close.
    Session {
        token: Secret,
        location: Option<String>,
    },
    /// Closed or not logged in yet: the next request logs in.
    LoggedOut,
}

/// One answer, read completely.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A connected Redfish BMC, bound to one system.
#[derive(Debug)]
pub struct RedfishBmc {
    url: BmcUrl,
    /// `url` as text, for messages.
    name: String,
    base: String,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    /// Where sessions are created, when the service has a SessionService.
    sessions: Option<String>,
    auth: Mutex<Auth>,
    /// The system resource this driver acts on.
    system: String,
}

/// What to do with a 5xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Retry 5xx and connection errors (the default).
    Yes,
    /// Return 5xx at once; still retry connection errors. For optional inventory sections,
    /// which some services answer with a permanent 500.
    NotOn5xx,
}

fn s(value: &Value) -> Option<String> {
    value
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn u(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn link(value: &Value) -> Option<String> {
    s(&value["@odata.id"])
}

/// The BMC's own words from an error body: `@Message.ExtendedInfo` messages (with their
/// resolutions), else `error.message`, else an excerpt of the body.
pub(crate) fn bmc_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            return "(empty body)".to_owned();
        }
        return text.chars().take(BODY_EXCERPT).collect();
    };
    let error = &value["error"];
    let mut messages = vec![];
    for info in [
        &error["@Message.ExtendedInfo"],
        &value["@Message.ExtendedInfo"],
    ] {
        for item in info.as_array().into_iter().flatten() {
            if let Some(message) = s(&item["Message"]) {
                match s(&item["Resolution"]) {
                    Some(resolution) => messages.push(format!("{message} ({resolution})")),
                    None => messages.push(message),
                }
            }
        }
    }
    if messages.is_empty()
        && let Some(message) = s(&error["message"])
    {
        messages.push(message);
    }
    if messages.is_empty() {
        return value.to_string().chars().take(BODY_EXCERPT).collect();
    }
    messages.join("; ")
}

/// The Redfish `ResetType`s that perform `action`, best first.
fn reset_types(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::GracefulOff => &["GracefulShutdown"],
        PowerAction::ForceOff => &["ForceOff"],
        PowerAction::Reset => &["ForceRestart", "PowerCycle"],
        PowerAction::Cycle => &["PowerCycle"],
    }
}

/// The `ResetType` to send: the first of [`reset_types`] the BMC allows (all are allowed
/// when it does not say).
pub(crate) fn choose_reset_type(
    action: PowerAction,
    allowed: Option<&[String]>,
) -> Option<&'static str> {
    let wanted = reset_types(action);
    match allowed {
        None => wanted.first().copied(),
        Some(allowed) => wanted
            .iter()
            .copied()
            .find(|w| allowed.iter().any(|a| a == w)),
    }
}

/// Parses `PowerState`.
pub(crate) fn parse_power_state(value: &str) -> Option<PowerState> {
    match value {
        "On" => Some(PowerState::On),
        "Off" => Some(PowerState::Off),
        "PoweringOn" => Some(PowerState::PoweringOn),
        "PoweringOff" => Some(PowerState::PoweringOff),
        // Paused is powered, just halted.
        "Paused" => Some(PowerState::On),
        _ => None,
    }
}

/// The PATCH body for a boot override, given the system's current `Boot` object (which
/// says whether the BMC knows `BootSourceOverrideMode` and which targets it allows).
pub(crate) fn boot_patch(boot: BootOverride, current: &Value) -> Result<Value, String> {
    let target = match boot.device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Http => "UefiHttp",
    };
    if boot.device == BootDevice::Http && boot.mode == BootMode::Legacy {
        return Err("HTTP boot exists only in UEFI mode; drop --legacy".to_owned());
    }
    let mode = match boot.mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "Legacy",
    };
    // The allowed targets describe the *current* mode (sushy-tools drops UefiHttp in
    // Legacy mode): when the mode changes too, let the BMC judge the pair.
    let mode_changes = current["BootSourceOverrideMode"]
        .as_str()
        .is_some_and(|m| m != mode);
    if let Some(allowed) = current["BootSourceOverrideTarget@Redfish.AllowableValues"].as_array()
        && !mode_changes
        && !allowed.iter().any(|a| a.as_str() == Some(target))
    {
        let allowed: Vec<_> = allowed.iter().filter_map(Value::as_str).collect();
        return Err(format!(
            "boot target {target} (the BMC allows {})",
            allowed.join(", ")
        ));
    }
    let mut patch = json!({
        "BootSourceOverrideTarget": target,
        "BootSourceOverrideEnabled": if boot.persistent { "Continuous" } else { "Once" },
    });
    if current.get("BootSourceOverrideMode").is_some() {
        patch["BootSourceOverrideMode"] = json!(mode);
    } else if boot.mode == BootMode::Legacy {
        return Err(
            "choosing legacy boot mode (the BMC has no BootSourceOverrideMode); set the mode \
             in the firmware setup and leave out --legacy"
                .to_owned(),
        );
    }
    Ok(json!({ "Boot": patch }))
}

/// The path part of a link: `@odata.id`s are paths, but some BMCs write absolute URLs.
/// Only the path is kept, so a BMC can never send our credentials to another host.
fn path_of(link: &str) -> &str {
    for scheme in ["https://", "http://"] {
        if let Some(rest) = link.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    link
}

/// What makes two HTTP clients different: the roots they trust (the CA file's bytes, so
/// a changed file gets a new client).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    WebPki,
    Ca(Vec<u8>),
    Insecure,
}

type ClientCache = HashMap<(ClientKey, Duration), reqwest::Client>;

static CLIENTS: OnceLock<Mutex<ClientCache>> = OnceLock::new();

/// The process's HTTP client for `key` and `timeout`, built on first use.
fn shared_client(
    key: ClientKey,
    timeout: Duration,
    tls: &TlsPolicy,
) -> Result<reqwest::Client, String> {
    let cache = CLIENTS.get_or_init(Mutex::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = cache.get(&(key.clone(), timeout)) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("provisioner/", env!("CARGO_PKG_VERSION")));
    match &key {
        ClientKey::WebPki => {}
        ClientKey::Ca(pem) => {
            let path = match tls {
                TlsPolicy::CaFile(path) => path.display().to_string(),
                _ => "the CA file".to_owned(),
            };
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("CA file {path} is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("CA file {path} holds no certificate"));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        ClientKey::Insecure => builder = builder.danger_accept_invalid_certs(true),
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    cache.insert((key, timeout), client.clone());
    Ok(client)
}

impl RedfishBmc {
    /// Connects: reads the service root, logs in (session, else Basic), finds the system.
    pub async fn connect(config: BmcConfig) -> Result<RedfishBmc, BmcError> {
        let name = config.url.to_string();
        let base = config
            .url
            .http_base()
            .ok_or_else(|| BmcError::NotSupported {
                bmc: name.clone(),
                what: "this is not a Redfish URL; use redfish:// or redfish+http://".to_owned(),
            })?;
        let tls_err = |detail: String| BmcError::Tls {
            bmc: name.clone(),
            detail,
        };
        // One HTTP client (connection pool, TLS configuration) per TLS policy and timeout,
        // shared by every driver in the process: 200 BMCs do not need 200 pools.
        let key = match &config.tls {
            TlsPolicy::WebPki => ClientKey::WebPki,
            TlsPolicy::CaFile(path) => ClientKey::Ca(
                std::fs::read(path)
                    .map_err(|e| tls_err(format!("cannot read CA file {}: {e}", path.display())))?,
            ),
            TlsPolicy::Insecure => {
                if matches!(config.url.kind, crate::site::BmcKind::Redfish { tls: true }) {
                    tracing::warn!(bmc = %name, "TLS certificate NOT verified (insecure asked for)");
                }
                ClientKey::Insecure
            }
        };
        let http = shared_client(key, config.timeout, &config.tls).map_err(tls_err)?;
        let mut bmc = RedfishBmc {
            url: config.url.clone(),
            name,
            base,
            http,
            auth: Mutex::new(if config.credentials.is_some() {
                Auth::LoggedOut
            } else {
                Auth::Anonymous
            }),
            credentials: config.credentials,
            retries: config.retries,
            backoff: config.backoff,
            timeout: config.timeout,
            sessions: None,
            system: String::new(),
        };
        // The service root answers without authentication (Redfish spec); read it bare.
        let root = bmc
            .send(
                Method::GET,
                SERVICE_ROOT,
                None,
                None,
                Retry::Yes,
                "reading the service root",
                false,
            )
            .await?;
        let root = bmc.json_of(root, "reading the service root")?;
        bmc.sessions = match link(&root["Links"]["Sessions"]) {
            Some(sessions) => Some(sessions),
            None => match link(&root["SessionService"]) {
                Some(service) => match bmc.get(&service, "reading the SessionService").await {
                    Ok(service) => link(&service["Sessions"]),
                    Err(e) => {
                        tracing::debug!(bmc = %bmc.name, error = %e, "no usable SessionService");
                        None
                    }
                },
                None => None,
            },
        };
        bmc.system = match &bmc.url.system_path {
            Some(path) => path.clone(),
            None => {
                let systems = link(&root["Systems"]).ok_or_else(|| BmcError::NotSupported {
                    bmc: bmc.name.clone(),
                    what: "the service root has no Systems collection".to_owned(),
                })?;
                let mut members = bmc
                    .members(&systems, "listing the systems", Retry::Yes)
                    .await?;
                match members.len() {
                    1 => members.remove(0),
                    0 => {
                        return Err(BmcError::NotSupported {
                            bmc: bmc.name.clone(),
                            what: "the Systems collection is empty: no computer system to manage"
                                .to_owned(),
                        });
                    }
                    _ => {
                        return Err(BmcError::AmbiguousSystem {
                            bmc: bmc.name.clone(),
                            systems: members,
                        });
                    }
                }
            }
        };
        Ok(bmc)
    }

    /// The system resource this driver acts on (the tests check which one it picked).
    #[cfg(test)]
    fn system(&self) -> &str {
        &self.system
    }

    /// True when the driver holds a Redfish session (false: Basic or anonymous).
    pub fn uses_session(&self) -> bool {
        matches!(*self.lock_auth(), Auth::Session { .. })
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs in: a session when the service offers one, else Basic on every request.
    async fn login(&self) -> Result<(), BmcError> {
        let Some(credentials) = &self.credentials else {
            *self.lock_auth() = Auth::Anonymous;
            return Ok(());
        };
        if let Some(sessions) = &self.sessions {
            let body = json!({
                "UserName": credentials.username,
                "Password": credentials.password.expose(),
            });
            let reply = self
                .send(
                    Method::POST,
                    sessions,
                    Some(&body),
                    None,
                    Retry::Yes,
                    "creating a session",
                    false,
                )
                .await?;
            let status = reply.status;
            if status.is_success() {
                let token = reply
                    .header("x-auth-token")
                    .ok_or_else(|| BmcError::Protocol {
                        bmc: self.name.clone(),
                        what: "creating a session".to_owned(),
                        detail: "no X-Auth-Token header in the answer".to_owned(),
                    })?;
                let location = reply.header("location").or_else(|| {
                    serde_json::from_slice::<Value>(&reply.body)
                        .ok()
                        .and_then(|v| link(&v))
                });
                *self.lock_auth() = Auth::Session {
                    token: Secret::new(token),
                    location: location.map(|l| path_of(&l).to_owned()),
                };
                return Ok(());
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(self.auth_error(&reply));
            }
            // Some services list a SessionService that does not work (404, 405, 501...):
            // Basic still works there.
            tracing::debug!(bmc = %self.name, status = status.as_u16(),
                "session creation refused; using Basic authentication");
        }
        *self.lock_auth() = Auth::Basic;
        Ok(())
    }

    fn auth_error(&self, reply: &Reply) -> BmcError {
        BmcError::Auth {
            bmc: self.name.clone(),
            detail: format!(
                "HTTP {}: {}",
                reply.status.as_u16(),
                bmc_message(&reply.body)
            ),
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &*self.lock_auth() {
            Auth::Session { token, .. } => match HeaderValue::from_str(token.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header("X-Auth-Token", value)
                }
                Err(_) => request,
            },
            Auth::Basic => match &self.credentials {
                Some(c) => request.basic_auth(&c.username, Some(c.password.expose())),
                None => request,
            },
            Auth::Anonymous | Auth::LoggedOut => request,
        }
    }

    fn connection_error(&self, err: &reqwest::Error, what: &str) -> BmcError {
        if err.is_timeout() {
            return BmcError::Timeout {
                bmc: self.name.clone(),
                what: what.to_owned(),
                timeout: self.timeout,
            };
        }
        // The chain of causes, which is where rustls and the OS say what went wrong.
        let mut detail = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(err);
        while let Some(e) = source {
            let text = e.to_string();
            if !detail.contains(&text) {
                if !detail.is_empty() {
                    detail.push_str(": ");
                }
                detail.push_str(&text);
            }
            source = e.source();
        }
        let lower = detail.to_ascii_lowercase();
        if lower.contains("invalidcontenttype") {
            return BmcError::Tls {
                bmc: self.name.clone(),
                detail: "the BMC does not speak TLS on this port (plain HTTP? then the URL is \
                         redfish+http://)"
                    .to_owned(),
            };
        }
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            return BmcError::Tls {
                bmc: self.name.clone(),
                detail: format!(
                    "{detail}; give the site CA with --ca-file (or --insecure, explicitly, for a lab)"
                ),
            };
        }
        BmcError::Unreachable {
            bmc: self.name.clone(),
            detail: format!("{what}: {detail}"),
        }
    }

    /// Sends one request with retries. `authenticated`: log in first when needed, and log
    /// in again once when a session answers 401 (sessions expire).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        retry: Retry,
        what: &str,
        authenticated: bool,
    ) -> Result<Reply, BmcError> {
        let url = format!("{}{}", self.base, path_of(path));
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            let logged_out = matches!(*self.lock_auth(), Auth::LoggedOut);
            if authenticated && logged_out {
                // Boxed: `login` itself sends (unauthenticated) requests.
                Box::pin(self.login()).await?;
            }
            let mut request = self.http.request(method.clone(), &url);
            if authenticated {
                request = self.authorize(request);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(etag) = if_match {
                request = request.header("If-Match", etag);
            }
            let result = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.bytes().await.map(|body| Reply {
                        status,
                        headers,
                        body: body.to_vec(),
                    })
                }
                Err(e) => Err(e),
            };
            let retryable = match &result {
                Ok(reply) => retry == Retry::Yes && reply.status.is_server_error(),
                // Connection trouble is worth another try; a timeout or a certificate
                // that does not verify is not.
                Err(e) => {
                    !e.is_timeout()
                        && (e.is_connect() || e.is_request() || e.is_body())
                        && matches!(self.connection_error(e, what), BmcError::Unreachable { .. })
                }
            };
            let in_session = matches!(*self.lock_auth(), Auth::Session { .. });
            if let Ok(reply) = &result
                && authenticated
                && reply.status == StatusCode::UNAUTHORIZED
                && !relogged
                && in_session
            {
                relogged = true;
                *self.lock_auth() = Auth::LoggedOut;
                continue;
            }
            if retryable && attempt < self.retries {
                let delay = self.backoff * 2u32.saturating_pow(attempt);
                // Info, not debug: an operator wants to see a BMC that needs retries.
                let outcome = match &result {
                    Ok(reply) => reply.status.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(bmc = %self.name, what, attempt = attempt + 1, %outcome, ?delay,
                    "BMC request failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
            return result.map_err(|e| self.connection_error(&e, what));
        }
    }

    fn json_of(&self, reply: Reply, what: &str) -> Result<Value, BmcError> {
        if !reply.status.is_success() {
            return Err(self.status_error(&reply, what));
        }
        serde_json::from_slice(&reply.body).map_err(|e| BmcError::Protocol {
            bmc: self.name.clone(),
            what: what.to_owned(),
            detail: format!(
                "malformed JSON ({e}), starting with {:?}",
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(60)
                    .collect::<String>()
            ),
        })
    }

    /// Maps a non-success answer to an error: one exhaustive place.
    fn status_error(&self, reply: &Reply, what: &str) -> BmcError {
        let message = bmc_message(&reply.body);
        match reply.status {
            StatusCode::UNAUTHORIZED => self.auth_error(reply),
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => BmcError::NotSupported {
                bmc: self.name.clone(),
                what: format!("{what} (HTTP {}: {message})", reply.status.as_u16()),
            },
            status => BmcError::Refused {
                bmc: self.name.clone(),
                what: what.to_owned(),
                code: format!("HTTP {}", status.as_u16()),
                message,
            },
        }
    }

    async fn get_with(
        &self,
        path: &str,
        what: &str,
        retry: Retry,
    ) -> Result<(Value, Option<String>), BmcError> {
        let reply = self
            .send(Method::GET, path, None, None, retry, what, true)
            .await?;
        let etag = reply.header("etag");
        let value = self.json_of(reply, what)?;
        let etag = etag.or_else(|| s(&value["@odata.etag"]));
        Ok((value, etag))
    }

    async fn get(&self, path: &str, what: &str) -> Result<Value, BmcError> {
        Ok(self.get_with(path, what, Retry::Yes).await?.0)
    }

    /// The member links of a collection, following `Members@odata.nextLink` pages.
    async fn members(&self, path: &str, what: &str, retry: Retry) -> Result<Vec<String>, BmcError> {
        let mut out = vec![];
        let mut next = Some(path.to_owned());
        for _ in 0..MAX_PAGES {
            let Some(page) = next.take() else { break };
            let (value, _) = self.get_with(&page, what, retry).await?;
            let members = value["Members"]
                .as_array()
                .ok_or_else(|| BmcError::Protocol {
                    bmc: self.name.clone(),
                    what: what.to_owned(),
                    detail: format!("{page} is not a collection (no Members array)"),
                })?;
            out.extend(members.iter().filter_map(link));
            next = s(&value["Members@odata.nextLink"]);
        }
        Ok(out)
    }

    async fn system_resource(&self, what: &str) -> Result<(Value, Option<String>), BmcError> {
        self.get_with(&self.system, what, Retry::Yes).await
    }

    fn parse_power(&self, system: &Value) -> Result<PowerState, BmcError> {
        let raw = &system["PowerState"];
        raw.as_str()
            .and_then(parse_power_state)
            .ok_or_else(|| BmcError::Protocol {
                bmc: self.name.clone(),
                what: "reading the power state".to_owned(),
                detail: format!("PowerState is {raw}, expected On, Off, PoweringOn or PoweringOff"),
            })
    }

    /// The allowed `ResetType`s: inline `@Redfish.AllowableValues`, else the ActionInfo
    /// resource, else unknown (`None`: try the preferred one).
    async fn allowed_reset_types(&self, action: &Value) -> Option<Vec<String>> {
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array()
                .map(|a| a.iter().filter_map(s).collect::<Vec<_>>())
        };
        if let Some(allowed) = strings(&action["ResetType@Redfish.AllowableValues"]) {
            return Some(allowed);
        }
        let info = s(&action["@Redfish.ActionInfo"])?;
        let info = self.get(&info, "reading the reset ActionInfo").await.ok()?;
        info["Parameters"]
            .as_array()?
            .iter()
            .find(|p| p["Name"] == "ResetType")
            .and_then(|p| strings(&p["AllowableValues"]))
    }

    /// Reads every member of the collection `system[key]` with `parse`; failures become
    /// warnings.
    async fn section<T>(
        &self,
        collection: Option<String>,
        what: &str,
        warnings: &mut Vec<String>,
        parse: impl Fn(&Value) -> T,
    ) -> Vec<T> {
        let Some(collection) = collection else {
            return vec![];
        };
        let members = match self.members(&collection, what, Retry::NotOn5xx).await {
            Ok(m) => m,
            Err(e) => {
                warnings.push(e.to_string());
                return vec![];
            }
        };
        let mut out = vec![];
        for member in members {
            match self.get_with(&member, what, Retry::NotOn5xx).await {
                Ok((value, _)) => out.push(parse(&value)),
                Err(e) => warnings.push(format!("{what} {member}: {e}")),
            }
        }
        out
    }

    async fn drives(&self, system: &Value, warnings: &mut Vec<String>) -> Vec<Drive> {
        let storages = self
            .section(link(&system["Storage"]), "storage", warnings, Value::clone)
            .await;
        let mut drives = vec![];
        for storage in storages {
            for drive in storage["Drives"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(link)
            {
                match self
                    .get_with(&drive, "reading a drive", Retry::NotOn5xx)
                    .await
                {
                    Ok((d, _)) => drives.push(Drive {
                        id: s(&d["Id"]).unwrap_or_else(|| drive.clone()),
                        model: s(&d["Model"]),
                        serial: s(&d["SerialNumber"]),
                        capacity_bytes: u(&d["CapacityBytes"]),
                        media_type: s(&d["MediaType"]),
                        protocol: s(&d["Protocol"]),
                    }),
                    Err(e) => warnings.push(format!("drive {drive}: {e}")),
                }
            }
        }
        drives
    }

    async fn pcie(&self, system: &Value, warnings: &mut Vec<String>) -> Vec<PcieDevice> {
        let device = |v: &Value, kind: &str| PcieDevice {
            id: s(&v["Id"]).unwrap_or_default(),
            name: s(&v["Name"]),
            vendor: s(&v["Manufacturer"]),
            model: s(&v["Model"]),
            kind: kind.to_owned(),
        };
        let mut out = vec![];
        // ComputerSystem.PCIeDevices: a link array (older schemas) or a collection link.
        match &system["PCIeDevices"] {
            Value::Array(links) => {
                for l in links.iter().filter_map(link) {
                    match self
                        .get_with(&l, "reading a PCIe device", Retry::NotOn5xx)
                        .await
                    {
                        Ok((v, _)) => out.push(device(&v, "pcie_device")),
                        Err(e) => warnings.push(format!("PCIe device {l}: {e}")),
                    }
                }
            }
            other => {
                out.extend(
                    self.section(link(other), "PCIe devices", warnings, |v| {
                        device(v, "pcie_device")
                    })
                    .await,
                );
            }
        }
        // Chassis: PCIe devices (when the system has none listed) and network adapters.
        for chassis in system["Links"]["Chassis"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(link)
        {
            let chassis = match self
                .get_with(&chassis, "reading the chassis", Retry::NotOn5xx)
                .await
            {
                Ok((v, _)) => v,
                Err(e) => {
                    warnings.push(format!("chassis {chassis}: {e}"));
                    continue;
                }
            };
            if out.is_empty() {
                out.extend(
                    self.section(
                        link(&chassis["PCIeDevices"]),
                        "PCIe devices",
                        warnings,
                        |v| device(v, "pcie_device"),
                    )
                    .await,
                );
            }
            out.extend(
                self.section(
                    link(&chassis["NetworkAdapters"]),
                    "network adapters",
                    warnings,
                    |v| device(v, "network_adapter"),
                )
                .await,
            );
        }
        out
    }
}

impl Bmc for RedfishBmc {
    fn url(&self) -> &BmcUrl {
        &self.url
    }

    async fn check(&self) -> Result<(), BmcError> {
        // An authenticated read of the system: proves address, TLS and credentials.
        self.system_resource("checking the BMC").await.map(drop)
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let (system, _) = self.system_resource("reading the power state").await?;
        self.parse_power(&system)
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let what = format!("power {action:?}");
        let (system, _) = self.system_resource(&what).await?;
        let current = self.parse_power(&system)?;
        // On, off and force-off are idempotent here: some BMCs refuse "On" when on.
        if matches!(
            action,
            PowerAction::On | PowerAction::GracefulOff | PowerAction::ForceOff
        ) && current == action.target_state()
        {
            return Ok(());
        }
        let reset = &system["Actions"]["#ComputerSystem.Reset"];
        let target = s(&reset["target"]).ok_or_else(|| BmcError::NotSupported {
            bmc: self.name.clone(),
            what: format!("{what}: the system has no #ComputerSystem.Reset action"),
        })?;
        let allowed = self.allowed_reset_types(reset).await;
        let reset_type = choose_reset_type(action, allowed.as_deref()).ok_or_else(|| {
            BmcError::NotSupported {
                bmc: self.name.clone(),
                what: format!(
                    "{what}: none of {} is allowed (the BMC allows {})",
                    reset_types(action).join(", "),
                    allowed.unwrap_or_default().join(", ")
                ),
            }
        })?;
        let body = json!({ "ResetType": reset_type });
        let reply = self
            .send(
                Method::POST,
                &target,
                Some(&body),
                None,
                Retry::Yes,
                &what,
                true,
            )
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(&reply, &what))
        }
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let what = format!("setting the boot override to {:?}", boot.device);
        let (system, mut etag) = self.system_resource(&what).await?;
        let current = system.get("Boot").ok_or_else(|| BmcError::NotSupported {
            bmc: self.name.clone(),
            what: format!("{what}: the system has no Boot property"),
        })?;
        let patch = boot_patch(boot, current).map_err(|detail| BmcError::NotSupported {
            bmc: self.name.clone(),
            what: detail,
        })?;
        let mut retried = false;
        loop {
            let reply = self
                .send(
                    Method::PATCH,
                    &self.system,
                    Some(&patch),
                    etag.as_deref(),
                    Retry::Yes,
                    &what,
                    true,
                )
                .await?;
            let precondition = reply.status == StatusCode::PRECONDITION_FAILED
                || reply.status == StatusCode::PRECONDITION_REQUIRED;
            if reply.status.is_success() {
                return Ok(());
            }
            if precondition && !retried {
                // The resource changed under us (412) or the BMC wants If-Match (428):
                // read the current ETag and try once more.
                retried = true;
                etag = self.system_resource(&what).await?.1;
                if etag.is_some() {
                    continue;
                }
            }
            return Err(self.status_error(&reply, &what));
        }
    }

    async fn inventory(&self) -> Result<Inventory, BmcError> {
        let (system, _) = self.system_resource("reading the inventory").await?;
        let mut warnings = vec![];
        let processors = self
            .section(
                link(&system["Processors"]),
                "processors",
                &mut warnings,
                |v| Processor {
                    id: s(&v["Id"]).unwrap_or_default(),
                    socket: s(&v["Socket"]),
                    vendor: s(&v["Manufacturer"]),
                    model: s(&v["Model"]),
                    cores: u(&v["TotalCores"]).and_then(|n| u32::try_from(n).ok()),
                    threads: u(&v["TotalThreads"]).and_then(|n| u32::try_from(n).ok()),
                },
            )
            .await;
        let memory = self
            .section(link(&system["Memory"]), "memory", &mut warnings, |v| {
                MemoryModule {
                    id: s(&v["Id"]).unwrap_or_default(),
                    capacity_mib: u(&v["CapacityMiB"]),
                    memory_type: s(&v["MemoryDeviceType"]).or_else(|| s(&v["MemoryType"])),
                    speed_mhz: u(&v["OperatingSpeedMhz"]).and_then(|n| u32::try_from(n).ok()),
                }
            })
            .await;
        let nics = self
            .section(
                link(&system["EthernetInterfaces"]),
                "network interfaces",
                &mut warnings,
                |v| Nic {
                    id: s(&v["Id"]).unwrap_or_default(),
                    mac: s(&v["MACAddress"])
                        .or_else(|| s(&v["PermanentMACAddress"]))
                        .map(|m| m.to_ascii_lowercase()),
                    speed_mbps: u(&v["SpeedMbps"]),
                    link: s(&v["LinkStatus"]),
                },
            )
            .await;
        let drives = self.drives(&system, &mut warnings).await;
        let pcie_devices = self.pcie(&system, &mut warnings).await;
        let power_state = system["PowerState"].as_str().and_then(parse_power_state);
        Ok(Inventory {
            system: self.system.clone(),
            vendor: s(&system["Manufacturer"]),
            model: s(&system["Model"]),
            serial: s(&system["SerialNumber"]),
            uuid: s(&system["UUID"]).map(|u| u.to_ascii_lowercase()),
            bios_version: s(&system["BiosVersion"]),
            power_state,
            memory_gib: system["MemorySummary"]["TotalSystemMemoryGiB"].as_f64(),
            processor_count: u(&system["ProcessorSummary"]["Count"])
                .and_then(|n| u32::try_from(n).ok())
                .or_else(|| u32::try_from(processors.len()).ok().filter(|n| *n > 0)),
            processors,
            memory,
            nics,
            drives,
            pcie_devices,
            warnings,
        })
    }

    async fn close(&self) -> Result<(), BmcError> {
        let previous = std::mem::replace(&mut *self.lock_auth(), Auth::LoggedOut);
        let Auth::Session {
            token,
            location: Some(location),
        } = previous
        else {
            if matches!(previous, Auth::Anonymous) {
                *self.lock_auth() = Auth::Anonymous;
            }
            return Ok(());
        };
        let mut value = HeaderValue::from_str(token.expose()).map_err(|_| BmcError::Protocol {
            bmc: self.name.clone(),
            what: "closing the session".to_owned(),
            detail: "the session token is not a valid header value".to_owned(),
        })?;
        value.set_sensitive(true);
        let url = format!("{}{}", self.base, location);
        let response = self
            .http
            .delete(&url)
            .header("X-Auth-Token", value)
            .send()
            .await
            .map_err(|e| self.connection_error(&e, "closing the session"))?;
        let status = response.status();
        // Gone already (expired) is as good as deleted.
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(self.status_error(
            &Reply {
                status,
                headers: HeaderMap::new(),
                body: body.to_vec(),
            },
            "closing the session",
        ))
    }
}

impl Drop for RedfishBmc {
    /// A session left open takes one of the BMC's few session slots until it expires:
    /// delete it in the background when the driver is dropped without `close`.
    fn drop(&mut self) {
        let auth = std::mem::replace(&mut *self.lock_auth(), Auth::LoggedOut);
        if let Auth::Session {
            token,
            location: Some(location),
        } = auth
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Ok(mut value) = HeaderValue::from_str(token.expose())
        {
            value.set_sensitive(true);
            let request = self
                .http
                .delete(format!("{}{}", self.base, location))
                .header("X-Auth-Token", value);
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

#[cfg(test)]
mod tests;
