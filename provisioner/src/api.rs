//! The REST API (axum, JSON): nodes, their history and inventory, maintenance,
//! manual lifecycle events, applying a node's host plan, site reload; the agent API under `/api/agent/v1/`;
//! `/api/openapi.json`, `/metrics`, `/healthz`.
//!
//! Every route is one entry of `routes`: method, path, who may call it,
//! summary, handler. The router ([`router`]) and the OpenAPI document
//! (`openapi`) are both built from that table, and the request and answer
//! schemas of a JSON operation come from its handler's argument and result
//! types (`Operation`, in `api/route.rs`), so a route cannot exist
//! undocumented and a handler cannot answer another type than the documented one.
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
//! - `/api/host/v1/*` (installed hosts) requires the node credential of the
//!   node's last deploy (its SHA-256 compared in constant time).
//! - Handlers answer views ([`crate::views`]), never store rows.
//! - Errors map to HTTP status in one exhaustive match (`status_of`) and the
//!   body is always `{"error": ..., "hint": ...}`.
//! - The committed `provisioner/openapi.json` is the generated document (a test
//!   checks).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::app::{App, AppError};
use crate::bmc::BmcError;
use crate::lifecycle::{Event, TransitionError};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::store::{BootSession, StoreError};
use crate::views::{
    self, DeployRequest, ErrorBody, EventRequest, MaintenanceRequest, PowerRequest, UndeployRequest,
};
use model::agent::{AppliedReport, Command, Heartbeat, InventoryReport};
use model::deploy::{CleanedReport, DeployedReport, EraseMode, HostCommand, HostReport};
use model::plan::HostPlan;

mod route;

pub use route::openapi_json;
pub(crate) use route::{Answer, Auth, Body, Method, NoContent, Route};
use route::{SchemaFn, schema_of};

/// An API failure, mapped to HTTP by [`status_of`].
#[derive(Debug)]
pub(crate) enum ApiError {
    Unauthorized(&'static str),
    App(AppError),
    BadJson(String),
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        ApiError::App(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::App(AppError::Store(err))
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
        ApiError::App(err) => match err {
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
            D::ApplyRefused(_) | D::DeployRefused(_) => (StatusCode::CONFLICT, None),
            D::HostCredential(_) => (
                StatusCode::UNAUTHORIZED,
                Some(
                    "the host sends the credential of its sealed config (config partition); \
                     a new deploy or an undeploy replaces it: redeploy the node"
                        .into(),
                ),
            ),
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
            ApiError::App(AppError::SiteInvalid(errors)) => {
                details = errors.0.iter().map(ToString::to_string).collect();
                self_message(&self)
            }
            ApiError::App(err) => err.to_string(),
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
        ApiError::App(err) => err.to_string(),
        ApiError::Unauthorized(why) => (*why).to_owned(),
        ApiError::BadJson(msg) => msg.clone(),
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The node list, encoded into one buffer of about the right size instead of
/// a doubling one: a 10,000-node list is ~6 MB of JSON.
#[derive(Debug)]
pub(crate) struct NodeList(Vec<views::Node>);

impl IntoResponse for NodeList {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.0.len() * 640 + 2);
        if let Err(e) = serde_json::to_writer(&mut body, &self.0) {
            return ApiError::App(AppError::Internal(format!("cannot encode nodes: {e}")))
                .into_response();
        }
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

impl Answer for NodeList {
    const STATUS: u16 = 200;
    fn body_schema() -> Option<SchemaFn> {
        Some(schema_of::<Vec<views::Node>>)
    }
}

/// Every route of the daemon's HTTP surface, in the order of the document.
pub(crate) fn routes() -> Vec<Route> {
    use Auth::{Agent, Host, Operator, Public};
    use Method::{Delete, Get, Post, Put};
    const NOT_NOW: &str = "refused in the node's state, or in maintenance";
    const BMC_FAILED: &str = "the BMC failed or refused";
    const BMC_SLOW: &str = "the BMC did not answer in time";
    vec![
        Route::raw(Get, "/healthz", Public, "Liveness", || async { "ok\n" }).answer(200, "ok"),
        Route::raw(Get, "/metrics", Public, "Prometheus metrics", metrics)
            .answer(200, "OpenMetrics text"),
        Route::raw(
            Get,
            "/api/openapi.json",
            Public,
            "This document",
            serve_openapi,
        )
        .answer(200, "OpenAPI 3.1"),
        // Boot routes: firmware and iPXE cannot send the operator token.
        Route::raw(
            Get,
            "/boot/{file}",
            Public,
            "iPXE script of a machine (issues its per-boot token), or a boot file",
            crate::boot::boot_file,
        )
        .param(
            "file",
            "`MAC.ipxe` (lowercase colon form) for a machine's iPXE script, else a file of \
             the boot-files directory (e.g. snponly.efi)",
        )
        .answer(200, "the script (text/plain) or the file")
        .answer(206, "the requested byte range of a file")
        .answer(304, "If-None-Match matched the file's ETag")
        .answer(404, "no such file, or not a MAC")
        .answer(416, "the range starts past the end of the file"),
        Route::raw(
            Get,
            "/images/{image}/{file}",
            Public,
            "A catalog image file, streamed (Range, ETag, If-None-Match, If-Range)",
            crate::boot::image_file,
        )
        .param("image", "an image of site.yaml `images`")
        .param(
            "file",
            "ramdisk images: vmlinuz or initramfs; host images: host.raw.zst or manifest.json; \
             file images: the file's name",
        )
        .answer(200, "the file")
        .answer(206, "the requested byte range")
        .answer(304, "If-None-Match matched")
        .answer(404, "no such image or file")
        .answer(416, "the range starts past the end of the file"),
        // The operator API.
        Route::json(Get, "/api/v1/nodes", Operator, "List nodes", list_nodes).ok("nodes by name"),
        Route::json(
            Get,
            "/api/v1/nodes/{name}",
            Operator,
            "Show a node",
            show_node,
        )
        .ok("the node"),
        Route::json(
            Delete,
            "/api/v1/nodes/{name}",
            Operator,
            "Delete a node at rest (or in maintenance)",
            delete_node,
        )
        .ok("deleted")
        .error(
            400,
            "the node is busy: abort it or put it in maintenance first",
        ),
        Route::json(
            Get,
            "/api/v1/nodes/{name}/history",
            Operator,
            "A node's transitions, oldest first",
            node_history,
        )
        .ok("history"),
        Route::json(
            Get,
            "/api/v1/nodes/{name}/inventory",
            Operator,
            "The node's inventory as its inspection agent reported it",
            node_inventory,
        )
        .ok("the stored inventory")
        .error(404, "no such node, or no inventory yet"),
        Route::json(
            Get,
            "/api/v1/nodes/{name}/progress",
            Operator,
            "Boot steps seen in the node's current state, and its queued BMC actions",
            node_progress,
        )
        .ok("progress"),
        Route::json(
            Put,
            "/api/v1/nodes/{name}/maintenance",
            Operator,
            "Turn maintenance on or off",
            set_maintenance,
        )
        .ok("the node")
        .error(409, NOT_NOW),
        Route::json(
            Post,
            "/api/v1/nodes/{name}/events",
            Operator,
            "Send a manual lifecycle event",
            node_event,
        )
        .ok("the node after the transition")
        .error(400, "bad body or not a manual event")
        .error(409, NOT_NOW),
        Route::json(
            Get,
            "/api/v1/nodes/{name}/apply",
            Operator,
            "The pending apply request and the agent's last apply report",
            apply_status,
        )
        .ok("apply status"),
        Route::json(
            Post,
            "/api/v1/nodes/{name}/apply",
            Operator,
            "Ask the node's running agent to apply its host plan (with its next heartbeat)",
            request_apply,
        )
        .describe(
            "Refused (409) unless the node is available, out of maintenance, has a plan and \
             its agent was heard from within three heartbeat intervals, at least 30 s \
             (site.yaml `lifecycle.after_inspection: wait` keeps it up).",
        )
        .ok("the request is pending")
        .error(409, "refused: the message says why and what to do"),
        Route::json(
            Post,
            "/api/v1/nodes/{name}/deploy",
            Operator,
            "Deploy a host image to the node",
            deploy_node,
        )
        .describe(
            "The image is the body's `image`, else the node's `image` in nodes.yaml, else its \
             profile's; it must be a `host:` image of site.yaml. Refused (409) when the node \
             has no host plan, no such image, a legacy BIOS firmware, or a state that does not \
             allow `deploy` (available, or failed while deploying).",
        )
        .ok("the node after the transition (deploying)")
        .error(409, "refused: the message says why and what to do"),
        Route::json(
            Post,
            "/api/v1/nodes/{name}/undeploy",
            Operator,
            "Undeploy an active node, or clean an available or failed one",
            undeploy_node,
        )
        .describe(
            "The node network-boots its agent, which erases every disk: `metadata` (default: \
             partition tables and signatures) or `full` (every byte); then it is available.",
        )
        .ok("the node after the transition (cleaning)")
        .error(409, NOT_NOW),
        Route::json(
            Get,
            "/api/v1/nodes/{name}/power",
            Operator,
            "Read the node's power state from its BMC",
            read_power,
        )
        .ok("power state")
        .error(409, "the node has no BMC")
        .error(502, BMC_FAILED)
        .error(504, BMC_SLOW),
        Route::json(
            Post,
            "/api/v1/nodes/{name}/power",
            Operator,
            "Change the node's power through its BMC",
            change_power,
        )
        .ok("accepted; the state read after")
        .error(409, "the node has no BMC")
        .error(501, "the BMC does not offer this")
        .error(502, BMC_FAILED)
        .error(504, BMC_SLOW),
        Route::json(
            Get,
            "/api/v1/site",
            Operator,
            "Active site and last refused change",
            site_status,
        )
        .ok("site status"),
        Route::json(
            Post,
            "/api/v1/site/reload",
            Operator,
            "Reload the site directory",
            site_reload,
        )
        .ok("what changed")
        .error(422, "the change was refused; the last good site stays"),
        // The agent API: the per-boot token is checked in the handlers.
        Route::json(
            Post,
            "/api/agent/v1/inventory",
            Agent,
            "Agent: report this machine's inventory; answers the next command",
            agent_inventory,
        )
        .describe(
            "Bearer = the per-boot token of the kernel command line (provisioner.token=). An \
             enrolled or inspecting node becomes available; an unknown machine is enrolled as \
             discovered when site.yaml allows it (else 403).",
        )
        .ok("the next command")
        .error(403, "unknown machine and discovery is off")
        .error(409, "the node's state refuses it"),
        Route::json(
            Post,
            "/api/agent/v1/heartbeat",
            Agent,
            "Agent: I am alive; answers the next command",
            agent_heartbeat,
        )
        .ok("the next command"),
        Route::json(
            Get,
            "/api/agent/v1/plan",
            Agent,
            "Agent: the host plan of this boot's node (to apply after an `apply` command)",
            agent_plan,
        )
        .ok("the node's host plan")
        .error(404, "the node has no plan (or the machine is unknown)"),
        Route::json(
            Post,
            "/api/agent/v1/applied",
            Agent,
            "Agent: what applying the host plan did; answers the next command",
            agent_applied,
        )
        .describe(
            "Stored as the node's last apply report (`GET /api/v1/nodes/{name}/apply`); clears \
             the operator's pending request.",
        )
        .ok("the next command")
        .error(400, "bad body, or an unknown machine"),
        Route::json(
            Post,
            "/api/agent/v1/deployed",
            Agent,
            "Agent: the host image is written (or the deploy failed); answers the next command",
            agent_deployed,
        )
        .describe(
            "Success: the node's boot device is set to disk (persistent) and it is reset; it \
             stays deploying until the installed host reports. An `error` fails the node with \
             the step and the error.",
        )
        .ok("the next command")
        .error(400, "bad body, or an unknown machine"),
        Route::json(
            Post,
            "/api/agent/v1/cleaned",
            Agent,
            "Agent: the disks are erased (or the clean failed); answers the next command",
            agent_cleaned,
        )
        .ok("the next command")
        .error(400, "bad body, or an unknown machine"),
        // The installed host: the node credential is checked in the handler.
        Route::json(
            Post,
            "/api/host/v1/report",
            Host,
            "Installed host: what it booted and what applying its plan did",
            host_report,
        )
        .describe(
            "Bearer = the node credential of the host's sealed config. A deploying node \
             becomes active when the host booted the version and root hash deployed and \
             applied its plan; otherwise it fails saying what differs.",
        )
        .ok("what to do next")
        .error(401, "unknown or revoked node credential"),
    ]
}

/// The whole HTTP surface of the daemon, built from `routes`.
pub fn router(app: Arc<App>) -> Router {
    let (operator, other) = routers();
    other
        .merge(operator.route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        )))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), observe))
        .with_state(app)
}

/// The routes needing the operator token, and the others.
fn routers() -> (Router<Arc<App>>, Router<Arc<App>>) {
    let mut operator = Router::new();
    let mut other = Router::new();
    for route in routes() {
        match route.auth {
            Auth::Operator => operator = operator.route(route.path, route.handler),
            Auth::Public | Auth::Agent | Auth::Host => {
                other = other.route(route.path, route.handler);
            }
        }
    }
    (operator, other)
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
        .ok_or(ApiError::App(AppError::AgentToken("missing bearer token")))?;
    Ok(app.agent_session(token.trim()).await?)
}

/// The API base URL the agent reached us at (what its kernel command line's
/// `provisioner.url=` says): deploy orders point there.
fn base_url(app: &App, headers: &HeaderMap) -> String {
    format!("http://{}", crate::boot::server_of(app, headers))
}

async fn agent_inventory(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<InventoryReport>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let report = body.take()?;
    let base = base_url(&app, &headers);
    Ok(Json(app.agent_inventory(&session, &report, &base).await?))
}

async fn agent_heartbeat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<Heartbeat>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let beat = body.take()?;
    let base = base_url(&app, &headers);
    Ok(Json(app.agent_heartbeat(&session, &beat, &base).await?))
}

async fn agent_deployed(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<DeployedReport>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let report = body.take()?;
    let base = base_url(&app, &headers);
    Ok(Json(app.agent_deployed(&session, &report, &base).await?))
}

async fn agent_cleaned(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<CleanedReport>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let report = body.take()?;
    let base = base_url(&app, &headers);
    Ok(Json(app.agent_cleaned(&session, &report, &base).await?))
}

async fn host_report(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<HostReport>,
) -> ApiResult<HostCommand> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::App(AppError::HostCredential(
            "missing bearer credential",
        )))?;
    let report = body.take();
    let claimed = report.as_ref().ok().map(|r| r.node.as_str());
    let node = app.host_node(credential.trim(), claimed).await?;
    let report = report?;
    Ok(Json(app.host_report(&node, &report).await?))
}

async fn agent_plan(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<HostPlan> {
    let session = agent_session(&app, &headers).await?;
    Ok(Json(app.agent_plan(&session).await?))
}

async fn agent_applied(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<AppliedReport>,
) -> ApiResult<Command> {
    let session = agent_session(&app, &headers).await?;
    let applied = body.take()?;
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

async fn serve_openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi_json(),
    )
        .into_response()
}

async fn list_nodes(State(app): State<Arc<App>>) -> Result<NodeList, ApiError> {
    let nodes = app.store.nodes().await?;
    let mut deploys = app.store.deploy_statuses().await?;
    Ok(NodeList(
        nodes
            .into_iter()
            .map(|node| {
                let deploy = deploys.remove(&node.name);
                views::Node::from(node).with_deploy(deploy)
            })
            .collect(),
    ))
}

async fn show_node(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::Node> {
    let node = app.store.node(&name).await?;
    Ok(Json(node_view(&app, node).await?))
}

async fn node_inventory(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::StoredInventory> {
    match app.store.inventory(&name).await? {
        Some(inventory) => Ok(Json(inventory.into())),
        None => Err(AppError::NoInventory(name).into()),
    }
}

async fn node_progress(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::Progress> {
    Ok(Json(app.store.node_progress(&name).await?.into()))
}

async fn node_history(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Vec<views::HistoryEntry>> {
    let history = app.store.history(&name).await?;
    Ok(Json(
        history.into_iter().map(views::HistoryEntry::from).collect(),
    ))
}

/// Deleting a node that a BMC or agent may still be acting on would lose
/// track of real hardware: only nodes at rest (or in maintenance) go.
async fn delete_node(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<NoContent, ApiError> {
    let node = app.store.node(&name).await?;
    if node.state.is_waiting() && !node.maintenance {
        return Err(AppError::BadRequest(format!(
            "node `{name}` is {}: abort it or put it in maintenance before deleting it",
            node.state
        ))
        .into());
    }
    app.store.delete(&name).await?;
    Ok(NoContent)
}

async fn set_maintenance(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body<MaintenanceRequest>,
) -> ApiResult<views::Node> {
    let request = body.take()?;
    let event = if request.maintenance {
        Event::MaintenanceOn
    } else {
        Event::MaintenanceOff
    };
    Ok(Json(app.fire(&name, event, request.reason).await?.into()))
}

async fn node_event(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body<EventRequest>,
) -> ApiResult<views::Node> {
    let request = body.take()?;
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
    // Deploys and cleans carry more than the event: the checks and the image,
    // the erase mode.
    let node = match request.event {
        Event::Deploy => app.deploy(&name, None).await?,
        Event::Undeploy | Event::Clean => {
            app.start_clean(&name, request.event, EraseMode::Metadata, reason)
                .await?
        }
        event => app.fire(&name, event, reason).await?,
    };
    Ok(Json(node_view(&app, node).await?))
}

async fn deploy_node(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body<DeployRequest>,
) -> ApiResult<views::Node> {
    let request = body.take()?;
    let node = app.deploy(&name, request.image).await?;
    Ok(Json(node_view(&app, node).await?))
}

async fn undeploy_node(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body<UndeployRequest>,
) -> ApiResult<views::Node> {
    let request = body.take()?;
    let node = app.undeploy(&name, request.erase).await?;
    Ok(Json(node_view(&app, node).await?))
}

/// A node's view with its deploy record.
async fn node_view(app: &App, node: crate::store::NodeRecord) -> Result<views::Node, ApiError> {
    let deploy = app.store.deploy_status(&node.name).await?;
    Ok(views::Node::from(node).with_deploy(deploy))
}

async fn apply_status(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::ApplyStatus> {
    Ok(Json(app.store.apply_status(&name).await?.into()))
}

async fn request_apply(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::ApplyStatus> {
    Ok(Json(app.request_apply(&name).await?.into()))
}

async fn read_power(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<views::PowerReport> {
    Ok(Json(app.node_power(&name, None).await?.into()))
}

async fn change_power(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Body<PowerRequest>,
) -> ApiResult<views::PowerReport> {
    let request = body.take()?;
    Ok(Json(
        app.node_power(&name, Some(request.action)).await?.into(),
    ))
}

async fn site_status(State(app): State<Arc<App>>) -> ApiResult<views::SiteStatus> {
    Ok(Json(app.site_status().into()))
}

async fn site_reload(State(app): State<Arc<App>>) -> ApiResult<views::ReloadReport> {
    Ok(Json(app.reload().await?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_is_built_from_the_table_without_overlaps() {
        // `Router::route` panics on a route that overlaps another one.
        let (operator, other) = routers();
        let _ = other.merge(operator);
    }

    #[test]
    fn only_the_operator_api_takes_the_operator_token() {
        for route in routes() {
            let expected = if route.path.starts_with("/api/v1/") {
                Auth::Operator
            } else if route.path.starts_with("/api/agent/v1/") {
                Auth::Agent
            } else if route.path.starts_with("/api/host/v1/") {
                Auth::Host
            } else {
                Auth::Public
            };
            assert_eq!(
                route.auth,
                expected,
                "{} {}",
                route.method.as_str(),
                route.path
            );
        }
    }
}
