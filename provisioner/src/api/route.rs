//! The route table's machinery: a [`Route`] (method, path, who may call it,
//! summary, handler) documents itself from its handler's types ([`Operation`]:
//! the [`Argument`] that is a JSON [`Body`] gives the request schema, the
//! [`Answer`] gives the success status and its schema), and [`openapi`] makes
//! the OpenAPI 3.1 document of the table in `super::routes`.
//!
//! Invariant: nothing here knows a particular route; the table is in `api.rs`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::json;

use super::{ApiError, routes};
use crate::app::App;
use crate::views::ErrorBody;

/// Makes the schema of a type in the document's generator (a `$ref` for named types).
pub(super) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

pub(super) fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A JSON request body. A malformed body becomes a 400 when the handler takes
/// it ([`Body::take`]), after the handler's own checks (an agent with a bad
/// token gets its 401 whatever it sent).
#[derive(Debug)]
pub(crate) struct Body<T>(Result<T, ApiError>);

impl<T> Body<T> {
    /// The body, or the 400 that says what is wrong with it.
    pub(crate) fn take(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T, S> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &S) -> Result<Self, Infallible> {
        Ok(Body(
            Json::<T>::from_request(request, state)
                .await
                .map(|Json(body)| body)
                .map_err(|e| ApiError::BadJson(e.body_text())),
        ))
    }
}

/// An argument of a handler, as the document sees it: a JSON body has a schema,
/// the other extractors (state, path, query, headers) have none.
pub(crate) trait Argument {
    fn body_schema() -> Option<SchemaFn> {
        None
    }
}

impl<T: JsonSchema> Argument for Body<T> {
    fn body_schema() -> Option<SchemaFn> {
        Some(schema_of::<T>)
    }
}
impl<S> Argument for State<S> {}
impl<T> Argument for Path<T> {}
impl<T> Argument for Query<T> {}
impl Argument for HeaderMap {}

/// A handler's result, as the document sees it: the success status and its body.
pub(crate) trait Answer {
    const STATUS: u16;
    fn body_schema() -> Option<SchemaFn>;
}

impl<T: JsonSchema> Answer for Json<T> {
    const STATUS: u16 = 200;
    fn body_schema() -> Option<SchemaFn> {
        Some(schema_of::<T>)
    }
}

impl<T: Answer> Answer for Result<T, ApiError> {
    const STATUS: u16 = T::STATUS;
    fn body_schema() -> Option<SchemaFn> {
        T::body_schema()
    }
}

/// `204 No Content`.
#[derive(Debug)]
pub(crate) struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

impl Answer for NoContent {
    const STATUS: u16 = 204;
    fn body_schema() -> Option<SchemaFn> {
        None
    }
}

/// A handler whose request and answer the document can describe: an async
/// function of [`Argument`]s returning an [`Answer`].
pub(crate) trait Operation<Args> {
    /// The schema of the JSON request body, if the handler takes one.
    fn request() -> Option<SchemaFn>;
    /// The success status and the schema of its body.
    fn answer() -> (u16, Option<SchemaFn>);
}

macro_rules! impl_operation {
    ($($arg:ident),*) => {
        impl<F, Fut, R, $($arg,)*> Operation<($($arg,)*)> for F
        where
            F: FnOnce($($arg,)*) -> Fut,
            Fut: Future<Output = R>,
            R: Answer,
            $($arg: Argument,)*
        {
            fn request() -> Option<SchemaFn> {
                #[allow(unused_mut)]
                let mut body = None;
                $(body = body.or_else(<$arg as Argument>::body_schema);)*
                body
            }
            fn answer() -> (u16, Option<SchemaFn>) {
                (R::STATUS, R::body_schema())
            }
        }
    };
}

impl_operation!();
impl_operation!(A1);
impl_operation!(A1, A2);
impl_operation!(A1, A2, A3);
impl_operation!(A1, A2, A3, A4);

// ---------------------------------------------------------------------------------------
// The route table.

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Anyone (liveness, metrics, this document, boot files for firmware).
    Public,
    /// The operator's bearer token (STATE/api-token), checked by a layer.
    Operator,
    /// The per-boot token of the reporting agent, checked by the handler.
    Agent,
    /// The node credential of an installed host, checked by the handler.
    Host,
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Put => MethodFilter::PUT,
            Method::Post => MethodFilter::POST,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// The body of a documented answer.
#[derive(Debug, Clone, Copy)]
enum AnswerBody {
    /// No body, or one that is not JSON (text, files).
    Opaque,
    Json(SchemaFn),
}

/// One documented answer of an operation.
#[derive(Debug, Clone, Copy)]
struct Documented {
    status: u16,
    description: &'static str,
    body: AnswerBody,
}

/// One operation of the API: how it is documented and the handler that serves it.
#[derive(Debug)]
pub(crate) struct Route {
    pub method: Method,
    /// The axum path template (`{name}` for a path parameter).
    pub path: &'static str,
    pub auth: Auth,
    pub summary: &'static str,
    description: Option<&'static str>,
    /// Descriptions of path parameters (every parameter of the path is documented).
    params: Vec<(&'static str, &'static str)>,
    request: Option<SchemaFn>,
    answers: Vec<Documented>,
    pub(super) handler: MethodRouter<Arc<App>>,
}

impl Route {
    /// A JSON operation: its request and answer schemas are the handler's types.
    /// It documents the errors every such route can answer: 401 (token), 400
    /// (a request body it cannot read), 404 (a node path naming no node).
    pub(super) fn json<H, T, A>(
        method: Method,
        path: &'static str,
        auth: Auth,
        summary: &'static str,
        handler: H,
    ) -> Route
    where
        H: Handler<T, Arc<App>> + Operation<A>,
        T: 'static,
    {
        let (status, body) = H::answer();
        let mut route = Route {
            method,
            path,
            auth,
            summary,
            description: None,
            params: vec![],
            request: H::request(),
            answers: vec![Documented {
                status,
                description: summary,
                body: body.map_or(AnswerBody::Opaque, AnswerBody::Json),
            }],
            handler: on(method.filter(), handler),
        };
        match auth {
            Auth::Operator => route = route.error(401, "missing or wrong bearer token"),
            Auth::Agent => route = route.error(401, "unknown, superseded or other-MAC boot token"),
            Auth::Host => route = route.error(401, "unknown or revoked node credential"),
            Auth::Public => {}
        }
        if route.request.is_some() {
            route = route.error(400, "bad body");
        }
        if path.starts_with("/api/v1/nodes/{name}") {
            route = route.error(404, "no such node");
        }
        route
    }

    /// An operation whose answers are not JSON views (text, files, this document):
    /// each is listed with [`Route::answer`].
    pub(super) fn raw<H, T>(
        method: Method,
        path: &'static str,
        auth: Auth,
        summary: &'static str,
        handler: H,
    ) -> Route
    where
        H: Handler<T, Arc<App>>,
        T: 'static,
    {
        Route {
            method,
            path,
            auth,
            summary,
            description: None,
            params: vec![],
            request: None,
            answers: vec![],
            handler: on(method.filter(), handler),
        }
    }

    /// A longer description of the operation.
    pub(super) fn describe(mut self, description: &'static str) -> Route {
        self.description = Some(description);
        self
    }

    /// What the success answer is (default: the summary).
    pub(super) fn ok(mut self, description: &'static str) -> Route {
        if let Some(first) = self.answers.first_mut() {
            first.description = description;
        }
        self
    }

    /// An error answer (body [`ErrorBody`]); replaces a default one of the same status.
    pub(super) fn error(self, status: u16, description: &'static str) -> Route {
        self.documented(Documented {
            status,
            description,
            body: AnswerBody::Json(schema_of::<ErrorBody>),
        })
    }

    /// An answer without a JSON body.
    pub(super) fn answer(self, status: u16, description: &'static str) -> Route {
        self.documented(Documented {
            status,
            description,
            body: AnswerBody::Opaque,
        })
    }

    fn documented(mut self, answer: Documented) -> Route {
        self.answers.retain(|a| a.status != answer.status);
        self.answers.push(answer);
        self
    }

    /// Describes a path parameter.
    pub(super) fn param(mut self, name: &'static str, description: &'static str) -> Route {
        self.params.push((name, description));
        self
    }

    /// The parameter names of the path template, in order.
    pub(crate) fn path_params(&self) -> Vec<&'static str> {
        self.path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document.

/// The OpenAPI 3.1 document of [`routes`]: paths, parameters and answers from
/// the table, schemas from the handlers' types (schemars).
pub(crate) fn openapi() -> serde_json::Value {
    use schemars::generate::SchemaSettings;
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for route in routes() {
        let item = paths.entry(route.path).or_default();
        let params: Vec<serde_json::Value> = route
            .path_params()
            .into_iter()
            .map(|name| {
                let mut param = json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
                if let Some((_, description)) = route.params.iter().find(|(n, _)| *n == name) {
                    param["description"] = json!(description);
                }
                param
            })
            .collect();
        if !params.is_empty() {
            item.entry("parameters").or_insert_with(|| json!(params));
        }
        let mut answers = serde_json::Map::new();
        for answer in &route.answers {
            let mut body = json!({"description": answer.description});
            if let AnswerBody::Json(schema) = answer.body {
                body["content"] = json!({"application/json": {"schema": schema(&mut generator)}});
            }
            answers.insert(answer.status.to_string(), body);
        }
        let mut operation = json!({
            "summary": route.summary,
            "security": match route.auth {
                Auth::Public => json!([]),
                Auth::Operator => json!([{"bearer": []}]),
                Auth::Agent => json!([{"agent": []}]),
                Auth::Host => json!([{"host": []}]),
            },
            "responses": answers,
        });
        if let Some(description) = route.description {
            operation["description"] = json!(description);
        }
        if let Some(schema) = route.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema(&mut generator)}}
            });
        }
        item.insert(route.method.as_str().to_owned(), operation);
    }
    let components: serde_json::Map<String, serde_json::Value> =
        generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "provisioner API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bare-metal provisioner: nodes, lifecycle, site. Every /api/v1 route needs `Authorization: Bearer TOKEN` (the token is in STATE/api-token)."
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "agent": {"type": "http", "scheme": "bearer", "description": "per-boot token from the kernel command line"}, "host": {"type": "http", "scheme": "bearer", "description": "node credential from the host's sealed config"}}
        },
        "paths": paths,
    })
}

/// `openapi` as the text served at `/api/openapi.json` and committed as
/// `provisioner/openapi.json` (pretty, newline-terminated), made once.
pub fn openapi_json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        serde_json::to_string_pretty(&openapi()).expect("the OpenAPI document serializes") + "\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy of the document, relative to the crate.
    const OPENAPI_FILE: &str = "openapi.json";

    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(OPENAPI_FILE);
        let generated = openapi_json();
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated && std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
            std::fs::write(&path, generated).expect("write the OpenAPI document");
            return;
        }
        assert!(
            committed == generated,
            "{} differs from the document generated from the routes and views (first difference at \
             line {}): regenerate it with UPDATE_SCHEMAS=1 cargo test -p provisioner --lib api \
             and commit it",
            path.display(),
            committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
                + 1
        );
    }

    #[test]
    fn the_document_lists_every_route_once_and_every_ref_resolves() {
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
        let mut table: Vec<(String, String)> = routes()
            .iter()
            .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
            .collect();
        table.sort();
        let before = table.len();
        table.dedup();
        assert_eq!(before, table.len(), "a (method, path) twice in the table");
        assert_eq!(documented, table);
        // Every $ref resolves to a component.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
        // The node views are documented, with their fields.
        let node = &doc["components"]["schemas"]["Node"]["properties"];
        for field in [
            "name",
            "state",
            "failed_from",
            "bmc_url",
            "plan",
            "state_since",
        ] {
            assert!(node.get(field).is_some(), "Node has no `{field}`: {node}");
        }
    }

    #[test]
    fn operations_take_their_schemas_from_the_handlers() {
        let by_key = |method: Method, path: &str| {
            routes()
                .into_iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap()
        };
        let doc = openapi();
        let op = |method: Method, path: &str| doc["paths"][path][method.as_str()].clone();
        assert!(
            by_key(Method::Put, "/api/v1/nodes/{name}/maintenance")
                .request
                .is_some()
        );
        assert_eq!(
            op(Method::Put, "/api/v1/nodes/{name}/maintenance")["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/MaintenanceRequest"
        );
        assert_eq!(
            op(Method::Get, "/api/v1/nodes")["responses"]["200"]["content"]["application/json"]["schema"]
                ["items"]["$ref"],
            "#/components/schemas/Node"
        );
        assert_eq!(
            op(Method::Get, "/api/v1/nodes/{name}/history")["responses"]["200"]["content"]["application/json"]
                ["schema"]["items"]["$ref"],
            "#/components/schemas/HistoryEntry"
        );
        let delete = op(Method::Delete, "/api/v1/nodes/{name}");
        assert!(delete["responses"]["204"].is_object(), "{delete}");
        assert!(
            delete["responses"]["204"].get("content").is_none(),
            "{delete}"
        );
        assert!(
            by_key(Method::Get, "/api/v1/nodes/{name}")
                .request
                .is_none()
        );
        assert_eq!(
            op(Method::Get, "/api/v1/nodes/{name}")["responses"]["404"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
