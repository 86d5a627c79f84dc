//! The OpenAPI 3.1 document of the public API, generated from the handlers' annotations
//! and the wire types, served at `/openapi.json`. Errors every public route can answer
//! are added here once rather than on each handler.

use casefile_proto::ErrorBody;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "casefile",
        description = "Microsoft Defender for Endpoint's machine-action API (collect investigation package, \
                       machine actions, machines), served by casefile."
    ),
    // Paths come from the route table (`super::table`), the conventions after them.
    components(schemas(ErrorBody)),
    tags(
        (name = "MachineActions", description = "Collect investigation packages and follow the actions"),
        (name = "Machines", description = "Enrolled machines"),
        (name = "Access", description = "casefile's own: roles and device groups for delegated users (MDE RBAC)"),
        (name = "Applications", description = "casefile's own: the tenant's application registrations, the clients of \
                                              the token endpoint (`Casefile.Admin`)"),
        (name = "Server", description = "Keys and health"),
    )
)]
pub(super) struct ApiDoc;

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

/// Adds the bearer scheme and the error answers every `/api` operation can give.
pub(super) struct Conventions;

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
