//! Who may call which route: one table, checked by the auth middleware for every request
//! before any handler runs. A route added without thinking about it falls into the most
//! restrictive rule that matches its method, and the route table test names it.

use axum::http::Method;
use hearth_types::auth::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// At least this role.
    Role(Role),
}

/// The access rule for `method` on the route template `route` (e.g. `/v1/users/{id}`).
pub fn access(method: &Method, route: &str) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        "/healthz" | "/readyz" => Access::Public,
        // Public by nature; an agent checks it against its join token's fingerprint.
        "/v1/cluster/ca" if read => Access::Public,
        "/v1/auth/login" if *method == Method::POST => Access::Public,
        "/v1/auth/logout" | "/v1/auth/whoami" => Access::Role(Role::Viewer),
        r if r.starts_with("/v1/users") => Access::Role(Role::Admin),
        r if r.starts_with("/v1/hosts") && !read => Access::Role(Role::Admin),
        // Networks change hosts' networking (bridges, NAT rules).
        r if r.starts_with("/v1/networks") && !read => Access::Role(Role::Admin),
        // A shell is a GET (a WebSocket) that runs anything: it needs what exec needs.
        "/v1/vms/{id}/shell" => Access::Role(Role::Operator),
        // Code is what operators deploy; viewers see its digest and size.
        "/v1/functions/{name}/code" => Access::Role(Role::Operator),
        _ if read => Access::Role(Role::Viewer),
        _ => Access::Role(Role::Operator),
    }
}
