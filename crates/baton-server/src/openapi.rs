//! The OpenAPI 3.1 document, generated: every route registers its handler's
//! `#[utoipa::path]` (request and response types are the handler's own), and [`finish`] adds
//! what every route shares — bearer authentication, the error responses of the catalogue and
//! the `Idempotency-Key` header — so no route can be served without being documented.

use baton_core::error::ErrorBody;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, Required};
use utoipa::{PartialSchema, ToSchema};

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "Work coordination for AI agents: tasks, leases, dependencies, context \
                       and a live event log. Every route needs `Authorization: Bearer <key>`. \
                       Errors are `{\"error\": {code, message, hint, retryable, details}}`.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "tasks", description = "Creating, reading and shaping tasks"),
        (name = "lease", description = "Claiming and working under a lease"),
        (name = "review", description = "Planner and reviewer transitions"),
        (name = "knowledge", description = "Context entries, steps, dependencies, plans"),
        (name = "artifacts", description = "Files attached to tasks, kept by content hash"),
        (name = "registry", description = "Projects and agents"),
        (name = "events", description = "The event log and its live streams"),
        (name = "admin", description = "Workspaces and keys"),
        (name = "health", description = "Liveness and readiness")
    ),
    components(schemas(ErrorBody))
)]
pub(crate) struct ApiDoc;

/// Status codes every route may answer with an error, and what each means.
const ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "Bad input: malformed JSON, unknown fields, wrong types, bad durations",
    ),
    ("401", "No API key, or one that is not valid"),
    (
        "403",
        "The key's role may not do this, or a kill switch (the project's, the agent's or the workspace's) is set",
    ),
    (
        "404",
        "No such entity in the key's workspace (other workspaces are invisible)",
    ),
    ("413", "The body or a field is over its size limit"),
    (
        "429",
        "RATE_LIMITED: the store is far behind and refuses new work (claims, creation, planning) first, work in hand last; retry after error.details.retry_after_ms (also the Retry-After header, in seconds)",
    ),
    (
        "503",
        "BUSY: the store is shutting down or overloaded; UNAVAILABLE: the database cannot be reached now (down, restarting, not answering). Retry with backoff (error.retryable is true); a write cut off by UNAVAILABLE may have committed, so retry writes with the same Idempotency-Key",
    ),
];

/// Further errors of routes that change state.
const WRITE_ERRORS: [(&str, &str); 2] = [
    (
        "409",
        "Conflict: LEASE_LOST, VERSION_CONFLICT, INVALID_TRANSITION, CYCLE, OPEN_CHILDREN, AT_CAPACITY, ALREADY_EXISTS",
    ),
    (
        "422",
        "Well-formed but refused: SCHEMA_VIOLATION, INVALID_PLAN, IDEMPOTENCY_MISMATCH",
    ),
];

/// Adds the shared parts to the generated document.
pub(crate) fn finish(mut api: OpenApi) -> OpenApi {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    api.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        ErrorBody::name(),
                    ))))
                    .build(),
            )
            .build()
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let public = crate::PUBLIC.contains(&path.as_str());
        // These answer with a key's secret, shown once: they refuse an Idempotency-Key.
        let shows_secret = path == "/v1/workspaces" || path == "/v1/workspaces/{id}/keys";
        for (method, op) in [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ] {
            let Some(op) = op.as_mut() else { continue };
            request_id_header(op);
            if public {
                op.security = Some(vec![SecurityRequirement::default()]);
                op.responses
                    .responses
                    .entry("400".to_string())
                    .or_insert_with(|| error("INVALID_INPUT: a malformed X-Request-Id").into());
                continue;
            }
            let writes = method != HttpMethod::Get;
            let extra: &[(&str, &str)] = if writes { &WRITE_ERRORS } else { &[] };
            for (status, description) in ERRORS.iter().chain(extra) {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description).into());
            }
            if writes && !shows_secret {
                idempotency_header(op);
            }
        }
    }
    api
}

fn request_id_header(op: &mut Operation) {
    op.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("X-Request-Id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The request's id, answered in the response's X-Request-Id and recorded on the \
                 events it appends; without it the server makes one up (req_…).",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[!-~]{1,200}$")),
            ))
            .build(),
    );
}

fn idempotency_header(op: &mut Operation) {
    op.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Repeating a request with the same key and body returns the stored response; \
                 the same key with another body is 422 IDEMPOTENCY_MISMATCH. 1 to 200 characters.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(200)),
            ))
            .build(),
    );
}

/// The body of a lease operation: the lease token, plus the fields of `T`. Read by hand
/// (`lease` taken out, the rest parsed as `T` with unknown fields refused), because
/// `#[serde(flatten)]` would let misspelt fields through.
#[derive(Debug)]
pub(crate) struct Leased<T> {
    /// The lease token from the claim (`null` when absent: the handler says it is required).
    pub lease: Option<Value>,
    /// The operation's own fields.
    pub body: T,
}

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Leased<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = Map::deserialize(d)?;
        let lease = fields.remove("lease");
        let body = serde_json::from_value(Value::Object(fields))
            .map_err(|e| D::Error::custom(with_lease(e.to_string())))?;
        Ok(Leased { lease, body })
    }
}

/// serde's message for an unknown field of `T`, with `lease` among the fields it lists.
fn with_lease(message: String) -> String {
    if !message.starts_with("unknown field") {
        return message;
    }
    if let Some(at) = message.find(", there are no fields") {
        return format!("{}, expected `lease`", &message[..at]);
    }
    if message.contains("expected one of `") {
        return message.replacen("expected one of `", "expected one of `lease`, `", 1);
    }
    let joined = if message.contains("` or `") {
        "expected one of `lease`, `"
    } else {
        "expected `lease` or `"
    };
    message.replacen("expected `", joined, 1)
}

impl<T: ToSchema> PartialSchema for Leased<T> {
    fn schema() -> RefOr<Schema> {
        let mut schema = T::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.insert(
                "lease".into(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The lease token from the claim"))
                    .into(),
            );
            object.required.insert(0, "lease".into());
        }
        schema
    }
}

impl<T: ToSchema> ToSchema for Leased<T> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("Leased{}", T::name()).into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
    }
}
