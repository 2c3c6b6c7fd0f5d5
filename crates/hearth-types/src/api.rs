//! Generic API shapes: list pages, list queries, audit events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Every list returns one page: `{"items": […], "next_cursor": …}`. Pass `next_cursor` back
/// as `?cursor=` for the next page; it is `null` on the last one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub const DEFAULT_PAGE_LIMIT: u32 = 100;
pub const MAX_PAGE_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page (1–1000, default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One entry of the audit log: a mutating request, who made it and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: String,
    pub at: DateTime<Utc>,
    /// Username, `apikey:<name>`, `agent:<host>` or `anonymous`.
    pub actor: String,
    /// `METHOD /route/{template}`.
    pub action: String,
    /// The concrete path the request named.
    pub target: String,
    pub status: u16,
    /// `ok` or `error`.
    pub result: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}
