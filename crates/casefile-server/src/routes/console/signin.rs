//! Signing in and out: local users (name and password) and single sign-on through the
//! OpenID Connect providers of `[[console.sso]]` (`sso.rs`). Both end in the same kind of
//! session.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use casefile_proto::TenantId;
use casefile_store::SessionIdentity;
use serde::Deserialize;

use super::{BaseUrl, Failure, cookie, failure_page, html, redirect, safe_next};
use crate::auth::sessions::{self, COOKIE};
use crate::auth::users::{self, SignIn};
use crate::state::AppState;

/// Holds the sign-in form's own CSRF token until a session exists (login CSRF).
pub(super) const FORM_COOKIE: &str = "__Host-casefile-signin";

#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    next: Option<String>,
    tenant: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage<'a> {
    next: &'a str,
    tenant: &'a str,
    form_token: &'a str,
    name: &'a str,
    message: Option<&'a str>,
    notice: Option<&'a str>,
    providers: Vec<(usize, &'a str)>,
}

fn render(
    state: &AppState,
    status: StatusCode,
    next: &str,
    tenant: &str,
    name: &str,
    message: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let token = crate::secrets::generate("");
    let providers = state.config.console.sso.iter().enumerate().map(|(i, p)| (i, p.name.as_str())).collect();
    let page = SignInPage { next, tenant, form_token: &token, name, message, notice, providers };
    let mut response = html(&page);
    *response.status_mut() = status;
    set_cookie(&mut response, &format!("{FORM_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"));
    response
}

pub(crate) async fn page(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let tenant = q.tenant.as_deref().unwrap_or(&state.config.console.tenant);
    let notice = q.signed_out.is_some().then_some("You are signed out.");
    render(&state, StatusCode::OK, &safe_next(q.next.as_deref()), tenant, "", None, notice)
}

#[derive(Deserialize)]
pub(crate) struct LocalForm {
    name: String,
    password: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    form_token: String,
}

/// `POST /console/signin`: a local user's name and password.
pub(crate) async fn local(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LocalForm>,
) -> Response {
    let next = safe_next(Some(&form.next));
    let tenant_raw = if form.tenant.is_empty() { state.config.console.tenant.clone() } else { form.tenant.clone() };
    let again = |status, message: &str| render(&state, status, &next, &tenant_raw, &form.name, Some(message), None);
    let expected = cookie(&headers, FORM_COOKIE);
    if expected.is_none_or(|t| t.is_empty() || !sessions_eq(&t, &form.form_token)) {
        crate::audit::note_detail(serde_json::json!({"reason": "the sign-in form's token is missing or wrong"}));
        return again(StatusCode::FORBIDDEN, "This sign-in form is out of date. Try again.");
    }
    let Some(tenant) = TenantId::parse(&tenant_raw) else {
        return again(StatusCode::BAD_REQUEST, "The tenant is not a valid tenant id.");
    };
    crate::audit::note_claimed_actor("user", &form.name.chars().take(64).collect::<String>(), &tenant);
    // As on the token endpoint: a source's attempts per minute are bounded before any
    // password is hashed (argon2 is shared with the applications' token requests).
    let source = crate::audit::source_address().map(|ip| ip.to_string()).unwrap_or_default();
    let per_minute = state.config.rate_limits.token_requests_per_source_per_minute;
    if let Err(throttled) = crate::routes::oauth::throttle(&state, "signin", &source, per_minute).await {
        let seconds = throttled.retry_after().unwrap_or(60);
        let mut response = again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many sign-ins from this address; try again in {seconds} seconds."),
        );
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let outcome = users::sign_in(&*state.store, &tenant, &form.name, &form.password, state.now()).await;
    let user = match outcome {
        Ok(SignIn::Accepted(user)) => user,
        Ok(SignIn::Refused) => {
            crate::audit::note_detail(serde_json::json!({"reason": "wrong name or password, or a disabled user"}));
            return again(
                StatusCode::UNAUTHORIZED,
                "The name or the password is wrong. After repeated failures, sign-in is paused for a while.",
            );
        }
        Err(users::UserError::Store(e)) => return failure_page(Failure::from_store(e)),
        Err(e) => return failure_page(Failure::internal(e)),
    };
    crate::audit::note_actor("user", &user.name, &tenant);
    let identity = SessionIdentity {
        issuer: "local".to_owned(),
        subject: user.id.to_string(),
        upn: Some(user.name.clone()),
        oid: None,
        groups: Vec::new(),
    };
    signed_in(&state, &tenant, identity, Some(user.id), &next).await
}

/// Starts the session and sends the browser on to `next` with its cookie.
pub(super) async fn signed_in(
    state: &AppState,
    tenant: &TenantId,
    identity: SessionIdentity,
    local_user: Option<uuid::Uuid>,
    next: &str,
) -> Response {
    match sessions::start(state, tenant, identity, local_user).await {
        Ok((secret, _)) => {
            let mut response = redirect(next);
            set_cookie(&mut response, &format!("{COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Lax"));
            set_cookie(&mut response, &format!("{FORM_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"));
            response
        }
        Err(e) => failure_page(Failure::from_store(e)),
    }
}

/// `POST /console/signout`: ends the session here and in the store.
pub(crate) async fn signout(
    State(state): State<AppState>,
    session: super::Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_form(&headers, &base, &form.csrf) {
        return refused.into();
    }
    if let Err(e) = sessions::end(&state, &session.secret).await {
        return failure_page(Failure::from_store(e));
    }
    let mut response = redirect("/console/signin?signed_out=1");
    set_cookie(&mut response, &format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"));
    response
}

pub(super) fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

fn sessions_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn sso_start(
    State(state): State<AppState>,
    base: BaseUrl,
    axum::extract::Path(provider): axum::extract::Path<usize>,
    Query(q): Query<PageQuery>,
) -> Response {
    super::sso::start(&state, &base, provider, &safe_next(q.next.as_deref())).await.unwrap_or_else(failure_page)
}

pub(crate) async fn sso_callback(
    State(state): State<AppState>,
    base: BaseUrl,
    headers: HeaderMap,
    Query(q): Query<super::sso::Callback>,
) -> Response {
    match super::sso::finish(&state, &base, &headers, q).await {
        Ok((tenant, identity, next)) => {
            crate::audit::note_actor("user", identity.upn.as_deref().unwrap_or(&identity.subject), &tenant);
            let mut response = signed_in(&state, &tenant, identity, None, &next).await;
            set_cookie(
                &mut response,
                &format!("{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0", super::sso::FLOW_COOKIE),
            );
            response
        }
        Err(failure) => failure_page(failure),
    }
}
