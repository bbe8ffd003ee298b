//! The lab's virtual BMC: a Redfish service (axum, one system) that drives its QEMU VM
//! through QMP. Power: `cont` / `stop` / `system_reset` / `system_powerdown`; boot
//! override: the NIC's or disk's `bootindex` set with `qom-set`; inventory: what the
//! harness started the VM with (UUID, serial, CPUs, memory, NIC MACs).
//!
//! Power model: the VM is started with `-S -no-shutdown`; "off" is a stopped VM (`stop`,
//! or a guest power-off, QEMU status `shutdown`), "on" is a running one. Powering on
//! resets first unless the VM never ran (`prelaunch`), so an "off" VM boots afresh.
//!
//! A one-time override is undone [`VbmcConfig::once_window`] after the next power-on or
//! reset: SeaBIOS resets once more by itself after a QMP reset, so restoring at the first
//! reset would lose the override (LAB-NOTES).
//!
//! Invariants: it binds only where it is told (127.0.0.1 or the lab bridge), talks only
//! to its own VM's QMP socket, and never logs the password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::qmp::Qmp;

/// A NIC of the VM as QEMU knows it.
#[derive(Debug, Clone)]
pub struct VbmcNic {
    /// The QEMU device id (`-device ...,id=nic0`).
    pub device: String,
    /// Its MAC address.
    pub mac: String,
    /// Its `bootindex` in normal operation.
    pub bootindex: i64,
}

/// What the virtual BMC knows about its VM.
#[derive(Debug, Clone)]
pub struct VbmcConfig {
    /// The system's Redfish id (`/redfish/v1/Systems/{id}`).
    pub system_id: String,
    /// SMBIOS UUID (`-uuid`).
    pub uuid: String,
    /// SMBIOS serial (`-smbios type=1,serial=`).
    pub serial: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// NICs; the first one network-boots.
    pub nics: Vec<VbmcNic>,
    /// The boot disk's QEMU device id and normal `bootindex`, if the VM has one.
    pub disk: Option<(String, i64)>,
    /// BMC account.
    pub username: String,
    /// Its password.
    pub password: String,
    /// How long after the next power-on a one-time boot override is undone.
    pub once_window: Duration,
    /// Fault injection: answer `500 InternalError` to this many requests first
    /// (the lab's check that BMC calls are retried).
    pub fail_first: u32,
}

#[derive(Debug, Clone)]
struct Boot {
    target: &'static str,
    enabled: &'static str,
}

#[derive(Debug)]
struct Shared {
    config: VbmcConfig,
    qmp: Qmp,
    sessions: Mutex<HashMap<String, u64>>,
    next_session: Mutex<u64>,
    boot: Mutex<Boot>,
    /// Injected failures still to answer.
    failures_left: AtomicU32,
}

/// A running virtual BMC; dropping it stops the HTTP server (not the VM).
#[derive(Debug)]
pub struct Vbmc {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Vbmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const RESET_TYPES: &[&str] = &[
    "On",
    "ForceOff",
    "GracefulShutdown",
    "ForceRestart",
    "PowerCycle",
];
const TARGETS: &[&str] = &["None", "Pxe", "Hdd"];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Standard base64 (RFC 4648), as HTTP Basic authentication uses it.
fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

fn error(status: StatusCode, id: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": format!("Base.1.8.{id}"),
        "message": message,
        "@Message.ExtendedInfo": [{
            "@odata.type": "#Message.v1_1_1.Message",
            "MessageId": format!("Base.1.8.{id}"),
            "Message": message,
        }]
    }});
    (status, axum::Json(body)).into_response()
}

impl Vbmc {
    /// Starts the service on `listen` (port 0: any free port) in front of `qmp`.
    pub async fn start(config: VbmcConfig, qmp: Qmp, listen: SocketAddr) -> std::io::Result<Vbmc> {
        let shared = Arc::new(Shared {
            qmp,
            sessions: Mutex::default(),
            next_session: Mutex::new(1),
            boot: Mutex::new(Boot {
                target: "None",
                enabled: "Disabled",
            }),
            failures_left: AtomicU32::new(config.fail_first),
            config,
        });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Vbmc { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redfish+http://ADDR`.
    pub fn url(&self) -> String {
        format!("redfish+http://{}", self.addr)
    }
}

impl Shared {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
            return lock(&self.sessions).contains_key(token);
        }
        let expected = format!(
            "Basic {}",
            base64(format!("{}:{}", self.config.username, self.config.password).as_bytes())
        );
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
    }

    fn system_path(&self) -> String {
        format!("/redfish/v1/Systems/{}", self.config.system_id)
    }

    async fn power_state(&self) -> Result<&'static str, Response> {
        let (running, _) = self.qmp.status().await.map_err(qmp_error)?;
        Ok(if running { "On" } else { "Off" })
    }

    async fn system(&self) -> Result<Value, Response> {
        let c = &self.config;
        let sys = self.system_path();
        let boot = lock(&self.boot).clone();
        Ok(json!({
            "@odata.id": sys,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": c.system_id,
            "Name": format!("lab VM {}", c.system_id),
            "SystemType": "Virtual",
            "Manufacturer": "QEMU",
            "Model": "Standard PC (Q35 + ICH9, 2009)",
            "SerialNumber": c.serial,
            "UUID": c.uuid,
            "PowerState": self.power_state().await?,
            "Status": {"State": "Enabled", "Health": "OK"},
            "Boot": {
                "BootSourceOverrideTarget": boot.target,
                "BootSourceOverrideEnabled": boot.enabled,
                "BootSourceOverrideTarget@Redfish.AllowableValues": TARGETS,
            },
            "ProcessorSummary": {"Count": c.cpus},
            "MemorySummary": {"TotalSystemMemoryGiB": c.memory_mib as f64 / 1024.0},
            "Processors": {"@odata.id": format!("{sys}/Processors")},
            "Memory": {"@odata.id": format!("{sys}/Memory")},
            "EthernetInterfaces": {"@odata.id": format!("{sys}/EthernetInterfaces")},
            "Actions": {"#ComputerSystem.Reset": {
                "target": format!("{sys}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": RESET_TYPES,
            }},
        }))
    }

    /// The static resources under the system, by path.
    fn resource(&self, path: &str) -> Option<Value> {
        let c = &self.config;
        let sys = self.system_path();
        let collection = |path: &str, kind: &str, members: Vec<String>| {
            json!({
                "@odata.id": path,
                "@odata.type": format!("#{kind}Collection.{kind}Collection"),
                "Name": format!("{kind} Collection"),
                "Members@odata.count": members.len(),
                "Members": members.iter().map(|m| json!({"@odata.id": m})).collect::<Vec<_>>(),
            })
        };
        let rest = path.strip_prefix(&sys)?;
        match rest {
            "/Processors" => Some(collection(path, "Processor", vec![format!("{path}/CPU0")])),
            "/Processors/CPU0" => Some(json!({
                "@odata.id": path, "@odata.type": "#Processor.v1_18_0.Processor",
                "Id": "CPU0", "Name": "vCPU socket", "Socket": "CPU 0",
                "ProcessorType": "CPU", "Manufacturer": "QEMU",
                "TotalCores": c.cpus, "TotalThreads": c.cpus,
            })),
            "/Memory" => Some(collection(path, "Memory", vec![format!("{path}/DIMM0")])),
            "/Memory/DIMM0" => Some(json!({
                "@odata.id": path, "@odata.type": "#Memory.v1_17_0.Memory",
                "Id": "DIMM0", "Name": "guest RAM", "CapacityMiB": c.memory_mib,
                "MemoryDeviceType": "DDR4",
            })),
            "/EthernetInterfaces" => Some(collection(
                path,
                "EthernetInterface",
                c.nics
                    .iter()
                    .map(|n| format!("{path}/{}", n.device))
                    .collect(),
            )),
            _ => {
                let id = rest.strip_prefix("/EthernetInterfaces/")?;
                let nic = c.nics.iter().find(|n| n.device == id)?;
                Some(json!({
                    "@odata.id": path, "@odata.type": "#EthernetInterface.v1_12_0.EthernetInterface",
                    "Id": nic.device, "Name": format!("NIC {}", nic.device),
                    "MACAddress": nic.mac, "PermanentMACAddress": nic.mac,
                    "LinkStatus": "LinkUp",
                }))
            }
        }
    }

    /// The boot order for `target`: (device, bootindex) for every NIC and the disk.
    fn boot_order(&self, target: &str) -> Vec<(String, i64)> {
        let mut order: Vec<(String, i64)> = self
            .config
            .nics
            .iter()
            .map(|n| (n.device.clone(), n.bootindex))
            .collect();
        order.extend(self.config.disk.clone());
        let first = match target {
            "Pxe" => self.config.nics.first().map(|n| n.device.clone()),
            "Hdd" => self.config.disk.as_ref().map(|(d, _)| d.clone()),
            _ => None,
        };
        for (device, index) in &mut order {
            if Some(&*device) == first.as_ref() {
                *index = 0;
            }
        }
        order
    }

    /// Applies the boot order for `target`.
    async fn apply_boot(&self, target: &str) -> Result<(), Response> {
        self.qmp
            .set_boot_order(&self.boot_order(target))
            .await
            .map_err(qmp_error)
    }

    async fn patch(self: &Arc<Self>, body: &[u8]) -> Response {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedJSON",
                "The request body is not JSON.",
            );
        };
        let boot = &request["Boot"];
        let target = match boot["BootSourceOverrideTarget"].as_str() {
            None => lock(&self.boot).target,
            Some(t) => match TARGETS.iter().find(|a| **a == t) {
                Some(t) => t,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "PropertyValueNotInList",
                        &format!(
                            "The value {t} for BootSourceOverrideTarget is not in the list of acceptable values."
                        ),
                    );
                }
            },
        };
        let enabled = match boot["BootSourceOverrideEnabled"].as_str() {
            None => "Once",
            Some("Once") => "Once",
            Some("Continuous") => "Continuous",
            Some("Disabled") => "Disabled",
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PropertyValueNotInList",
                    &format!(
                        "The value {other} for BootSourceOverrideEnabled is not in the list of acceptable values."
                    ),
                );
            }
        };
        let target = if enabled == "Disabled" {
            "None"
        } else {
            target
        };
        if let Err(response) = self.apply_boot(target).await {
            return response;
        }
        *lock(&self.boot) = Boot { target, enabled };
        StatusCode::NO_CONTENT.into_response()
    }

    /// After a power-on or reset: a one-time override is undone once the window passed.
    fn consume_once(self: &Arc<Self>) {
        if lock(&self.boot).enabled != "Once" {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(shared.config.once_window).await;
            if shared.apply_boot("None").await.is_ok() {
                *lock(&shared.boot) = Boot {
                    target: "None",
                    enabled: "Disabled",
                };
            }
        });
    }

    async fn reset(self: &Arc<Self>, body: &[u8]) -> Response {
        let reset_type = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["ResetType"].as_str().map(str::to_owned));
        let Some(reset_type) = reset_type.filter(|t| RESET_TYPES.contains(&t.as_str())) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterNotSupported",
                "ResetType must be one of On, ForceOff, GracefulShutdown, ForceRestart, PowerCycle.",
            );
        };
        let result = async {
            let (running, _) = self.qmp.status().await?;
            match reset_type.as_str() {
                "On" => self.qmp.power_on().await?,
                "ForceOff" => self.qmp.power_off().await?,
                "GracefulShutdown" if running => {
                    self.qmp.execute("system_powerdown", json!({})).await?;
                }
                "ForceRestart" | "PowerCycle" => {
                    if running && reset_type == "PowerCycle" {
                        self.qmp.execute("stop", json!({})).await?;
                    }
                    self.qmp.execute("system_reset", json!({})).await?;
                    if !self.qmp.status().await?.0 {
                        self.qmp.execute("cont", json!({})).await?;
                    }
                }
                _ => {}
            }
            Ok::<_, crate::qmp::QmpError>(())
        }
        .await;
        match result {
            Ok(()) => {
                if matches!(reset_type.as_str(), "On" | "ForceRestart" | "PowerCycle") {
                    self.consume_once();
                }
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => qmp_error(e),
        }
    }
}

fn qmp_error(e: crate::qmp::QmpError) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &format!("The VM did not answer: {e}"),
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_owned();
    let get = method == Method::GET;
    let injected = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if let Ok(left) = injected {
        let n = shared.config.fail_first - left + 1;
        println!(
            "lab-vbmc: injected fault {n}/{}: 500 to {method} {path}",
            shared.config.fail_first
        );
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("Injected fault {n} of {}.", shared.config.fail_first),
        );
    }
    match path.as_str() {
        "/redfish" if get => return axum::Json(json!({"v1": "/redfish/v1/"})).into_response(),
        "/redfish/v1" if get => {
            return axum::Json(json!({
                "@odata.id": "/redfish/v1/",
                "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                "Id": "RootService",
                "Name": "Lab virtual BMC",
                "RedfishVersion": "1.15.0",
                "UUID": shared.config.uuid,
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
            }))
            .into_response();
        }
        "/redfish/v1/SessionService/Sessions" if method == Method::POST => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            if request["UserName"] != json!(shared.config.username)
                || request["Password"] != json!(shared.config.password)
            {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "NoValidSession",
                    "Invalid user name or password.",
                );
            }
            let id = {
                let mut next = lock(&shared.next_session);
                *next += 1;
                *next - 1
            };
            let token = format!("{:032x}", rand::random::<u128>());
            lock(&shared.sessions).insert(token.clone(), id);
            let location = format!("/redfish/v1/SessionService/Sessions/{id}");
            let mut response = (
                StatusCode::CREATED,
                axum::Json(json!({
                    "@odata.id": location,
                    "@odata.type": "#Session.v1_7_0.Session",
                    "Id": id.to_string(), "Name": "Session", "UserName": shared.config.username,
                })),
            )
                .into_response();
            if let (Ok(t), Ok(l)) = (token.parse(), location.parse()) {
                response.headers_mut().insert("x-auth-token", t);
                response.headers_mut().insert("location", l);
            }
            return response;
        }
        _ => {}
    }
    if !shared.authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "NoValidSession",
            "No valid session or credentials.",
        );
    }
    let sys = shared.system_path();
    if let Some(id) = path.strip_prefix("/redfish/v1/SessionService/Sessions/")
        && method == Method::DELETE
    {
        lock(&shared.sessions).retain(|_, v| v.to_string() != id);
        return StatusCode::NO_CONTENT.into_response();
    }
    if get && path == "/redfish/v1/SessionService" {
        return axum::Json(json!({
            "@odata.id": "/redfish/v1/SessionService",
            "@odata.type": "#SessionService.v1_1_9.SessionService",
            "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true,
            "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"},
        }))
        .into_response();
    }
    if get && path == "/redfish/v1/SessionService/Sessions" {
        let mut ids: Vec<u64> = lock(&shared.sessions).values().copied().collect();
        ids.sort_unstable();
        let members: Vec<Value> = ids
            .iter()
            .map(|id| json!({"@odata.id": format!("/redfish/v1/SessionService/Sessions/{id}")}))
            .collect();
        return axum::Json(json!({
            "@odata.id": "/redfish/v1/SessionService/Sessions",
            "@odata.type": "#SessionCollection.SessionCollection",
            "Name": "Session Collection",
            "Members@odata.count": members.len(),
            "Members": members,
        }))
        .into_response();
    }
    if get
        && let Some(id) = path
            .strip_prefix("/redfish/v1/SessionService/Sessions/")
            .and_then(|id| id.parse::<u64>().ok())
        && lock(&shared.sessions).values().any(|v| *v == id)
    {
        return axum::Json(json!({
            "@odata.id": path,
            "@odata.type": "#Session.v1_7_0.Session",
            "Id": id.to_string(),
            "Name": format!("Session {id}"),
            "UserName": shared.config.username,
        }))
        .into_response();
    }
    if get && path == "/redfish/v1/Systems" {
        return axum::Json(json!({
            "@odata.id": "/redfish/v1/Systems",
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": sys}],
        }))
        .into_response();
    }
    if path == sys {
        return match method {
            Method::GET => match shared.system().await {
                Ok(system) => axum::Json(system).into_response(),
                Err(response) => response,
            },
            Method::PATCH => shared.patch(&body).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "OperationNotAllowed",
                "GET or PATCH.",
            ),
        };
    }
    if method == Method::POST && path == format!("{sys}/Actions/ComputerSystem.Reset") {
        return shared.reset(&body).await;
    }
    if get && let Some(resource) = shared.resource(&path) {
        return axum::Json(resource).into_response();
    }
    error(
        StatusCode::NOT_FOUND,
        "ResourceMissingAtURI",
        &format!("The resource at {path} was not found."),
    )
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v")] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
