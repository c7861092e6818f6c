//! Reading request values into the ticket core's types: public ids (`tkt_…` or a ticket number),
//! comma lists, booleans, timestamps, and the paging parameters every list shares.
//!
//! Query values that cannot be read are 400 (api.md: unknown query parameter values); body
//! values are 422 naming the field. Ids in paths that cannot be read are 404, since such a
//! resource cannot exist. This module must never call the database.

use chrono::{DateTime, TimeZone as _, Utc};
use deskhook_tickets::{
    ids::{self, Kind},
    listing::{PageRequest, Sort, Start},
    ticket::TicketRef,
};

use crate::http::{
    ApiError,
    pagination::{decode_cursor, page_limit},
};

/// Declares a list's query struct: its filters (all read as text) plus the shared paging and
/// sorting parameters, with unknown names rejected.
macro_rules! list_query {
    ($name:ident { $($(#[$attr:meta])* $field:ident),* $(,)? }) => {
        #[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$attr])* $field: Option<String>,)*
            /// Page size, 1–100 (default 25).
            #[param(minimum = 1, maximum = 100)]
            limit: Option<i64>,
            /// The same as `limit` (seed 003's name).
            #[param(minimum = 1, maximum = 100)]
            per_page: Option<i64>,
            /// `meta.next_cursor` of the previous page (or seed 001's ISO timestamp).
            cursor: Option<String>,
            /// A page number from 1, instead of `cursor`.
            #[param(minimum = 1)]
            page: Option<i64>,
            order_by: Option<String>,
            order_dir: Option<String>,
            sort: Option<String>,
        }

        impl $name {
            /// The page this query asks for.
            fn page_request(
                &self,
                default: deskhook_tickets::listing::Sort,
            ) -> Result<deskhook_tickets::listing::PageRequest, crate::http::ApiError> {
                crate::http::helpdesk::params::page_request(
                    &crate::http::helpdesk::params::Paging {
                        limit: self.limit,
                        per_page: self.per_page,
                        cursor: self.cursor.as_deref(),
                        page: self.page,
                        order_by: self.order_by.as_deref(),
                        order_dir: self.order_dir.as_deref(),
                        sort: self.sort.as_deref(),
                    },
                    default,
                )
            }
        }
    };
}
pub(super) use list_query;

/// The shared list parameters.
pub(super) struct Paging<'a> {
    pub limit: Option<i64>,
    pub per_page: Option<i64>,
    pub cursor: Option<&'a str>,
    pub page: Option<i64>,
    pub order_by: Option<&'a str>,
    pub order_dir: Option<&'a str>,
    pub sort: Option<&'a str>,
}

/// Reads paging and sorting: `limit`/`per_page` 1–100, `cursor` (ours, or seed 001's ISO
/// timestamp) or `page` (not both), `order_by`+`order_dir` or `sort=-field`.
pub(super) fn page_request(paging: &Paging<'_>, default: Sort) -> Result<PageRequest, ApiError> {
    let limit = page_limit(paging.limit, paging.per_page)?;
    let sort = Sort::parse(paging.order_by, paging.order_dir, paging.sort, default)?;
    let start = match (paging.cursor.filter(|c| !c.is_empty()), paging.page) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either cursor or page, not both",
            ));
        }
        (Some(cursor), None) => match DateTime::parse_from_rfc3339(cursor) {
            Ok(instant) => Start::Since(instant.with_timezone(&Utc)),
            Err(_) => Start::After(decode_cursor(cursor)?),
        },
        (None, Some(page)) => Start::Page(page),
        (None, None) => Start::First,
    };
    Ok(PageRequest { limit, sort, start })
}

/// A ticket in a path: `tkt_…` or its number; anything else is 404.
pub(super) fn ticket_path(id: &str) -> Result<TicketRef, ApiError> {
    TicketRef::parse(id).ok_or_else(|| ApiError::not_found("Ticket"))
}

/// Another resource in a path: its public id of `kind`; anything else is 404.
pub(super) fn path_id(kind: Kind, id: &str, what: &str) -> Result<i64, ApiError> {
    ids::decode(kind, id).ok_or_else(|| ApiError::not_found(what))
}

/// An id in a body: 422 at `field` unless it is a public id of `kind`.
pub(super) fn body_id(kind: Kind, id: &str, field: &str) -> Result<i64, ApiError> {
    ids::decode(kind, id.trim()).ok_or_else(|| {
        ApiError::invalid_field(field, format!("must be an id like {}_…", kind.prefix()))
    })
}

/// A comma list in a query (`a,b`), empty items dropped.
pub(super) fn csv(value: Option<&str>) -> Vec<&str> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Each item of a comma list read by `parse`; 400 naming `name` for any that does not read.
pub(super) fn csv_of<T>(
    name: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    csv(value)
        .into_iter()
        .map(|item| {
            parse(item).ok_or_else(|| {
                ApiError::bad_request(format!("`{item}` is not a valid value for {name}"))
            })
        })
        .collect()
}

/// Public ids of `kind` in a comma list; 400 for any other value.
pub(super) fn csv_ids(name: &str, value: Option<&str>, kind: Kind) -> Result<Vec<i64>, ApiError> {
    csv_of(name, value, |item| ids::decode(kind, item))
}

/// A boolean query value (`true`/`false`/`1`/`0`); 400 otherwise.
pub(super) fn query_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => read_bool(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be true or false (got `{text}`)"))
        }),
    }
}

/// `true`/`false`/`1`/`0`/`yes`/`no`.
pub(super) fn read_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// An RFC 3339 query value; 400 otherwise.
pub(super) fn query_time(
    name: &str,
    value: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => read_time(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an RFC 3339 timestamp or Unix seconds (got `{text}`)"
            ))
        }),
    }
}

/// RFC 3339 or Unix seconds.
pub(super) fn read_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    text.parse::<i64>()
        .ok()
        .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
}

/// Optional text filter: blank is absent.
pub(super) fn text(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use deskhook_tickets::listing::SortField;

    use super::*;

    #[test]
    fn cursors_and_pages_do_not_mix() {
        let paging = Paging {
            limit: Some(10),
            per_page: None,
            cursor: Some("2025-01-15T10:30:00Z"),
            page: None,
            order_by: None,
            order_dir: None,
            sort: None,
        };
        let request = page_request(&paging, Sort::desc(SortField::CreatedAt)).expect("since");
        assert!(matches!(request.start, Start::Since(_)));
        let both = Paging {
            page: Some(2),
            ..paging
        };
        assert!(page_request(&both, Sort::desc(SortField::CreatedAt)).is_err());
    }

    #[test]
    fn values_read_or_are_refused() {
        assert_eq!(csv(Some("a, b,,c")), vec!["a", "b", "c"]);
        assert!(query_bool("unassigned", Some("maybe")).is_err());
        assert_eq!(query_bool("unassigned", Some("1")).ok(), Some(Some(true)));
        assert!(read_time("1712160000").is_some());
        assert!(read_time("tomorrow").is_none());
    }
}
