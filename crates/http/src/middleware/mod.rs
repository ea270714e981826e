//! What every request passes through before and after its handler.
//!
//! In order, from the outside in: the request span, [`compress`] (around actix-web's `Compress`),
//! [`head`] (HEAD answered as GET), [`cors`] when configured,
//! [`observe`] (request id, log line, metrics), the problem+json rendering of the framework's own
//! errors, then for the API routes [`auth::admit`] (rate limit, then credentials: API keys, and
//! OpenID Connect access tokens checked in [`oidc`]; see [`rate_limit`], with one budget across
//! instances in [`rate_limit::shared`]).

pub(crate) mod auth;
pub(crate) mod compress;
pub(crate) mod cors;
pub(crate) mod head;
pub mod observe;
pub mod oidc;
pub mod rate_limit;
