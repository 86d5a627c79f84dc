//! The OpenAPI 3.1 document of the public API, generated from the handlers' annotations
//! and the wire types, served at `/openapi.json`. Errors every public route can answer
//! are added here once rather than on each handler.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use casefile_proto::ErrorBody;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema};

use super::{actions, admin, custody, download, import, machines};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "casefile",
        description = "Microsoft Defender for Endpoint's machine-action API (collect investigation package, \
                       machine actions, machines), served by casefile."
    ),
    paths(
        actions::collect,
        actions::get,
        actions::list,
        actions::list_for_machine,
        actions::cancel,
        import::import,
        download::package_uri,
        download::download,
        machines::get,
        machines::list,
        machines::tags,
        admin::list,
        admin::get,
        admin::create,
        admin::disable,
        admin::enable,
        admin::rotate_secret,
        admin::set_roles,
        admin::audit,
        admin::roles,
        admin::put_role,
        admin::delete_role,
        admin::device_groups,
        admin::create_device_group,
        admin::delete_device_group,
        admin::set_ungrouped,
        custody::custody,
        jwks_doc,
        healthz_doc,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "MachineActions", description = "Collect investigation packages and follow the actions"),
        (name = "Machines", description = "Enrolled machines"),
        (name = "Access", description = "casefile's own: roles and device groups for delegated users (MDE RBAC)"),
        (name = "Applications", description = "casefile's own: the tenant's application registrations, the clients of \
                                              the token endpoint (`Casefile.Admin`)"),
        (name = "Server", description = "Keys and health"),
    )
)]
struct ApiDoc;

/// The OData query options of list endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListOptions {
    /// OData filter, e.g. `status eq 'Succeeded' and machineId eq '…'`.
    #[serde(rename = "$filter")]
    filter: Option<String>,
    /// Page size, at most 10,000 (the default).
    #[serde(rename = "$top")]
    #[param(minimum = 0, maximum = 10000)]
    top: Option<u64>,
    /// Matches to skip.
    #[serde(rename = "$skip")]
    #[param(minimum = 0)]
    skip: Option<u64>,
    /// Comma-separated `property [asc|desc]`; default newest first.
    #[serde(rename = "$orderby")]
    orderby: Option<String>,
    /// `true` adds `@odata.count`, the number of all matches.
    #[serde(rename = "$count")]
    count: Option<bool>,
    /// Comma-separated properties to return.
    #[serde(rename = "$select")]
    select: Option<String>,
}

/// The public signing keys of access tokens and links.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "Server", responses((status = 200, description = "JSON Web Key Set", body = Object)))]
#[allow(dead_code)]
fn jwks_doc() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "Server", responses((status = 200, description = "The process answers: `{\"status\":\"ok\"}`", body = Object)))]
#[allow(dead_code)]
fn healthz_doc() {}

/// Adds the bearer scheme and the error answers every `/api` operation can give.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
        };
        let throttled = error("Over the call quota; retry after `Retry-After` seconds")
            .header(
                "Retry-After",
                HeaderBuilder::new().schema(u64::schema()).description(Some("Seconds to wait")).build(),
            )
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/") {
                continue;
            }
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, description) in [
                    ("400", "The request is invalid (body, id, or OData query)"),
                    ("401", "The bearer token is missing or invalid"),
                    ("403", "The token lacks the permission this API needs"),
                    ("404", "No such machine, action or package"),
                    ("413", "The request body is too large"),
                    ("415", "The body is not JSON"),
                    ("500", "An internal error; retry later"),
                ] {
                    responses.entry(status.to_owned()).or_insert_with(|| error(description).build().into());
                }
                responses.entry("429".to_owned()).or_insert_with(|| throttled.clone().into());
                responses.entry("405".to_owned()).or_insert_with(|| {
                    ResponseBuilder::new().description("Wrong method; `Allow` lists the right ones").build().into()
                });
            }
        }
    }
}

/// `GET /openapi.json`, generated once.
pub async fn document() -> Response {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    match JSON.get_or_init(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string())) {
        Ok(json) => ([(axum::http::header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => crate::error::ApiError::internal_from(e).into_response(),
    }
}
