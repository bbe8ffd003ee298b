//! A small in-memory Redfish *service* on 127.0.0.1 (axum): the driver's fault tests and
//! `cargo xtask bench bmc` run against it. Its resources sit at unusual paths (the reset
//! action at `.../Oem/DoReset`, processors under `.../Cpus`) so a client that builds paths
//! instead of following links fails against it. Faults: 5xx answers, a hang, malformed
//! JSON; quirks: `If-Match` required, no `BootSourceOverrideMode`, no
//! `Members@odata.count`, no SessionService.
//!
//! It never drives hardware and binds only to 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeRedfishOptions {
    /// Number of systems (ids `1`, `2`, ...).
    pub systems: usize,
    /// `Some((user, password))`: every resource but the root needs them (Basic or session).
    pub credentials: Option<(String, String)>,
    /// Offer a SessionService.
    pub sessions: bool,
    /// Refuse a PATCH without `If-Match` (428).
    pub require_if_match: bool,
    /// Include `BootSourceOverrideMode` in `Boot`.
    pub boot_mode_field: bool,
    /// Include `Members@odata.count` in collections.
    pub members_count: bool,
    /// Split collections into pages of this many members (`Members@odata.nextLink`).
    pub page_size: Option<usize>,
    /// Give the reset action's allowed values through `@Redfish.ActionInfo` (without
    /// PowerCycle) instead of inline.
    pub action_info: bool,
    /// Answer the first PATCH with 412, as if someone changed the system in between.
    pub etag_race: bool,
}

impl Default for FakeRedfishOptions {
    fn default() -> Self {
        FakeRedfishOptions {
            systems: 1,
            credentials: Some(("admin".to_owned(), "password".to_owned())),
            sessions: true,
            require_if_match: false,
            boot_mode_field: true,
            members_count: true,
            page_size: None,
            action_info: false,
            etag_race: false,
        }
    }
}

/// A fault applied to the requests that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Answer the next `n` requests with 500.
    ServerErrors(u32),
    /// Never answer.
    Hang,
    /// Answer 200 with a body that is not JSON.
    MalformedJson,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct System {
    power: &'static str,
    boot_target: String,
    boot_enabled: String,
    boot_mode: String,
    etag: u64,
}

#[derive(Debug)]
struct Inner {
    options: FakeRedfishOptions,
    systems: Vec<System>,
    resources: HashMap<String, Value>,
    fault: Fault,
    sessions: HashMap<String, u64>,
    next_session: u64,
    requests: u64,
    resets: Vec<String>,
    /// The first PATCH already met its 412 (`etag_race`).
    raced: bool,
    /// Served instead of every system resource (fuzzing the client).
    system_override: Option<Value>,
}

/// A running fake; dropping it stops the server.
#[derive(Debug)]
pub struct FakeRedfish {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRedfish {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ALLOWED_RESETS: &[&str] = &[
    "On",
    "ForceOff",
    "GracefulShutdown",
    "ForceRestart",
    "PowerCycle",
];
/// What the ActionInfo variant allows: no PowerCycle.
const ACTION_INFO_RESETS: &[&str] = &["On", "ForceOff", "GracefulShutdown", "ForceRestart"];
const ALLOWED_TARGETS: &[&str] = &["None", "Pxe", "Hdd", "UefiHttp"];

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn collection(path: &str, members: &[String], count: bool) -> Value {
    let mut v = json!({
        "@odata.id": path,
        "Name": "Collection",
        "Members": members.iter().map(|m| json!({"@odata.id": m})).collect::<Vec<_>>(),
    });
    if count {
        v["Members@odata.count"] = json!(members.len());
    }
    v
}

/// A collection at `path`; with `page_size`, split into pages linked by
/// `Members@odata.nextLink` (`{path}/Page2`, ...).
fn insert_collection(
    out: &mut HashMap<String, Value>,
    path: &str,
    links: &[String],
    options: &FakeRedfishOptions,
) {
    let size = options.page_size.unwrap_or(usize::MAX).max(1);
    let pages: Vec<&[String]> = if links.is_empty() {
        vec![&[]]
    } else {
        links.chunks(size).collect()
    };
    let page_path = |n: usize| {
        if n == 0 {
            path.to_owned()
        } else {
            format!("{path}/Page{}", n + 1)
        }
    };
    for (n, page) in pages.iter().enumerate() {
        let mut value = collection(&page_path(n), page, options.members_count);
        if n + 1 < pages.len() {
            value["Members@odata.nextLink"] = json!(page_path(n + 1));
        }
        out.insert(page_path(n), value);
    }
}

/// The static resources of system `i` (1-based): processors, memory, NICs, storage, chassis,
/// the reset ActionInfo.
fn static_resources(i: usize, options: &FakeRedfishOptions, out: &mut HashMap<String, Value>) {
    let sys = format!("/redfish/v1/Systems/{i}");
    out.insert(
        format!("{sys}/ResetActionInfo"),
        json!({"@odata.id": format!("{sys}/ResetActionInfo"), "Id": "ResetActionInfo",
               "Parameters": [{"Name": "ResetType", "Required": true, "DataType": "String",
                               "AllowableValues": ACTION_INFO_RESETS}]}),
    );
    let mut add_collection = |path: String, members: Vec<(String, Value)>| {
        let links: Vec<String> = members.iter().map(|(p, _)| p.clone()).collect();
        insert_collection(out, &path, &links, options);
        for (p, mut v) in members {
            v["@odata.id"] = json!(p);
            out.insert(p, v);
        }
    };
    add_collection(
        format!("{sys}/Cpus"),
        (0..2)
            .map(|n| {
                (
                    format!("{sys}/Cpus/CPU{n}"),
                    json!({"Id": format!("CPU{n}"), "Socket": format!("CPU {n}"),
                           "Manufacturer": "Intel(R) Corporation", "Model": "Fake Xeon",
                           "TotalCores": 16, "TotalThreads": 32, "OemExtra": {"x": 1}}),
                )
            })
            .collect(),
    );
    add_collection(
        format!("{sys}/Dimms"),
        (0..4)
            .map(|n| {
                (
                    format!("{sys}/Dimms/DIMM{n}"),
                    json!({"Id": format!("DIMM{n}"), "CapacityMiB": 16384,
                           "MemoryDeviceType": "DDR5", "OperatingSpeedMhz": 4800}),
                )
            })
            .collect(),
    );
    add_collection(
        format!("{sys}/Nics"),
        (0..2)
            .map(|n| {
                (
                    format!("{sys}/Nics/{n}"),
                    json!({"Id": format!("NIC{n}"),
                           "MACAddress": format!("52:54:00:{:02X}:{:02X}:{n:02X}", (i >> 8) & 0xff, i & 0xff),
                           "SpeedMbps": 25000, "LinkStatus": "LinkUp"}),
                )
            })
            .collect(),
    );
    let drive = format!("{sys}/Storage/1/Drives/0");
    add_collection(
        format!("{sys}/Storage"),
        vec![(
            format!("{sys}/Storage/1"),
            json!({"Id": "1", "Drives": [{"@odata.id": drive}]}),
        )],
    );
    out.insert(
        drive.clone(),
        json!({"@odata.id": drive, "Id": "0", "Model": "Fake NVMe", "SerialNumber": format!("DRV{i:04}"),
               "CapacityBytes": 960_197_124_096u64, "MediaType": "SSD", "Protocol": "NVMe"}),
    );
    let chassis = format!("/redfish/v1/Chassis/{i}");
    out.insert(
        chassis.clone(),
        json!({"@odata.id": chassis, "Id": i.to_string(),
               "PCIeDevices": {"@odata.id": format!("{chassis}/PCIeDevices")},
               "NetworkAdapters": {"@odata.id": format!("{chassis}/NetworkAdapters")}}),
    );
    let mut add_collection = |path: String, members: Vec<(String, Value)>| {
        let links: Vec<String> = members.iter().map(|(p, _)| p.clone()).collect();
        insert_collection(out, &path, &links, options);
        for (p, mut v) in members {
            v["@odata.id"] = json!(p);
            out.insert(p, v);
        }
    };
    add_collection(
        format!("{chassis}/PCIeDevices"),
        vec![(
            format!("{chassis}/PCIeDevices/0"),
            json!({"Id": "0", "Name": "GPU", "Manufacturer": "Fake", "Model": "G1"}),
        )],
    );
    add_collection(
        format!("{chassis}/NetworkAdapters"),
        vec![(
            format!("{chassis}/NetworkAdapters/0"),
            json!({"Id": "0", "Name": "NIC adapter", "Manufacturer": "Intel", "Model": "E810"}),
        )],
    );
}

/// Standard base64 (RFC 4648), as HTTP Basic authentication uses it.
fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// A Redfish error body with one `@Message.ExtendedInfo` entry.
fn error(status: StatusCode, id: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": format!("Base.1.8.{id}"),
        "message": "See @Message.ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{"MessageId": format!("Base.1.8.{id}"), "Message": message,
                                   "Resolution": "Correct the request and resubmit it."}]
    }});
    (status, axum::Json(body)).into_response()
}

impl FakeRedfish {
    /// Starts a fake on 127.0.0.1 with a free port.
    pub async fn start(options: FakeRedfishOptions) -> std::io::Result<FakeRedfish> {
        let mut resources = HashMap::new();
        let systems = (1..=options.systems)
            .map(|i| {
                static_resources(i, &options, &mut resources);
                System {
                    power: "Off",
                    boot_target: "None".to_owned(),
                    boot_enabled: "Disabled".to_owned(),
                    boot_mode: "UEFI".to_owned(),
                    etag: 1,
                }
            })
            .collect();
        let inner = Arc::new(Mutex::new(Inner {
            options,
            systems,
            resources,
            fault: Fault::None,
            sessions: HashMap::new(),
            next_session: 1,
            requests: 0,
            resets: vec![],
            raced: false,
            system_override: None,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake Redfish server stopped");
            }
        });
        Ok(FakeRedfish { addr, inner, task })
    }

    /// `redfish+http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redfish+http://{}", self.addr)
    }

    /// Applies `fault` to the requests that follow.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.inner).fault = fault;
    }

    /// Power state of system `i` (1-based): `On` or `Off`.
    pub fn power(&self, i: usize) -> String {
        lock(&self.inner).systems[i - 1].power.to_owned()
    }

    /// Changes the power of system `i` behind the clients' backs (someone pressed the
    /// button): `on` true for On.
    pub fn set_power(&self, i: usize, on: bool) {
        lock(&self.inner).systems[i - 1].power = if on { "On" } else { "Off" };
    }

    /// Boot override of system `i`: target, enabled, mode.
    pub fn boot(&self, i: usize) -> (String, String, String) {
        let g = lock(&self.inner);
        let s = &g.systems[i - 1];
        (
            s.boot_target.clone(),
            s.boot_enabled.clone(),
            s.boot_mode.clone(),
        )
    }

    /// Serves `value` (any JSON) instead of every system resource; `None` goes back to the
    /// real ones. For fuzzing clients.
    pub fn set_system_json(&self, value: Option<Value>) {
        lock(&self.inner).system_override = value;
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        lock(&self.inner).sessions.len()
    }

    /// Forgets every session, as a BMC does when they expire or it restarts.
    #[cfg(test)]
    pub(crate) fn expire_sessions(&self) {
        lock(&self.inner).sessions.clear();
    }

    /// Requests received so far.
    #[cfg(test)]
    pub(crate) fn requests(&self) -> u64 {
        lock(&self.inner).requests
    }

    /// `ResetType`s received, in order.
    #[cfg(test)]
    pub(crate) fn resets(&self) -> Vec<String> {
        lock(&self.inner).resets.clone()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut g = lock(&inner);
        g.requests += 1;
        let fault = g.fault;
        if let Fault::ServerErrors(n) = fault {
            g.fault = if n > 1 {
                Fault::ServerErrors(n - 1)
            } else {
                Fault::None
            };
        }
        fault
    };
    match fault {
        Fault::None => {}
        Fault::ServerErrors(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The request failed due to an internal service error.",
            );
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Fault::MalformedJson => {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"PowerState\": \"On\",",
            )
                .into_response();
        }
    }
    let path = uri.path().trim_end_matches('/').to_owned();
    route(&mut lock(&inner), &method, &path, &headers, &body)
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some((user, password)) = &inner.options.credentials else {
        return true;
    };
    if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        return inner.sessions.contains_key(token);
    }
    let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn system_json(i: usize, s: &System, options: &FakeRedfishOptions) -> Value {
    let sys = format!("/redfish/v1/Systems/{i}");
    let mut boot = json!({
        "BootSourceOverrideTarget": s.boot_target,
        "BootSourceOverrideEnabled": s.boot_enabled,
        "BootSourceOverrideTarget@Redfish.AllowableValues": ALLOWED_TARGETS,
    });
    if options.boot_mode_field {
        boot["BootSourceOverrideMode"] = json!(s.boot_mode);
    }
    json!({
        "@odata.id": sys,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "@odata.etag": format!("W/\"{}\"", s.etag),
        "Id": i.to_string(),
        "Name": format!("fake system {i}"),
        "Manufacturer": "Fake Computers",
        "Model": "FR-1",
        "SerialNumber": format!("FAKE{i:04}"),
        "UUID": format!("00000000-0000-4000-8000-{i:012}"),
        "BiosVersion": "1.2.3",
        "PowerState": s.power,
        "Boot": boot,
        "ProcessorSummary": {"Count": 2, "Model": "Fake Xeon"},
        "MemorySummary": {"TotalSystemMemoryGiB": 64},
        "Processors": {"@odata.id": format!("{sys}/Cpus")},
        "Memory": {"@odata.id": format!("{sys}/Dimms")},
        "EthernetInterfaces": {"@odata.id": format!("{sys}/Nics")},
        "Storage": {"@odata.id": format!("{sys}/Storage")},
        "Links": {"Chassis": [{"@odata.id": format!("/redfish/v1/Chassis/{i}")}]},
        "Actions": {"#ComputerSystem.Reset": if options.action_info {
            json!({"target": format!("{sys}/Oem/DoReset"),
                   "@Redfish.ActionInfo": format!("{sys}/ResetActionInfo")})
        } else {
            json!({"target": format!("{sys}/Oem/DoReset"),
                   "ResetType@Redfish.AllowableValues": ALLOWED_RESETS})
        }},
        "Oem": {"Vendor": {"Unknown": true}},
    })
}

fn route(
    inner: &mut Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if path == "/redfish/v1" && method == Method::GET {
        let mut root = json!({
            "@odata.id": "/redfish/v1/",
            "Id": "RootService",
            "RedfishVersion": "1.15.0",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        });
        if inner.options.sessions {
            root["SessionService"] = json!({"@odata.id": "/redfish/v1/SessionService"});
            root["Links"] =
                json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}});
        }
        return axum::Json(root).into_response();
    }
    if inner.options.sessions
        && path == "/redfish/v1/SessionService/Sessions"
        && method == Method::POST
    {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedJSON",
                "The request body is not JSON.",
            );
        };
        if let Some((user, password)) = &inner.options.credentials
            && (request["UserName"] != json!(user) || request["Password"] != json!(password))
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "Invalid user name or password.",
            );
        }
        let id = inner.next_session;
        inner.next_session += 1;
        let token = format!("token-{id}-{:016x}", rand::random::<u64>());
        inner.sessions.insert(token.clone(), id);
        let location = format!("/redfish/v1/SessionService/Sessions/{id}");
        let mut response = (
            StatusCode::CREATED,
            axum::Json(json!({"@odata.id": location, "Id": id.to_string()})),
        )
            .into_response();
        if let (Ok(t), Ok(l)) = (token.parse(), location.parse()) {
            response.headers_mut().insert("x-auth-token", t);
            response.headers_mut().insert("location", l);
        }
        return response;
    }
    if !authorized(inner, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "NoValidSession",
            "No valid session or credentials.",
        );
    }
    if inner.options.sessions && method == Method::GET && path == "/redfish/v1/SessionService" {
        return axum::Json(json!({"@odata.id": path,
            "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}))
        .into_response();
    }
    if let Some(id) = path.strip_prefix("/redfish/v1/SessionService/Sessions/")
        && method == Method::DELETE
    {
        let before = inner.sessions.len();
        inner.sessions.retain(|_, v| v.to_string() != id);
        return if inner.sessions.len() < before {
            StatusCode::NO_CONTENT.into_response()
        } else {
            error(
                StatusCode::NOT_FOUND,
                "ResourceMissingAtURI",
                "No such session.",
            )
        };
    }
    if path == "/redfish/v1/Systems" && method == Method::GET {
        let members: Vec<String> = (1..=inner.systems.len())
            .map(|i| format!("/redfish/v1/Systems/{i}"))
            .collect();
        return axum::Json(collection(path, &members, inner.options.members_count)).into_response();
    }
    if path == "/redfish/v1/Chassis" && method == Method::GET {
        let members: Vec<String> = (1..=inner.systems.len())
            .map(|i| format!("/redfish/v1/Chassis/{i}"))
            .collect();
        return axum::Json(collection(path, &members, inner.options.members_count)).into_response();
    }
    if let Some(rest) = path.strip_prefix("/redfish/v1/Systems/") {
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(i) = id
            .parse::<usize>()
            .ok()
            .filter(|i| (1..=inner.systems.len()).contains(i))
        {
            match (method.clone(), tail) {
                (Method::GET, "") => {
                    if let Some(replacement) = &inner.system_override {
                        return axum::Json(replacement.clone()).into_response();
                    }
                    let s = &inner.systems[i - 1];
                    let mut response =
                        axum::Json(system_json(i, s, &inner.options)).into_response();
                    if let Ok(v) = format!("W/\"{}\"", s.etag).parse() {
                        response.headers_mut().insert("etag", v);
                    }
                    return response;
                }
                (Method::PATCH, "") => return patch_system(inner, i, headers, body),
                (Method::POST, "Oem/DoReset") => return reset(inner, i, body),
                _ => {}
            }
        }
    }
    if method == Method::GET
        && let Some(resource) = inner.resources.get(path)
    {
        return axum::Json(resource.clone()).into_response();
    }
    error(
        StatusCode::NOT_FOUND,
        "ResourceMissingAtURI",
        &format!("The resource at {path} was not found."),
    )
}

fn patch_system(inner: &mut Inner, i: usize, headers: &HeaderMap, body: &[u8]) -> Response {
    if inner.options.etag_race && !inner.raced {
        inner.raced = true;
        inner.systems[i - 1].etag += 1;
        return error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "The resource changed since it was read.",
        );
    }
    let current = format!("W/\"{}\"", inner.systems[i - 1].etag);
    match headers.get("if-match").and_then(|v| v.to_str().ok()) {
        None if inner.options.require_if_match => {
            return error(
                StatusCode::PRECONDITION_REQUIRED,
                "PreconditionRequired",
                "An If-Match header is required to modify this resource.",
            );
        }
        Some(tag) if tag != current && tag != "*" => {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "The ETag does not match.",
            );
        }
        _ => {}
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "The request body is not JSON.",
        );
    };
    let boot = &request["Boot"];
    let system = &mut inner.systems[i - 1];
    if let Some(target) = boot["BootSourceOverrideTarget"].as_str() {
        if !ALLOWED_TARGETS.contains(&target) {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueNotInList",
                &format!(
                    "The value {target} for the property BootSourceOverrideTarget is not in the list of acceptable values."
                ),
            );
        }
        system.boot_target = target.to_owned();
    }
    if let Some(enabled) = boot["BootSourceOverrideEnabled"].as_str() {
        system.boot_enabled = enabled.to_owned();
    }
    if let Some(mode) = boot["BootSourceOverrideMode"].as_str() {
        if !inner.options.boot_mode_field {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyUnknown",
                "The property BootSourceOverrideMode is not in the list of valid properties for the resource.",
            );
        }
        system.boot_mode = mode.to_owned();
    }
    system.etag += 1;
    StatusCode::NO_CONTENT.into_response()
}

fn reset(inner: &mut Inner, i: usize, body: &[u8]) -> Response {
    let reset_type = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["ResetType"].as_str().map(str::to_owned));
    let Some(reset_type) = reset_type.filter(|t| ALLOWED_RESETS.contains(&t.as_str())) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ActionParameterNotSupported",
            "The parameter ResetType for the action ComputerSystem.Reset is not supported on the target resource.",
        );
    };
    let system = &mut inner.systems[i - 1];
    system.power = match reset_type.as_str() {
        "ForceOff" | "GracefulShutdown" => "Off",
        _ => "On",
    };
    inner.resets.push(reset_type);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("admin:password", "YWRtaW46cGFzc3dvcmQ="),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }
}
