//! Who may call what on the admin API. In a secure cluster:
//!
//! | routes | who |
//! |---|---|
//! | `GET /` (the dashboard page, which holds no data) | anyone |
//! | `GET` anything else (`/status`, `/snapshots`, `/metrics`, `/cluster`) | any certificate of the cluster's CA, the read token, or the operator token |
//! | `POST /snapshots`, `/rollback`, `/metrics/reset-peaks`, `/debug/cut` | an operator's client certificate, or the operator token |
//! | `/internal/*` | a node certificate; the handlers then check that the caller is who the request says (only the coordinator of the order's term orders, only node X reports X's part) |
//!
//! A request with no credentials gets 401, one with the wrong ones 403;
//! both are logged and counted (`cairn_admin_refused_total`). An insecure
//! cluster checks nothing.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::client::read_token;
use crate::config::ClusterConfig;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::tls::listener::Caller;
use crate::tls::{Identity, Role};

/// The bearer tokens the admin API accepts, read once at start.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tokens {
    read: Option<String>,
    operator: Option<String>,
}

impl Tokens {
    /// Reads the token files the config names.
    pub fn load(config: &ClusterConfig) -> Result<Self> {
        let sec = &config.security;
        Ok(Tokens {
            read: sec.read_token_file.as_deref().map(read_token).transpose()?,
            operator: sec
                .operator_token_file
                .as_deref()
                .map(read_token)
                .transpose()?,
        })
    }
}

fn same(expected: &Option<String>, given: Option<&str>) -> bool {
    match (expected, given) {
        (Some(e), Some(g)) => e.as_bytes().ct_eq(g.as_bytes()).into(),
        _ => false,
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Read,
    Operate,
    Member,
}

fn need(method: &Method, path: &str) -> Need {
    if path.starts_with("/internal/") {
        Need::Member
    } else if method == Method::GET || method == Method::HEAD {
        Need::Read
    } else {
        Need::Operate
    }
}

/// The middleware: lets a request through only with the credentials its
/// route needs.
pub(crate) async fn authorize(
    State(s): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    mut req: Request,
    next: Next,
) -> Response {
    let open_page = req.method() == Method::GET && crate::dashboard::is_open(req.uri().path());
    if s.security.is_none() || open_page {
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let who = caller.identity.as_ref();
    let need = need(req.method(), req.uri().path());
    let allowed = match need {
        Need::Read => {
            who.is_some() || same(&s.tokens.read, bearer) || same(&s.tokens.operator, bearer)
        }
        Need::Operate => {
            who.is_some_and(|w| w.role == Role::Client) || same(&s.tokens.operator, bearer)
        }
        Need::Member => who.is_some_and(|w| w.role == Role::Node),
    };
    if allowed {
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    Metrics::inc(&s.metrics.admin_refused, 1);
    let (status, why) = match (who, bearer) {
        (None, None) => (
            StatusCode::UNAUTHORIZED,
            "no credentials: present a client certificate of this cluster or a bearer token"
                .to_string(),
        ),
        (Some(w), _) => (
            StatusCode::FORBIDDEN,
            format!("{w} may not {} {}", req.method(), req.uri().path()),
        ),
        (None, Some(_)) => (
            StatusCode::FORBIDDEN,
            format!(
                "the bearer token does not allow {} {}",
                req.method(),
                req.uri().path()
            ),
        ),
    };
    warn!(caller = %caller.addr, method = %req.method(), path = %req.uri().path(), "admin request refused: {why}");
    (status, axum::Json(json!({ "error": why }))).into_response()
}

/// Refuses an order or a report whose sender is not who it must be, with
/// a log line and a metric; `None` lets it through.
pub(crate) fn refuse_unless(
    s: &Shared,
    caller: &Caller,
    what: &str,
    must_be: &str,
) -> Option<Response> {
    s.security.as_ref()?;
    if caller.identity.as_ref() == Some(&Identity::node(must_be)) {
        return None;
    }
    Metrics::inc(&s.metrics.orders_refused, 1);
    let claimed = caller
        .identity
        .as_ref()
        .map_or("an unnamed caller".to_string(), ToString::to_string);
    let why = format!("{what} must come from node {must_be}, not from {claimed}");
    warn!(caller = %caller.addr, "refused: {why}");
    Some((StatusCode::FORBIDDEN, axum::Json(json!({ "error": why }))).into_response())
}

/// The node that holds `term`: the one this node follows when it is the
/// term it knows, otherwise what the store's term record says.
pub(crate) async fn holder_of(s: &Shared, term: u64) -> Option<String> {
    let (known, coordinator) = s.role.view();
    if term == known {
        return Some(s.config.topology.name(coordinator).to_string());
    }
    s.store.term(term).await.ok().map(|t| t.node)
}
