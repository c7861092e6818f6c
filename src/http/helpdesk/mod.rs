//! The helpdesk resources of `/v1`: thin handlers over the `deskhook-tickets` crate.

use axum::Router;

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
