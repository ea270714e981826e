//! Running synchronous work (diesel) off the async workers.
//!
//! Every use case that touches the database goes through [`blocking`] or [`blocking_call`]: an
//! async worker that blocks on a query stalls every other request it serves.

use actix_web::web;
use books_application::{DEADLINE, token_after_write};
use books_domain::{BookService, ConsistencyToken};

use crate::representation::problem::ApiError;

/// Runs a use case on the blocking thread pool: diesel blocks, and an async worker that blocks
/// stalls every other request it serves.
pub(crate) async fn blocking<T, E>(
    service: &BookService,
    call: impl FnOnce(&BookService) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    let service = service.clone();
    blocking_call(move || call(&service)).await
}

/// Runs any blocking call on the blocking thread pool; see [`blocking`].
pub(crate) async fn blocking_call<T, E>(
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match actix_web::rt::time::timeout(DEADLINE, web::block(call)).await {
        Ok(Ok(result)) => result.map_err(Into::into),
        Ok(Err(error)) => Err(ApiError::Unavailable(
            anyhow::anyhow!(error).context("the blocking pool is gone"),
        )),
        Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
            "the database work took longer than {DEADLINE:?}"
        ))),
    }
}

/// Runs a write on the blocking pool and, once it has committed, asks where the history of
/// writes stands (in the same hand-off), for the answer's `Consistency-Token`.
pub(crate) async fn blocking_write<T, E>(
    service: &BookService,
    call: impl FnOnce(&BookService) -> Result<T, E> + Send + 'static,
) -> Result<(T, Option<ConsistencyToken>), ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    blocking(service, move |s| {
        let outcome = call(s)?;
        Ok::<_, E>((outcome, token_after_write(s)))
    })
    .await
}
