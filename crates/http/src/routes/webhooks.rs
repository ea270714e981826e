//! Webhook subscriptions: `/api/v1/webhooks`, each the caller's own.
//!
//! The delivering is [`crate::webhooks`]'; these handlers read and check what the owner asks for,
//! run the domain's use case on the blocking pool, and answer. (Every answer is the caller's own:
//! `admit` marks answers to a request with credentials `Cache-Control: no-store`.)

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use books_domain::{
    Delivery, EventFilter, NewSubscription, Owner, Resume, Subscription, SubscriptionId,
    SubscriptionPatch, WebhookUrl, subscription_description,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::blocking::blocking_call;
use crate::middleware::auth::CallerAccess;
use crate::representation::params::Params;
use crate::representation::problem::ApiError;
use crate::representation::reading::{Body, JsonObject, MERGE_PATCH, violation};
use crate::representation::schemas::{FieldViolation, Problem};
use crate::routes::BASE;
use crate::state::State;
use crate::webhooks::destination;

const JSON: &[&str] = &["application/json"];

/// A subscription: where the catalogue's changes are pushed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 3, "url": "https://203.0.113.10/hooks/books", "events": ["created", "updated", "deleted"],
    "description": "ratings copy", "status": "active", "delivered_through": 1207,
    "last_error": null, "next_attempt_at": null, "created_at": "2026-12-03T08:00:00Z"
}))]
pub(crate) struct SubscriptionResponse {
    /// Its id.
    #[schema(minimum = 1, format = Int64)]
    id: i64,
    /// Where deliveries go (`POST`).
    url: String,
    /// Which changes it receives.
    events: Vec<EventName>,
    /// The owner's words for it.
    #[schema(required = true)]
    description: Option<String>,
    /// `active` delivers; `paused` was set by its owner; `failing` gave up after the retry
    /// window; `disabled` after a `410 Gone`, or when the change it needed next was purged.
    status: StatusName,
    /// Every change up to this seq has been delivered (or was not one it asked for).
    #[schema(minimum = 0, format = Int64)]
    delivered_through: i64,
    /// Why the last attempt failed, until one succeeds.
    #[schema(required = true)]
    last_error: Option<String>,
    /// When the waiting change is tried again.
    #[schema(required = true)]
    next_attempt_at: Option<DateTime<Utc>>,
    /// When it was made.
    created_at: DateTime<Utc>,
    /// The signing secret (`whsec_` + base64 of 32 bytes): in the answer to its creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: Option<String>,
}

/// A kind of change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventName {
    /// A book was created.
    Created,
    /// A book was replaced or patched.
    Updated,
    /// A book was deleted.
    Deleted,
}

/// Where a subscription stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StatusName {
    /// Delivering.
    Active,
    /// Paused by its owner.
    Paused,
    /// Gave up after the retry window; `PATCH {"status": "active"}` resumes it.
    Failing,
    /// Disabled by a `410 Gone` or by the retention; `PATCH {"status": "active"}` resumes it.
    Disabled,
}

impl SubscriptionResponse {
    fn of(subscription: &Subscription, secret: Option<String>) -> Self {
        use books_domain::SubscriptionStatus as S;
        Self {
            id: subscription.id.get(),
            url: subscription.url.as_str().to_owned(),
            events: subscription
                .events
                .names()
                .into_iter()
                .map(|name| match name {
                    "created" => EventName::Created,
                    "updated" => EventName::Updated,
                    _ => EventName::Deleted,
                })
                .collect(),
            description: subscription.description.clone(),
            status: match subscription.status {
                S::Active => StatusName::Active,
                S::Paused => StatusName::Paused,
                S::Failing => StatusName::Failing,
                S::Disabled => StatusName::Disabled,
            },
            delivered_through: i64::try_from(subscription.delivered_through).unwrap_or(i64::MAX),
            last_error: subscription.last_error.clone(),
            next_attempt_at: subscription.next_attempt_at,
            created_at: subscription.created_at,
            secret,
        }
    }
}

/// The caller's subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionList {
    /// By id.
    items: Vec<SubscriptionResponse>,
}

/// One attempt to deliver a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryResponse {
    /// The change's seq (its `webhook-id`).
    #[schema(minimum = 1, format = Int64)]
    seq: i64,
    /// 1 for the change's first attempt, and so on.
    #[schema(minimum = 1)]
    attempt: u32,
    /// When it was made.
    at: DateTime<Utc>,
    /// The receiver's status code, if it answered in time.
    #[schema(required = true, minimum = 100, maximum = 599)]
    status: Option<u16>,
    /// What went wrong, if something did.
    #[schema(required = true)]
    error: Option<String>,
    /// How long it took.
    #[schema(minimum = 0, format = Int64)]
    duration_ms: u64,
}

impl From<&Delivery> for DeliveryResponse {
    fn from(delivery: &Delivery) -> Self {
        Self {
            seq: i64::try_from(delivery.seq).unwrap_or(i64::MAX),
            attempt: delivery.attempt,
            at: delivery.at,
            status: delivery.status,
            error: delivery.error.clone(),
            duration_ms: delivery.duration_ms,
        }
    }
}

/// A subscription's latest attempts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    /// Newest first.
    items: Vec<DeliveryResponse>,
}

/// The body of a new subscription.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"url": "https://203.0.113.10/hooks/books", "events": ["created", "deleted"]}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read member by member"
)]
pub(crate) struct NewSubscriptionInput {
    /// An `http` or `https` URL of at most 2048 characters, without credentials or a fragment,
    /// whose host resolves to public addresses (unless the service runs with
    /// `--webhooks-allow-private`).
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s@#/?]+([/?][^\\s#]*)?$"
    )]
    url: String,
    /// Which changes to receive (default all three), each at most once.
    #[schema(min_items = 1, max_items = 3, nullable = false)]
    events: Option<Vec<EventName>>,
    /// Deliver the changes after this seq (default: the newest now, so only what comes next).
    /// Past the newest change → 409; already purged → 410.
    #[schema(minimum = 0, format = Int64, nullable = false)]
    after: Option<i64>,
    /// Free text for its owner: trimmed, at most 250 characters, no control character; blank
    /// means none.
    description: Option<String>,
}

/// A change to a subscription (JSON merge patch): members left out stay as they are.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read member by member"
)]
pub(crate) struct SubscriptionPatchInput {
    /// As for a new subscription.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s@#/?]+([/?][^\\s#]*)?$",
        nullable = false
    )]
    url: Option<String>,
    /// As for a new subscription.
    #[schema(min_items = 1, max_items = 3, nullable = false)]
    events: Option<Vec<EventName>>,
    /// As for a new subscription; `null` clears it.
    #[schema(nullable)]
    description: Option<String>,
    /// `active` resumes a paused, failing or disabled subscription where it stopped; `paused`
    /// stops deliveries.
    #[schema(nullable = false)]
    status: Option<Resumable>,
}

/// The statuses an owner sets.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "the document's schema")]
pub(crate) enum Resumable {
    /// Deliver.
    Active,
    /// Stop delivering.
    Paused,
}

/// Where to replay from.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read member by member"
)]
pub(crate) struct ReplayInput {
    /// Deliver again every change after this seq.
    #[schema(minimum = 0, format = Int64)]
    after: i64,
}

/// How many attempts to list.
#[derive(Debug, IntoParams)]
#[expect(
    dead_code,
    reason = "the document's parameters: the query is read by `Params`"
)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryParams {
    /// 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    limit: Option<String>,
}

/// A subscription's id in a path.
fn subscription_id(request: &HttpRequest) -> Result<SubscriptionId, ApiError> {
    request
        .match_info()
        .get("id")
        .filter(|raw| raw.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|raw| raw.parse::<i64>().ok())
        .and_then(SubscriptionId::new)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "a subscription id is a whole number from 1 to {}",
                i64::MAX
            ))
        })
}

/// The members of a subscription's body, each checked; every problem is gathered.
#[derive(Default)]
struct Read {
    url: Option<WebhookUrl>,
    events: Option<EventFilter>,
    after: Option<u64>,
    description: Option<Option<String>>,
    status: Option<Resume>,
    errors: Vec<FieldViolation>,
}

impl Read {
    fn members(members: Map<String, Value>, allowed: &[&str]) -> Self {
        let mut read = Self::default();
        for (name, value) in members {
            if !allowed.contains(&name.as_str()) {
                read.errors
                    .push(violation("", &name, "is not a member of this body"));
                continue;
            }
            match (name.as_str(), value) {
                ("url", Value::String(raw)) => match WebhookUrl::parse(&raw) {
                    Ok(url) => read.url = Some(url),
                    Err(error) => read.errors.push(violation("", "url", error.0)),
                },
                ("events", Value::Array(items)) => {
                    let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                    match names.map(EventFilter::parse) {
                        Some(Ok(events)) => read.events = Some(events),
                        _ => read.errors.push(violation(
                            "",
                            "events",
                            "must list at least one of created, updated and deleted, each at most once",
                        )),
                    }
                }
                ("after", Value::Number(number)) => {
                    // JSON Schema counts 1207.0 as an integer: so does this reader.
                    let whole = number.as_i64().or_else(|| {
                        number
                            .as_f64()
                            .filter(|n| n.fract() == 0.0 && (0.0..9.2e18).contains(n))
                            .map(|n| {
                                #[expect(
                                    clippy::cast_possible_truncation,
                                    reason = "whole, in range"
                                )]
                                let n = n as i64;
                                n
                            })
                    });
                    match whole.and_then(|n| u64::try_from(n).ok()) {
                        Some(after) => read.after = Some(after),
                        None => read.errors.push(violation(
                            "",
                            "after",
                            "must be a whole number from 0 to 9223372036854775807",
                        )),
                    }
                }
                ("description", Value::Null) => read.description = Some(None),
                ("description", Value::String(text)) => match subscription_description(&text) {
                    Ok(description) => read.description = Some(description),
                    Err(error) => {
                        read.errors
                            .push(violation("", "description", &error.to_string()))
                    }
                },
                ("status", Value::String(status)) => match status.as_str() {
                    "active" => read.status = Some(Resume::Active),
                    "paused" => read.status = Some(Resume::Paused),
                    _ => read.errors.push(violation(
                        "",
                        "status",
                        "must be active or paused (failing and disabled are set by deliveries)",
                    )),
                },
                ("url", _) => read.errors.push(violation("", "url", "must be a string")),
                ("events", _) => {
                    read.errors
                        .push(violation("", "events", "must be an array of strings"))
                }
                ("after", _) => read
                    .errors
                    .push(violation("", "after", "must be a whole number")),
                ("description", _) => {
                    read.errors
                        .push(violation("", "description", "must be a string or null"))
                }
                (name, _) => read.errors.push(violation("", name, "must be a string")),
            }
        }
        read
    }

    /// Checks the URL's destination (it needs name resolution), then answers every problem.
    async fn checked(mut self, allow_internal: bool) -> Result<Self, ApiError> {
        if let Some(url) = &self.url
            && let Err(refusal) = destination::check(url, allow_internal).await
        {
            self.errors.push(violation("", "url", &refusal));
        }
        if self.errors.is_empty() {
            Ok(self)
        } else {
            Err(ApiError::Unprocessable(self.errors))
        }
    }
}

fn location(id: SubscriptionId) -> String {
    format!("{BASE}/webhooks/{id}")
}

/// Subscribe to the changes
///
/// Every change the subscription asks for is delivered to `url` as `POST` with the Change as
/// its body (as the feed shows it) and the Standard Webhooks headers (`webhook-id`: the seq,
/// `webhook-timestamp`, `webhook-signature`: `v1,` + base64 of HMAC-SHA256 with the secret's
/// decoded bytes over `{id}.{timestamp}.{body}`), in seq order, one at a time; a 2xx within
/// 10 s acknowledges it, anything else is retried with exponential backoff and jitter (the first
/// retry within 5 s, at most an hour apart) for 3 days, then the subscription is `failing`. A
/// `410 Gone` disables it. The answer holds the signing `secret`, shown this once. At most 20
/// subscriptions per caller.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "createWebhook",
    tag = "webhooks",
    request_body(content = NewSubscriptionInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Subscribed; the secret is shown this once", body = SubscriptionResponse,
            headers(("Location" = String, description = "The subscription's URL"))),
        (status = 409, description = "`after` is past the newest change", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Changes after `after` are no longer kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_webhook(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let members = JsonObject::parse(&request, &body.0, JSON)?.into_members();
    let mut read = Read::members(members, &["url", "events", "after", "description"]);
    if read.url.is_none() && !read.errors.iter().any(|error| error.field == "url") {
        read.errors.push(violation("", "url", "is required"));
    }
    let read = read.checked(state.webhook_settings.allow_internal).await?;
    let Some(url) = read.url else {
        return Err(ApiError::Unprocessable(vec![violation(
            "",
            "url",
            "is required",
        )]));
    };
    let new = NewSubscription {
        url,
        events: read.events.unwrap_or_default(),
        description: read.description.flatten(),
        after: read.after,
    };
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let (subscription, secret) = blocking_call(move || service.create(&owner, &new)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location(subscription.id)))
        .json(SubscriptionResponse::of(
            &subscription,
            Some(secret.expose()),
        )))
}

/// List your subscriptions
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "listWebhooks",
    tag = "webhooks",
    responses((status = 200, description = "Your subscriptions, by id", body = SubscriptionList))
)]
pub(crate) async fn list_webhooks(
    state: web::Data<State>,
    caller: CallerAccess,
) -> Result<HttpResponse, ApiError> {
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let subscriptions = blocking_call(move || service.list(&owner)).await?;
    Ok(HttpResponse::Ok().json(SubscriptionList {
        items: subscriptions
            .iter()
            .map(|s| SubscriptionResponse::of(s, None))
            .collect(),
    }))
}

/// Get a subscription
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "getWebhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    responses((status = 200, description = "The subscription", body = SubscriptionResponse))
)]
pub(crate) async fn get_webhook(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&request)?;
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let subscription = blocking_call(move || service.get(&owner, id)).await?;
    Ok(HttpResponse::Ok().json(SubscriptionResponse::of(&subscription, None)))
}

/// Change or resume a subscription
///
/// A JSON merge patch of `url`, `events`, `description` and `status`: `active` resumes a paused,
/// failing or disabled subscription where it stopped (the waiting change is tried at once);
/// `paused` stops deliveries.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    operation_id = "updateWebhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    request_body(content(
        (SubscriptionPatchInput = "application/merge-patch+json"),
        (SubscriptionPatchInput = "application/json"),
    )),
    responses((status = 200, description = "The changed subscription", body = SubscriptionResponse))
)]
pub(crate) async fn update_webhook(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&request)?;
    let members = JsonObject::parse(&request, &body.0, MERGE_PATCH)?.into_members();
    let read = Read::members(members, &["url", "events", "description", "status"])
        .checked(state.webhook_settings.allow_internal)
        .await?;
    let patch = SubscriptionPatch {
        url: read.url,
        events: read.events,
        description: read.description,
        status: read.status,
    };
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let subscription = blocking_call(move || service.update(&owner, id, &patch)).await?;
    Ok(HttpResponse::Ok().json(SubscriptionResponse::of(&subscription, None)))
}

/// Delete a subscription
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    responses((status = 204, description = "Deleted, with its log"))
)]
pub(crate) async fn delete_webhook(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&request)?;
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    blocking_call(move || service.delete(&owner, id)).await?;
    state.webhook_stats.forget(id);
    Ok(HttpResponse::NoContent().finish())
}

/// A subscription's latest attempts
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id"), DeliveryParams),
    responses((status = 200, description = "The latest attempts, newest first", body = DeliveryList))
)]
pub(crate) async fn list_deliveries(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&request)?;
    let params = Params::parse(request.query_string().as_bytes(), "query string")?;
    let limit = match params.get("limit") {
        None => 20,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=books_domain::DELIVERY_LOG).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest("limit must be an integer from 1 to 100".to_owned())
            })?,
    };
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let deliveries = blocking_call(move || service.deliveries(&owner, id, limit)).await?;
    Ok(HttpResponse::Ok().json(DeliveryList {
        items: deliveries.iter().map(DeliveryResponse::from).collect(),
    }))
}

/// Deliver again from a point of the feed
///
/// Every change after `after` is delivered again, in order (a receiver that deduplicates by
/// `webhook-id` should accept these: it asked for them). Past the newest change → 409; already
/// purged → 410.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/replay",
    operation_id = "replayWebhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    request_body(content = ReplayInput, content_type = "application/json"),
    responses(
        (status = 202, description = "Rewound: the changes after `after` will be delivered", body = SubscriptionResponse),
        (status = 409, description = "`after` is past the newest change", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Changes after `after` are no longer kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn replay_webhook(
    state: web::Data<State>,
    caller: CallerAccess,
    request: HttpRequest,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&request)?;
    let members = JsonObject::parse(&request, &body.0, JSON)?.into_members();
    let mut read = Read::members(members, &["after"]);
    if read.after.is_none() && read.errors.is_empty() {
        read.errors.push(violation("", "after", "is required"));
    }
    if !read.errors.is_empty() {
        return Err(ApiError::Unprocessable(read.errors));
    }
    let after = read.after.unwrap_or_default();
    let owner = Owner::of(&caller.0);
    let service = state.webhooks.clone();
    let subscription = blocking_call(move || service.replay(&owner, id, after)).await?;
    Ok(HttpResponse::Accepted().json(SubscriptionResponse::of(&subscription, None)))
}
