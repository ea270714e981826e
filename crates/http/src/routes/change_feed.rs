//! The change feed: `GET /api/v1/books/changes`, as pages of JSON or live as Server-Sent Events.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Responder as _, web};
use actix_web_lab::sse;
use books_application::FollowError;
use books_domain::{Change, ChangeLimit};
use futures_util::StreamExt as _;
use utoipa::IntoParams;

use crate::blocking::blocking;
use crate::middleware::head::HeadRequest;
use crate::middleware::rate_limit::Caller;
use crate::representation::negotiate::preferred;
use crate::representation::params::Params;
use crate::representation::problem::ApiError;
use crate::representation::schemas::{ChangePageResponse, ChangeResponse, Problem};
use crate::state::State;

/// The media type of Server-Sent Events.
const EVENT_STREAM: &str = "text/event-stream";
const FORMATS: [&str; 2] = ["application/json", EVENT_STREAM];

/// Where to start reading the feed.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChangeParams {
    /// Changes with a `seq` greater than this; 0 (the default) is the beginning.
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    after: Option<String>,
    /// At most this many changes, 1 to 1 000 (JSON only).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
}

/// Where a reconnecting stream resumes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct LastEventIdHeader {
    /// For a stream that reconnects: the `id` of the last event it received, which wins over
    /// `after` (browsers' EventSource sends it by itself).
    #[param(rename = "Last-Event-ID", value_type = Option<String>, pattern = "^[0-9]{1,18}$", nullable = false)]
    last_event_id: Option<String>,
}

/// A seq as clients send it: plain digits, within a signed 64-bit integer.
fn seq(name: &str, raw: &str) -> Result<u64, ApiError> {
    raw.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|_| !raw.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must be a whole number from 0 to {}",
                i64::MAX
            ))
        })
}

impl LastEventIdHeader {
    fn read(request: &HttpRequest) -> Result<Self, ApiError> {
        let mut values = request.headers().get_all("last-event-id");
        let last_event_id = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "Last-Event-ID must be given once".to_owned(),
                ));
            }
            (Some(value), None) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        ApiError::BadRequest("Last-Event-ID must be a whole number".to_owned())
                    })?
                    .to_owned(),
            ),
        };
        Ok(Self { last_event_id })
    }
}

impl ChangeParams {
    /// Where to start (`Last-Event-ID` wins over `after`), and how many changes at most.
    fn read(request: &HttpRequest) -> Result<(u64, ChangeLimit), ApiError> {
        let params = Params::parse(request.query_string().as_bytes(), "query string")?;
        let raw = Self {
            after: params.get("after").map(str::to_owned),
            limit: params.get("limit").map(str::to_owned),
        };
        let resume = LastEventIdHeader::read(request)?;
        // Both are checked, whichever wins: an invalid value is never silently ignored.
        let after = raw.after.as_deref().map(|a| seq("after", a)).transpose()?;
        let resumed = resume
            .last_event_id
            .as_deref()
            .map(|id| {
                // As the document says (`^[0-9]{1,18}$`): every seq this service sends fits.
                if id.len() > 18 {
                    return Err(ApiError::BadRequest(
                        "Last-Event-ID must be a seq: 1 to 18 digits".to_owned(),
                    ));
                }
                seq("Last-Event-ID", id)
            })
            .transpose()?;
        let after = resumed.or(after).unwrap_or(0);
        let limit = match &raw.limit {
            None => ChangeLimit::default(),
            Some(limit) => limit
                .parse()
                .ok()
                .and_then(ChangeLimit::new)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit must be an integer from 1 to {}",
                        ChangeLimit::MAX
                    ))
                })?,
        };
        Ok((after, limit))
    }
}

/// Follow the changes
///
/// Every committed change to the catalogue, in `seq` order: following `next_after` from 0 visits
/// each exactly once, whatever the concurrency of writers (a change appears only once its
/// transaction has committed; a rolled-back write leaves none), and a book's changes in version
/// order. With `Accept: text/event-stream` the same changes come live as Server-Sent Events (`id:`
/// the seq, `event:` the kind, `data:` the Change), starting after `Last-Event-ID` or `after`, with
/// a comment every 15 s; a stream ends cleanly after 30 minutes (reconnect with `Last-Event-ID`),
/// a caller holds at most 8 at once (past it 429) and the instance 1 000 (past it 503). Changes are kept for a retention period (7 days by default); an `after`
/// older than that is a 410, and one past the newest change a 409: start again from an export.
#[utoipa::path(
    get,
    path = "/api/v1/books/changes",
    operation_id = "listChanges",
    tag = "books",
    params(ChangeParams, LastEventIdHeader),
    responses(
        (status = 200, description = "The changes after `after`", content(
            (ChangePageResponse = "application/json"),
            (String = "text/event-stream", example = "id: 1207\nevent: updated\ndata: {\"seq\":1207,\"kind\":\"updated\",\"book_id\":42,\"version\":3,\"at\":\"2026-11-24T07:01:02.000001Z\",\"book\":{\"id\":42,\"title\":\"Dune\",\"author\":\"Frank Herbert\",\"genre\":null,\"version\":3,\"created_at\":\"2026-11-24T06:26:29.123456Z\",\"updated_at\":\"2026-11-24T07:01:02.000001Z\"}}\n\n"),
        )),
        (status = 406, description = "The client accepts neither application/json nor text/event-stream",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`after` (or `Last-Event-ID`) is past the newest change: a position this feed never reached, as after a failover to a server that lacks it; start again from an export",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Changes after `after` are no longer kept: start again from an export",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_changes(
    state: web::Data<State>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let format = preferred(&request, &FORMATS).ok_or_else(|| {
        ApiError::NotAcceptable(format!("the feed is {} (Accept)", FORMATS.join(" or ")))
    })?;
    let (after, limit) = ChangeParams::read(&request)?;
    if format == EVENT_STREAM && HeadRequest::came_as_head(&request) {
        // A stream never ends: a HEAD gets its headers (those of a streamed answer, as a GET's
        // are), and nothing is held open.
        let mut response = HttpResponse::Ok()
            .content_type(EVENT_STREAM)
            .streaming(no_body());
        stream_headers(response.headers_mut());
        return Ok(response);
    }
    if format == EVENT_STREAM {
        let caller = Caller::of_request(&request);
        return stream(&state, caller, after, &request).await;
    }
    let page = blocking(&state.service, move |s| s.changes(after, limit)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ChangePageResponse {
            items: page.items.iter().map(ChangeResponse::from).collect(),
            next_after: i64::try_from(page.next_after).unwrap_or(i64::MAX),
        }))
}

/// A live stream: the application's stream of changes, framed as Server-Sent Events by
/// actix-web-lab (which also sends the keep-alive comments, and marks the answer
/// `Content-Encoding: identity` so that no compressor holds an event back).
async fn stream(
    state: &State,
    caller: Caller,
    after: u64,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let slots = &state.streams;
    let slot = slots.slots.open(caller)?;
    let changes = state
        .hub
        .follow(state.service.clone(), after, slots.lifetime, slot)
        .await
        .map_err(|error| match error {
            FollowError::Stopped => {
                ApiError::Busy("the service is shutting down; reconnect shortly".to_owned())
            }
            FollowError::Changes(error) => error.into(),
        })?;
    // A first comment, so that the client has the headers at once.
    let greeting = sse::Event::Comment(format!("changes after {after}").into());
    let events = futures_util::stream::once(async move { greeting })
        .chain(changes.map(|change| sse::Event::from(event(&change))));
    let mut response = sse::Sse::from_infallible_stream(events)
        .with_keep_alive(slots.keep_alive)
        .respond_to(request);
    stream_headers(response.headers_mut());
    Ok(response.map_into_boxed_body())
}

/// The body of a HEAD answer to a streamed GET: empty, but streamed, so that its headers are a
/// GET's (`Transfer-Encoding: chunked`, no `Content-Length: 0`).
pub(crate) fn no_body() -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures_util::stream::empty()
}

/// The headers of a stream of events beyond its media type: never stored, never buffered.
fn stream_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx not to buffer the stream.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

/// One change as a Server-Sent Event.
fn event(change: &Change) -> sse::Data {
    let data = serde_json::to_string(&ChangeResponse::from(change)).unwrap_or_default();
    sse::Data::new(data)
        .id(change.seq.to_string())
        .event(change.kind.name())
}
