//! The REST API (axum, JSON): nodes, their history and inventory, maintenance,
//! manual lifecycle events, applying a node's host plan, site reload; the agent API under `/api/agent/v1/`;
//! `/api/openapi.json`, `/metrics`, `/healthz`.
//!
//! Invariants:
//! - Every `/api/v1/*` route requires `Authorization: Bearer <token>`; the
//!   comparison is constant-time. `/healthz`, `/metrics` and the OpenAPI
//!   document are public (they reveal no node data), and so are the boot
//!   routes `/boot/{file}` and `/images/{image}/{file}` (firmware cannot send
//!   a token; see `crate::boot` for what they may serve).
//! - Every `/api/agent/v1/*` route requires the per-boot token of the boot
//!   the message is about (the token's MAC equals the message's `mac`); the
//!   operator token is not accepted there, nor a boot token on `/api/v1`.
//! - Errors map to HTTP status in one exhaustive match ([`status_of`]) and the
//!   body is always `{"error": ..., "hint": ...}`.
//! - The OpenAPI document lists exactly the routes of [`router`] (a test checks).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::{App, AppError, PowerReport, SiteStatus};
use crate::bmc::{BmcError, PowerAction};
use crate::lifecycle::{Event, TransitionError};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::store::NodeProgress;
use crate::store::{
    ApplyStatus, BootSession, HistoryEntry, NodeRecord, StoreError, StoredInventory, SyncReport,
};
use model::agent::{AppliedReport, Command, Heartbeat, InventoryReport};
use model::plan::HostPlan;

/// Body of every error answer.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Site validation problems, `file:line:column: message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `PUT /api/v1/nodes/{name}/maintenance`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub maintenance: bool,
    /// Why (shown in `node show` and recorded in the history).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/nodes/{name}/events`: a manual lifecycle event.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// One of inspect, deploy, undeploy, clean, abort.
    pub event: Event,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/nodes/{name}/power`: a power change through the node's BMC.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// on, graceful_off, force_off, reset or cycle.
    pub action: PowerAction,
}

/// An API failure, mapped to HTTP by [`status_of`].
#[derive(Debug)]
pub enum ApiError {
    Unauthorized(&'static str),
    Daemon(AppError),
    BadJson(String),
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        ApiError::Daemon(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Daemon(AppError::Store(err))
    }
}

/// The one place where errors become HTTP status codes.
fn status_of(err: &ApiError) -> (StatusCode, Option<String>) {
    use AppError as D;
    match err {
        ApiError::Unauthorized(_) => (
            StatusCode::UNAUTHORIZED,
            Some("send `Authorization: Bearer TOKEN` with the token from STATE/api-token".into()),
        ),
        ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, None),
        ApiError::Daemon(err) => match err {
            D::Store(StoreError::NotFound(_)) => (
                StatusCode::NOT_FOUND,
                Some("`provisioner node list` shows the known nodes".into()),
            ),
            D::Store(StoreError::Conflict { .. }) => (StatusCode::CONFLICT, Some("retry".into())),
            D::Store(StoreError::Duplicate(_)) => (StatusCode::CONFLICT, None),
            D::Store(
                StoreError::Open { .. }
                | StoreError::CreateDir { .. }
                | StoreError::Migrate { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Query(_),
            ) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("see the daemon log".into()),
            ),
            D::Transition(
                TransitionError::InMaintenance { .. } | TransitionError::NotAllowed { .. },
            ) => (StatusCode::CONFLICT, None),
            D::SiteInvalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("fix the files (`provisioner site validate DIR`) and reload again".into()),
            ),
            D::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
            D::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("see the daemon log".into()),
            ),
            D::NoBmc(_) => (StatusCode::CONFLICT, None),
            D::AgentToken(_) => (
                StatusCode::UNAUTHORIZED,
                Some(
                    "the agent sends the token of its kernel command line (provisioner.token=); \
                     a newer network boot of the same MAC replaces it: reboot the node"
                        .into(),
                ),
            ),
            D::DiscoveryOff(_) => (StatusCode::FORBIDDEN, None),
            D::NoInventory(_) => (StatusCode::NOT_FOUND, None),
            D::NoPlan(_) => (
                StatusCode::NOT_FOUND,
                Some("`provisioner node show NAME` says why the node has no plan".into()),
            ),
            D::ApplyRefused(_) => (StatusCode::CONFLICT, None),
            D::Bmc(err) => match err {
                BmcError::Credential { .. } => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some("give the daemon the variable or file the node's password_env / password_file names".into()),
                ),
                BmcError::Auth { .. } => (
                    StatusCode::BAD_GATEWAY,
                    Some("check the node's BMC username and password in nodes.yaml and on the BMC".into()),
                ),
                BmcError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, None),
                BmcError::Unreachable { .. }
                | BmcError::Tls { .. }
                | BmcError::Refused { .. }
                | BmcError::Protocol { .. } => (StatusCode::BAD_GATEWAY, None),
                BmcError::NotSupported { .. } => (StatusCode::NOT_IMPLEMENTED, None),
                BmcError::AmbiguousSystem { .. } => (
                    StatusCode::BAD_GATEWAY,
                    Some("add the system path to the node's BMC URL in nodes.yaml".into()),
                ),
            },
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, hint) = status_of(&self);
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut details = vec![];
        let error = match &self {
            ApiError::Unauthorized(why) => (*why).to_owned(),
            ApiError::BadJson(msg) => msg.clone(),
            ApiError::Daemon(AppError::SiteInvalid(errors)) => {
                details = errors.0.iter().map(ToString::to_string).collect();
                self_message(&self)
            }
            ApiError::Daemon(err) => err.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error,
                hint,
                details,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn self_message(err: &ApiError) -> String {
    match err {
        ApiError::Daemon(err) => err.to_string(),
        ApiError::Unauthorized(why) => (*why).to_owned(),
        ApiError::BadJson(msg) => msg.clone(),
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The routes of the API, as (method, path template) pairs; the OpenAPI
/// document and the router are both checked against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/boot/{file}"),
    ("get", "/images/{image}/{file}"),
    ("get", "/api/v1/nodes"),
    ("get", "/api/v1/nodes/{name}"),
    ("delete", "/api/v1/nodes/{name}"),
    ("get", "/api/v1/nodes/{name}/history"),
    ("get", "/api/v1/nodes/{name}/inventory"),
    ("get", "/api/v1/nodes/{name}/progress"),
    ("put", "/api/v1/nodes/{name}/maintenance"),
    ("post", "/api/v1/nodes/{name}/events"),
    ("get", "/api/v1/nodes/{name}/apply"),
    ("post", "/api/v1/nodes/{name}/apply"),
    ("get", "/api/v1/nodes/{name}/power"),
    ("post", "/api/v1/nodes/{name}/power"),
    ("get", "/api/v1/site"),
    ("post", "/api/v1/site/reload"),
    ("post", "/api/agent/v1/inventory"),
    ("post", "/api/agent/v1/heartbeat"),
    ("get", "/api/agent/v1/plan"),
    ("post", "/api/agent/v1/applied"),
];

/// The whole HTTP surface of the daemon.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(show_node).delete(delete_node))
        .route("/api/v1/nodes/{name}/history", get(node_history))
        .route("/api/v1/nodes/{name}/inventory", get(node_inventory))
        .route("/api/v1/nodes/{name}/progress", get(node_progress))
        .route("/api/v1/nodes/{name}/maintenance", put(set_maintenance))
        .route("/api/v1/nodes/{name}/events", post(node_event))
        .route(
            "/api/v1/nodes/{name}/apply",
            get(apply_status).post(request_apply),
        )
        .route(
            "/api/v1/nodes/{name}/power",
            get(read_power).post(change_power),
        )
        .route("/api/v1/site", get(site_status))
        .route("/api/v1/site/reload", post(site_reload))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(|| async { Json(openapi()) }))
        // Boot routes: firmware and iPXE cannot send the operator token.
        .route("/boot/{file}", get(crate::boot::boot_file))
        .route("/images/{image}/{file}", get(crate::boot::image_file))
        // Agent routes: the per-boot token is checked in the handlers.
        .route("/api/agent/v1/inventory", post(agent_inventory))
        .route("/api/agent/v1/heartbeat", post(agent_heartbeat))
        .route("/api/agent/v1/plan", get(agent_plan))
        .route("/api/agent/v1/applied", post(agent_applied))
        .merge(v1)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), observe))
        .with_state(app)
}

async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => ApiError::Unauthorized("missing bearer token").into_response(),
        Some(token) if !app.token_matches(token.trim()) => {
            ApiError::Unauthorized("wrong bearer token").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// The boot an agent request belongs to, from its bearer token.
async fn agent_session(app: &App, headers: &HeaderMap) -> Result<BootSession, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Daemon(AppError::AgentToken(
            "missing bearer token",
        )))?;
    Ok(app.agent_session(token.trim()).await?)
}

async fn agent_inventory(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<InventoryReport>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let Json(report) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    Ok(Json(app.agent_inventory(&session, &report).await?))
}

async fn agent_heartbeat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<Heartbeat>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let Json(beat) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    Ok(Json(app.agent_heartbeat(&session, &beat).await?))
}

async fn agent_plan(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<HostPlan> {
    let session = agent_session(&app, &headers).await?;
    Ok(Json(app.agent_plan(&session).await?))
}

async fn agent_applied(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<AppliedReport>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let Json(applied) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    Ok(Json(app.agent_applied(&session, &applied).await?))
}

async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_ascii_lowercase();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status,
        })
        .inc();
    app.metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    app.refresh_metrics().await?;
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

async fn list_nodes(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let nodes = app.store.nodes().await?;
    // One allocation of about the right size instead of a doubling buffer:
    // a 10,000-node list is ~6 MB of JSON.
    let mut body = Vec::with_capacity(nodes.len() * 640 + 2);
    serde_json::to_writer(&mut body, &nodes)
        .map_err(|e| ApiError::Daemon(AppError::Internal(format!("cannot encode nodes: {e}"))))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

async fn show_node(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult<NodeRecord> {
    Ok(Json(app.store.node(&name).await?))
}

async fn node_inventory(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<StoredInventory> {
    match app.store.inventory(&name).await? {
        Some(inventory) => Ok(Json(inventory)),
        None => Err(AppError::NoInventory(name).into()),
    }
}

async fn node_progress(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<NodeProgress> {
    Ok(Json(app.store.node_progress(&name).await?))
}

async fn node_history(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Vec<HistoryEntry>> {
    Ok(Json(app.store.history(&name).await?))
}

/// Deleting a node that a BMC or agent may still be acting on would lose
/// track of real hardware: only nodes at rest (or in maintenance) go.
async fn delete_node(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node = app.store.node(&name).await?;
    if node.state.is_waiting() && !node.maintenance {
        return Err(AppError::BadRequest(format!(
            "node `{name}` is {}: abort it or put it in maintenance before deleting it",
            node.state
        ))
        .into());
    }
    app.store.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_maintenance(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Json<MaintenanceRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<NodeRecord> {
    let Json(request) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    let event = if request.maintenance {
        Event::MaintenanceOn
    } else {
        Event::MaintenanceOff
    };
    Ok(Json(app.fire(&name, event, request.reason).await?))
}

async fn node_event(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Json<EventRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<NodeRecord> {
    let Json(request) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    if !request.event.is_manual() {
        return Err(AppError::BadRequest(format!(
            "`{}` comes from agents and timers, not from operators; send one of inspect, deploy, \
             undeploy, clean, abort",
            request.event
        ))
        .into());
    }
    let reason = request
        .reason
        .or_else(|| Some("requested through the API".to_owned()));
    Ok(Json(app.fire(&name, request.event, reason).await?))
}

async fn apply_status(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<ApplyStatus> {
    Ok(Json(app.store.apply_status(&name).await?))
}

async fn request_apply(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<ApplyStatus> {
    Ok(Json(app.request_apply(&name).await?))
}

async fn read_power(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<PowerReport> {
    Ok(Json(app.node_power(&name, None).await?))
}

async fn change_power(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Json<PowerRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<PowerReport> {
    let Json(request) = body.map_err(|e| ApiError::BadJson(e.body_text()))?;
    Ok(Json(app.node_power(&name, Some(request.action)).await?))
}

async fn site_status(State(app): State<Arc<App>>) -> ApiResult<SiteStatus> {
    Ok(Json(app.site_status()))
}

async fn site_reload(State(app): State<Arc<App>>) -> ApiResult<SyncReport> {
    Ok(Json(app.reload().await?))
}

/// The OpenAPI 3.1 document. Schemas come from the Rust types (schemars);
/// paths are listed here, checked against [`ROUTES`] by a test.
pub fn openapi() -> serde_json::Value {
    use schemars::generate::SchemaSettings;
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut refs = serde_json::Map::new();
    let mut add = |name: &str, schema: schemars::Schema| {
        refs.insert(name.to_owned(), schema.to_value());
    };
    add("NodeList", generator.subschema_for::<Vec<NodeRecord>>());
    add("Node", generator.subschema_for::<NodeRecord>());
    add("History", generator.subschema_for::<Vec<HistoryEntry>>());
    add("Progress", generator.subschema_for::<NodeProgress>());
    add("Inventory", generator.subschema_for::<StoredInventory>());
    add(
        "InventoryReport",
        generator.subschema_for::<InventoryReport>(),
    );
    add("Heartbeat", generator.subschema_for::<Heartbeat>());
    add("Command", generator.subschema_for::<Command>());
    add("HostPlan", generator.subschema_for::<HostPlan>());
    add("AppliedReport", generator.subschema_for::<AppliedReport>());
    add("ApplyStatus", generator.subschema_for::<ApplyStatus>());
    add(
        "Maintenance",
        generator.subschema_for::<MaintenanceRequest>(),
    );
    add("Event", generator.subschema_for::<EventRequest>());
    add("PowerRequest", generator.subschema_for::<PowerRequest>());
    add("Power", generator.subschema_for::<PowerReport>());
    add("SiteStatus", generator.subschema_for::<SiteStatus>());
    add("SyncReport", generator.subschema_for::<SyncReport>());
    add("Error", generator.subschema_for::<ErrorBody>());
    let mut components = serde_json::Map::new();
    for (name, schema) in generator.take_definitions(true) {
        components.insert(name, schema);
    }
    let schema = |name: &str| refs[name].clone();
    let json_body = |name: &str| json!({"content": {"application/json": {"schema": schema(name)}}});
    let ok = |description: &str, name: &str| json!({"description": description, "content": {"application/json": {"schema": schema(name)}}});
    let errors = json!({
        "401": {"description": "missing or wrong bearer token", "content": {"application/json": {"schema": schema("Error")}}},
        "404": {"description": "no such node", "content": {"application/json": {"schema": schema("Error")}}},
        "409": {"description": "refused in the node's state, or in maintenance", "content": {"application/json": {"schema": schema("Error")}}}
    });
    let with_errors = |mut responses: serde_json::Value| {
        for (code, body) in errors.as_object().into_iter().flatten() {
            responses[code] = body.clone();
        }
        responses
    };
    let name_param =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "provisioner API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bare-metal provisioner: nodes, lifecycle, site. Every /api/v1 route needs `Authorization: Bearer TOKEN` (the token is in STATE/api-token)."
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "agent": {"type": "http", "scheme": "bearer", "description": "per-boot token from the kernel command line"}}
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "OpenMetrics text"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/boot/{file}": {
                "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}, "description": "`MAC.ipxe` (lowercase colon form) for a machine's iPXE script, else a file of the boot-files directory (e.g. snponly.efi)"}],
                "get": {"summary": "iPXE script of a machine (issues its per-boot token), or a boot file", "security": [], "responses": {
                    "200": {"description": "the script (text/plain) or the file"},
                    "206": {"description": "the requested byte range of a file"},
                    "304": {"description": "If-None-Match matched the file's ETag"},
                    "404": {"description": "no such file, or not a MAC"},
                    "416": {"description": "the range starts past the end of the file"}}}
            },
            "/images/{image}/{file}": {
                "parameters": [
                    {"name": "image", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "file", "in": "path", "required": true, "schema": {"type": "string"}, "description": "ramdisk images: vmlinuz or initramfs; file images: the file's name"}],
                "get": {"summary": "A catalog image file, streamed (Range, ETag, If-None-Match, If-Range)", "security": [], "responses": {
                    "200": {"description": "the file"},
                    "206": {"description": "the requested byte range"},
                    "304": {"description": "If-None-Match matched"},
                    "404": {"description": "no such image or file"},
                    "416": {"description": "the range starts past the end of the file"}}}
            },
            "/api/v1/nodes": {"get": {"summary": "List nodes", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("nodes by name", "NodeList")}))}},
            "/api/v1/nodes/{name}": {
                "parameters": name_param,
                "get": {"summary": "Show a node", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("the node", "Node")}))},
                "delete": {"summary": "Delete a node at rest (or in maintenance)", "security": [{"bearer": []}], "responses": with_errors(json!({"204": {"description": "deleted"}, "400": ok("node is busy", "Error")}))}
            },
            "/api/v1/nodes/{name}/history": {
                "parameters": name_param,
                "get": {"summary": "A node's transitions, oldest first", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("history", "History")}))}
            },
            "/api/v1/nodes/{name}/progress": {
                "parameters": name_param,
                "get": {"summary": "Boot steps seen in the node's current state, and its queued BMC actions", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("progress", "Progress")}))}
            },
            "/api/v1/nodes/{name}/inventory": {
                "parameters": name_param,
                "get": {"summary": "The node's inventory as its inspection agent reported it", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("the stored inventory", "Inventory")}))}
            },
            "/api/agent/v1/inventory": {
                "post": {"summary": "Agent: report this machine's inventory; answers the next command", "description": "Bearer = the per-boot token of the kernel command line (provisioner.token=). An enrolled or inspecting node becomes available; an unknown machine is enrolled as discovered when site.yaml allows it (else 403).", "security": [{"agent": []}], "requestBody": json_body("InventoryReport"), "responses": {"200": ok("the next command", "Command"), "400": ok("bad body", "Error"), "401": ok("unknown, superseded or other-MAC boot token", "Error"), "403": ok("unknown machine and discovery is off", "Error"), "409": ok("the node's state refuses it", "Error")}}
            },
            "/api/agent/v1/heartbeat": {
                "post": {"summary": "Agent: I am alive; answers the next command", "security": [{"agent": []}], "requestBody": json_body("Heartbeat"), "responses": {"200": ok("the next command", "Command"), "400": ok("bad body", "Error"), "401": ok("unknown, superseded or other-MAC boot token", "Error")}}
            },
            "/api/agent/v1/plan": {
                "get": {"summary": "Agent: the host plan of this boot's node (to apply after an `apply` command)", "security": [{"agent": []}], "responses": {"200": ok("the node's host plan", "HostPlan"), "401": ok("unknown or superseded boot token", "Error"), "404": ok("the node has no plan (or the machine is unknown)", "Error")}}
            },
            "/api/agent/v1/applied": {
                "post": {"summary": "Agent: what applying the host plan did; answers the next command", "description": "Stored as the node's last apply report (`GET /api/v1/nodes/{name}/apply`); clears the operator's pending request.", "security": [{"agent": []}], "requestBody": json_body("AppliedReport"), "responses": {"200": ok("the next command", "Command"), "400": ok("bad body, or an unknown machine", "Error"), "401": ok("unknown, superseded or other-MAC boot token", "Error")}}
            },
            "/api/v1/nodes/{name}/apply": {
                "parameters": name_param,
                "get": {"summary": "The pending apply request and the agent's last apply report", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("apply status", "ApplyStatus")}))},
                "post": {"summary": "Ask the node's running agent to apply its host plan (with its next heartbeat)", "description": "Refused (409) unless the node is available, out of maintenance, has a plan and its agent was heard from within three heartbeat intervals, at least 30 s (site.yaml `lifecycle.after_inspection: wait` keeps it up).", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("the request is pending", "ApplyStatus")}))}
            },
            "/api/v1/nodes/{name}/maintenance": {
                "parameters": name_param,
                "put": {"summary": "Turn maintenance on or off", "security": [{"bearer": []}], "requestBody": json_body("Maintenance"), "responses": with_errors(json!({"200": ok("the node", "Node"), "400": ok("bad body", "Error")}))}
            },
            "/api/v1/nodes/{name}/events": {
                "parameters": name_param,
                "post": {"summary": "Send a manual lifecycle event", "security": [{"bearer": []}], "requestBody": json_body("Event"), "responses": with_errors(json!({"200": ok("the node after the transition", "Node"), "400": ok("bad body or not a manual event", "Error")}))}
            },
            "/api/v1/nodes/{name}/power": {
                "parameters": name_param,
                "get": {"summary": "Read the node's power state from its BMC", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("power state", "Power"), "502": ok("the BMC failed or refused", "Error"), "504": ok("the BMC did not answer in time", "Error")}))},
                "post": {"summary": "Change the node's power through its BMC", "security": [{"bearer": []}], "requestBody": json_body("PowerRequest"), "responses": with_errors(json!({"200": ok("accepted; the state read after", "Power"), "400": ok("bad body", "Error"), "501": ok("the BMC does not offer this", "Error"), "502": ok("the BMC failed or refused", "Error"), "504": ok("the BMC did not answer in time", "Error")}))}
            },
            "/api/v1/site": {"get": {"summary": "Active site and last refused change", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("site status", "SiteStatus")}))}},
            "/api/v1/site/reload": {"post": {"summary": "Reload the site directory", "security": [{"bearer": []}], "responses": with_errors(json!({"200": ok("what changed", "SyncReport"), "422": ok("the change was refused; the last good site stays", "Error")}))}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc = openapi();
        let mut documented: Vec<(String, String)> = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
            {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
        // Every $ref resolves to a component.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
