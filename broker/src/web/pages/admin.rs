//! Technicians (list, unlock) and staff accounts (add, reset, disable, enable).
use crate::web::AppState;
use axum::Router;
use std::sync::Arc;
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
