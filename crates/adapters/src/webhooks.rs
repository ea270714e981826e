//! Webhook subscriptions and their progress on PostgreSQL (see
//! `migrations/…_push_changes_to_webhooks/up.sql`).
//!
//! Workers hold subscriptions through leases written in the row itself, taken with
//! `FOR UPDATE SKIP LOCKED` and extended with each recorded attempt: a lease outlives its holder
//! only until `lease_until`, and needs no session state, so it works through PgBouncer in
//! transaction mode. Every write a worker makes is conditional on still holding the lease and on
//! the subscription standing where the worker read it, so a worker that lost its lease (it
//! stalled past it, or the owner rewound or changed the subscription) writes nothing.

use std::time::Duration;

use anyhow::anyhow;
use books_domain::{
    Assignment, ChangesError, Delivery, EventFilter, NewSubscription, NextStep, Owner, Progress,
    Resume, StorageError, Subscription, SubscriptionId, SubscriptionPatch, SubscriptionStatus,
    WebhookError, WebhookRepository, WebhookSecret, WebhookUrl,
};
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chrono::{DateTime, Utc};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz};

use crate::PgPool;
use crate::connection::{checkout, storage_error};
use crate::schema::{book_change_counter, webhook_delivery, webhook_subscription};

/// What the sealed secrets are bound to, so that a sealed value cannot be passed off as another.
const SEAL_CONTEXT: &[u8] = b"books-api webhook secret v1";

/// Stores subscriptions in `webhook_subscription` and their attempts in `webhook_delivery`.
/// Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresWebhookRepository {
    pool: PgPool,
    seal: Option<[u8; 32]>,
}

impl std::fmt::Debug for PostgresWebhookRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWebhookRepository")
            .field("sealed", &self.seal.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresWebhookRepository {
    /// A repository over `pool` that stores new secrets as they are.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, seal: None }
    }

    /// Seals new secrets with `key` (ChaCha20-Poly1305), and opens sealed ones with it: a copy of
    /// the table without the key cannot sign deliveries.
    #[must_use]
    pub fn sealing_with(mut self, key: [u8; 32]) -> Self {
        self.seal = Some(key);
        self
    }

    fn seal(&self, secret: &WebhookSecret) -> Result<(Vec<u8>, Option<Vec<u8>>), StorageError> {
        let Some(key) = &self.seal else {
            return Ok((secret.as_bytes().to_vec(), None));
        };
        let mut nonce = [0_u8; 12];
        getrandom::fill(&mut nonce).map_err(|error| {
            StorageError::Unknown(anyhow!("no randomness for a nonce: {error}"))
        })?;
        let sealed = cipher(key)?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: SEAL_CONTEXT,
                },
            )
            .map_err(|_| StorageError::Unknown(anyhow!("a webhook secret could not be sealed")))?;
        Ok((sealed, Some(nonce.to_vec())))
    }

    fn open(&self, stored: &[u8], nonce: Option<&[u8]>) -> Result<WebhookSecret, String> {
        let bytes = match (nonce, &self.seal) {
            (None, _) => stored.to_vec(),
            (Some(_), None) => {
                return Err("the secret is sealed and the service has no sealing key \
                     (WEBHOOKS_SECRET_KEY)"
                    .to_owned());
            }
            (Some(nonce), Some(key)) => {
                let nonce: [u8; 12] = nonce
                    .try_into()
                    .map_err(|_| "the sealed secret has a malformed nonce".to_owned())?;
                cipher(key)
                    .map_err(|error| error.to_string())?
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: stored,
                            aad: SEAL_CONTEXT,
                        },
                    )
                    .map_err(|_| {
                        "the secret was sealed with another key than WEBHOOKS_SECRET_KEY".to_owned()
                    })?
            }
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the stored secret is not 32 bytes".to_owned())?;
        Ok(WebhookSecret::from_bytes(bytes))
    }
}

fn cipher(key: &[u8; 32]) -> Result<ChaCha20Poly1305, StorageError> {
    ChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| StorageError::Unknown(anyhow!("the sealing key is not 32 bytes")))
}

fn broken(what: &str) -> StorageError {
    StorageError::Unknown(anyhow!("a stored webhook subscription has a bad {what}"))
}

fn seq(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

fn raw_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = webhook_subscription, check_for_backend(Pg))]
struct SubscriptionRow {
    id: i64,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    status: String,
    delivered_through: i64,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StorageError;

    fn try_from(row: SubscriptionRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: SubscriptionId::new(row.id).ok_or_else(|| broken("id"))?,
            url: WebhookUrl::parse(&row.url).map_err(|_| broken("url"))?,
            events: EventFilter::parse(row.events.iter().map(String::as_str))
                .map_err(|_| broken("events"))?,
            description: row.description,
            status: SubscriptionStatus::parse(&row.status).ok_or_else(|| broken("status"))?,
            delivered_through: seq(row.delivered_through),
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = webhook_delivery, check_for_backend(Pg))]
struct DeliveryRow {
    seq: i64,
    attempt: i32,
    at: DateTime<Utc>,
    status: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Array<Text>)]
    events: Vec<String>,
    #[diesel(sql_type = BigInt)]
    delivered_through: i64,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failing_since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bytea)]
    secret: Vec<u8>,
    #[diesel(sql_type = Nullable<Bytea>)]
    secret_nonce: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct RecordedRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    logged: i64,
}

/// One report as the batched update takes it: a column each.
#[derive(Default)]
struct Columns {
    id: Vec<i64>,
    from: Vec<i64>,
    through: Vec<i64>,
    attempts: Vec<i32>,
    failing_since: Vec<Option<DateTime<Utc>>>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    last_error: Vec<Option<String>>,
    clears_error: Vec<bool>,
    status: Vec<Option<&'static str>>,
    keeps_lease: Vec<bool>,
    logs: Vec<bool>,
}

impl Columns {
    fn push(&mut self, report: &Progress<'_>) {
        let (status, through, attempts, failing_since, next_attempt_at, last_error) =
            match &report.next {
                NextStep::Acknowledged => (None, report.seq, 0, None, None, None),
                NextStep::Retry { at, failing_since } => (
                    None,
                    report.from,
                    report.attempt.map_or(0, |attempt| attempt.attempt),
                    Some(*failing_since),
                    Some(*at),
                    report.attempt.and_then(|attempt| attempt.error.clone()),
                ),
                NextStep::GiveUp => (
                    Some("failing"),
                    report.from,
                    0,
                    None,
                    None,
                    report.reason.map(str::to_owned),
                ),
                NextStep::Disable => (
                    Some("disabled"),
                    report.from,
                    0,
                    None,
                    None,
                    report.reason.map(str::to_owned),
                ),
            };
        let acknowledged = matches!(report.next, NextStep::Acknowledged);
        self.id.push(report.id.get());
        self.from.push(raw_seq(report.from));
        self.through.push(raw_seq(through));
        self.attempts
            .push(i32::try_from(attempts).unwrap_or(i32::MAX));
        self.failing_since.push(failing_since);
        self.next_attempt_at.push(next_attempt_at);
        self.last_error.push(last_error);
        // A delivery acknowledged clears the last error; a skip or a lease renewal keeps it.
        self.clears_error
            .push(acknowledged && report.attempt.is_some());
        self.status.push(status);
        // A retry waits for its time without a lease; giving up or disabling ends the lease.
        self.keeps_lease.push(acknowledged);
        self.logs.push(report.attempt.is_some());
    }
}

/// Writes one round of reports (each subscription at most once) with one statement: each
/// subscription's new state, if `holder` still holds it and it stands where the report says.
/// The rows written: id, status afterwards, and how many attempts it has logged.
fn record_round(
    conn: &mut PgConnection,
    holder: &str,
    reports: &[&Progress<'_>],
    lease: Duration,
) -> QueryResult<Vec<RecordedRow>> {
    let mut columns = Columns::default();
    for report in reports {
        columns.push(report);
    }
    diesel::sql_query(
        "UPDATE webhook_subscription AS s SET \
            delivered_through = r.through, attempts = r.attempts, \
            failing_since = r.failing_since, next_attempt_at = r.next_attempt_at, \
            last_error = CASE WHEN r.clears_error THEN NULL ELSE coalesce(r.last_error, s.last_error) END, \
            status = coalesce(r.status, s.status), \
            lease_until = CASE WHEN r.keeps_lease THEN now() + $13 * interval '1 millisecond' END, \
            lease_holder = CASE WHEN r.keeps_lease THEN s.lease_holder END, \
            logged = s.logged + CASE WHEN r.logs THEN 1 ELSE 0 END \
        FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::integer[], $6::timestamptz[], \
                    $7::timestamptz[], $8::text[], $9::boolean[], $10::text[], $11::boolean[], \
                    $12::boolean[]) \
            AS r(id, from_seq, through, attempts, failing_since, next_attempt_at, last_error, \
                 clears_error, status, keeps_lease, logs) \
        WHERE s.id = r.id AND s.lease_holder = $1 AND s.delivered_through = r.from_seq \
        RETURNING s.id, s.status, s.logged",
    )
    .bind::<Text, _>(holder)
    .bind::<Array<BigInt>, _>(columns.id)
    .bind::<Array<BigInt>, _>(columns.from)
    .bind::<Array<BigInt>, _>(columns.through)
    .bind::<Array<Integer>, _>(columns.attempts)
    .bind::<Array<Nullable<Timestamptz>>, _>(columns.failing_since)
    .bind::<Array<Nullable<Timestamptz>>, _>(columns.next_attempt_at)
    .bind::<Array<Nullable<Text>>, _>(columns.last_error)
    .bind::<Array<diesel::sql_types::Bool>, _>(columns.clears_error)
    .bind::<Array<Nullable<Text>>, _>(columns.status)
    .bind::<Array<diesel::sql_types::Bool>, _>(columns.keeps_lease)
    .bind::<Array<diesel::sql_types::Bool>, _>(columns.logs)
    .bind::<BigInt, _>(millis(lease))
    .load(conn)
}

/// Checks that `after` is a position the feed holds: not past its newest change (409), not
/// purged (410).
fn check_position(conn: &mut PgConnection, after: u64) -> Result<(), WebhookError> {
    let (last, purged): (i64, i64) = book_change_counter::table
        .select((
            book_change_counter::last_seq,
            book_change_counter::purged_through,
        ))
        .first(conn)
        .map_err(|error| storage_error(conn, error))?;
    let after_seq = raw_seq(after);
    if after_seq > last {
        return Err(ChangesError::Ahead {
            after,
            newest: seq(last),
        }
        .into());
    }
    if after_seq < purged {
        return Err(ChangesError::Expired {
            purged_through: seq(purged),
        }
        .into());
    }
    Ok(())
}

impl WebhookRepository for PostgresWebhookRepository {
    fn create(
        &self,
        owner: &Owner,
        new: &NewSubscription,
        secret: &WebhookSecret,
    ) -> Result<Subscription, WebhookError> {
        let (sealed, nonce) = self.seal(secret)?;
        let mut conn = checkout(&self.pool)?;
        conn.transaction(|conn| {
            // One creation per owner at a time, so that two at once cannot both pass the count.
            diesel::sql_query(
                "SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 7))",
            )
            .bind::<Bytea, _>(owner.as_bytes())
            .execute(conn)?;
            let held: i64 = webhook_subscription::table
                .filter(webhook_subscription::owner.eq(owner.as_bytes()))
                .count()
                .get_result(conn)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= books_domain::MAX_SUBSCRIPTIONS {
                return Ok(Err(WebhookError::TooMany));
            }
            let after = match new.after {
                Some(after) => match check_position(conn, after) {
                    Ok(()) => raw_seq(after),
                    Err(error) => return Ok(Err(error)),
                },
                None => book_change_counter::table
                    .select(book_change_counter::last_seq)
                    .first(conn)?,
            };
            let row: SubscriptionRow = diesel::insert_into(webhook_subscription::table)
                .values((
                    webhook_subscription::owner.eq(owner.as_bytes()),
                    webhook_subscription::url.eq(new.url.as_str()),
                    webhook_subscription::events.eq(new.events.names()),
                    webhook_subscription::description.eq(new.description.as_deref()),
                    webhook_subscription::secret.eq(&sealed),
                    webhook_subscription::secret_nonce.eq(nonce.as_deref()),
                    webhook_subscription::delivered_through.eq(after),
                ))
                .returning(SubscriptionRow::as_returning())
                .get_result(conn)?;
            Ok(Subscription::try_from(row).map_err(WebhookError::from))
        })
        .map_err(|error: diesel::result::Error| {
            WebhookError::from(storage_error(&mut conn, error))
        })?
    }

    fn list(&self, owner: &Owner) -> Result<Vec<Subscription>, StorageError> {
        let mut conn = checkout(&self.pool)?;
        webhook_subscription::table
            .filter(webhook_subscription::owner.eq(owner.as_bytes()))
            .order(webhook_subscription::id)
            .select(SubscriptionRow::as_select())
            .load(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?
            .into_iter()
            .map(Subscription::try_from)
            .collect()
    }

    fn get(&self, owner: &Owner, id: SubscriptionId) -> Result<Subscription, WebhookError> {
        let mut conn = checkout(&self.pool)?;
        let row = webhook_subscription::table
            .filter(webhook_subscription::id.eq(id.get()))
            .filter(webhook_subscription::owner.eq(owner.as_bytes()))
            .select(SubscriptionRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(|error| storage_error(&mut conn, error))?
            .ok_or(WebhookError::NotFound(id))?;
        Ok(Subscription::try_from(row)?)
    }

    fn update(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        patch: &SubscriptionPatch,
    ) -> Result<Subscription, WebhookError> {
        let mut conn = checkout(&self.pool)?;
        // A new URL or new events take the lease away: the worker delivering to the old ones
        // stops, and the change it was delivering goes to the new ones.
        let sql = "UPDATE webhook_subscription SET \
                url = coalesce($3, url), \
                events = coalesce($4, events), \
                description = CASE WHEN $5 THEN $6 ELSE description END, \
                status = coalesce($7, status), \
                attempts = CASE WHEN $7 = 'active' AND status <> 'active' THEN 0 ELSE attempts END, \
                failing_since = CASE WHEN $7 = 'active' AND status <> 'active' THEN NULL ELSE failing_since END, \
                next_attempt_at = CASE WHEN $7 = 'active' AND status <> 'active' THEN NULL \
                                       WHEN $7 = 'paused' THEN NULL ELSE next_attempt_at END, \
                lease_holder = CASE WHEN $3 IS NULL AND $4 IS NULL THEN lease_holder END, \
                lease_until = CASE WHEN $3 IS NULL AND $4 IS NULL THEN lease_until END \
            WHERE id = $1 AND owner = $2 RETURNING id";
        let updated = diesel::sql_query(sql)
            .bind::<BigInt, _>(id.get())
            .bind::<Bytea, _>(owner.as_bytes())
            .bind::<Nullable<Text>, _>(patch.url.as_ref().map(WebhookUrl::as_str))
            .bind::<Nullable<Array<Text>>, _>(patch.events.map(EventFilter::names))
            .bind::<diesel::sql_types::Bool, _>(patch.description.is_some())
            .bind::<Nullable<Text>, _>(patch.description.clone().flatten())
            .bind::<Nullable<Text>, _>(patch.status.map(|status| match status {
                Resume::Active => "active",
                Resume::Paused => "paused",
            }))
            .execute(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        drop(conn);
        if updated == 0 {
            return Err(WebhookError::NotFound(id));
        }
        self.get(owner, id)
    }

    fn delete(&self, owner: &Owner, id: SubscriptionId) -> Result<(), WebhookError> {
        let mut conn = checkout(&self.pool)?;
        let deleted = diesel::delete(
            webhook_subscription::table
                .filter(webhook_subscription::id.eq(id.get()))
                .filter(webhook_subscription::owner.eq(owner.as_bytes())),
        )
        .execute(&mut conn)
        .map_err(|error| storage_error(&mut conn, error))?;
        if deleted == 0 {
            return Err(WebhookError::NotFound(id));
        }
        Ok(())
    }

    fn deliveries(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<Delivery>, WebhookError> {
        self.get(owner, id)?;
        let mut conn = checkout(&self.pool)?;
        let rows: Vec<DeliveryRow> = webhook_delivery::table
            .filter(webhook_delivery::subscription_id.eq(id.get()))
            .order(webhook_delivery::n.desc())
            .limit(i64::try_from(limit).unwrap_or(100))
            .select(DeliveryRow::as_select())
            .load(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        Ok(rows
            .into_iter()
            .map(|row| Delivery {
                seq: seq(row.seq),
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                at: row.at,
                status: row.status.and_then(|status| u16::try_from(status).ok()),
                error: row.error,
                duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
            })
            .collect())
    }

    fn rewind(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        after: u64,
    ) -> Result<Subscription, WebhookError> {
        let mut conn = checkout(&self.pool)?;
        let outcome = conn
            .transaction(|conn| {
                if let Err(error) = check_position(conn, after) {
                    return Ok(Err(error));
                }
                let updated = diesel::update(
                    webhook_subscription::table
                        .filter(webhook_subscription::id.eq(id.get()))
                        .filter(webhook_subscription::owner.eq(owner.as_bytes())),
                )
                .set((
                    webhook_subscription::delivered_through.eq(raw_seq(after)),
                    webhook_subscription::attempts.eq(0),
                    webhook_subscription::failing_since.eq(None::<DateTime<Utc>>),
                    webhook_subscription::next_attempt_at.eq(None::<DateTime<Utc>>),
                ))
                .execute(conn)?;
                Ok(if updated == 0 {
                    Err(WebhookError::NotFound(id))
                } else {
                    Ok(())
                })
            })
            .map_err(|error: diesel::result::Error| storage_error(&mut conn, error))?;
        drop(conn);
        outcome?;
        self.get(owner, id)
    }

    fn claim(
        &self,
        holder: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Assignment>, StorageError> {
        let mut conn = checkout(&self.pool)?;
        let sql = "WITH due AS ( \
                SELECT s.id FROM webhook_subscription AS s, book_change_counter AS c \
                WHERE s.status = 'active' AND s.delivered_through < c.last_seq \
                  AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now()) \
                  AND (s.lease_until IS NULL OR s.lease_until < now()) \
                ORDER BY s.next_attempt_at NULLS FIRST, s.id \
                LIMIT $3 \
                FOR UPDATE OF s SKIP LOCKED \
            ) \
            UPDATE webhook_subscription AS s \
            SET lease_holder = $1, lease_until = now() + $2 * interval '1 millisecond' \
            FROM due WHERE s.id = due.id \
            RETURNING s.id, s.url, s.events, s.delivered_through, s.attempts, s.failing_since, \
                      s.secret, s.secret_nonce";
        let rows: Vec<ClaimRow> = diesel::sql_query(sql)
            .bind::<Text, _>(holder)
            .bind::<BigInt, _>(millis(lease))
            .bind::<BigInt, _>(i64::try_from(max).unwrap_or(i64::MAX))
            .load(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        rows.into_iter()
            .map(|row| {
                Ok(Assignment {
                    id: SubscriptionId::new(row.id).ok_or_else(|| broken("id"))?,
                    url: WebhookUrl::parse(&row.url).map_err(|_| broken("url"))?,
                    events: EventFilter::parse(row.events.iter().map(String::as_str))
                        .map_err(|_| broken("events"))?,
                    delivered_through: seq(row.delivered_through),
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                    failing_since: row.failing_since,
                    secret: self.open(&row.secret, row.secret_nonce.as_deref()),
                })
            })
            .collect()
    }

    fn record_many(
        &self,
        holder: &str,
        reports: &[Progress<'_>],
    ) -> Result<Vec<bool>, StorageError> {
        // Rounds in which each subscription appears once (a statement updates a row once); there
        // is one round unless a subscription sent two reports at once.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (index, report) in reports.iter().enumerate() {
            match rounds
                .iter_mut()
                .find(|round| round.iter().all(|other| reports[*other].id != report.id))
            {
                Some(round) => round.push(index),
                None => rounds.push(vec![index]),
            }
        }
        let lease = reports
            .first()
            .map_or(Duration::ZERO, |report| report.lease);
        let mut conn = checkout(&self.pool)?;
        conn.transaction(|conn| {
            let mut outcomes = vec![false; reports.len()];
            for round in rounds {
                let mut in_round: Vec<&Progress<'_>> =
                    round.iter().map(|index| &reports[*index]).collect();
                // Rows are locked in id order, so that two writers never wait for each other.
                in_round.sort_by_key(|report| report.id);
                let written = record_round(conn, holder, &in_round, lease)?;
                let mut log = Vec::new();
                for row in written {
                    let Some(index) = round
                        .iter()
                        .copied()
                        .find(|index| reports[*index].id.get() == row.id)
                    else {
                        continue;
                    };
                    let report = &reports[index];
                    outcomes[index] =
                        matches!(report.next, NextStep::Acknowledged) && row.status == "active";
                    if let Some(attempt) = report.attempt {
                        let slot = i16::try_from((row.logged - 1).rem_euclid(100)).unwrap_or(0);
                        log.push((
                            webhook_delivery::subscription_id.eq(row.id),
                            webhook_delivery::slot.eq(slot),
                            webhook_delivery::n.eq(row.logged),
                            webhook_delivery::seq.eq(raw_seq(attempt.seq)),
                            webhook_delivery::attempt
                                .eq(i32::try_from(attempt.attempt).unwrap_or(i32::MAX)),
                            webhook_delivery::at.eq(attempt.at),
                            webhook_delivery::status.eq(attempt.status.map(i32::from)),
                            webhook_delivery::error.eq(attempt.error.clone()),
                            webhook_delivery::duration_ms
                                .eq(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX)),
                        ));
                    }
                }
                if !log.is_empty() {
                    use diesel::upsert::excluded;
                    // Each attempt takes the slot of the oldest: the log is a ring of 100.
                    diesel::insert_into(webhook_delivery::table)
                        .values(log)
                        .on_conflict((webhook_delivery::subscription_id, webhook_delivery::slot))
                        .do_update()
                        .set((
                            webhook_delivery::n.eq(excluded(webhook_delivery::n)),
                            webhook_delivery::seq.eq(excluded(webhook_delivery::seq)),
                            webhook_delivery::attempt.eq(excluded(webhook_delivery::attempt)),
                            webhook_delivery::at.eq(excluded(webhook_delivery::at)),
                            webhook_delivery::status.eq(excluded(webhook_delivery::status)),
                            webhook_delivery::error.eq(excluded(webhook_delivery::error)),
                            webhook_delivery::duration_ms
                                .eq(excluded(webhook_delivery::duration_ms)),
                        ))
                        .execute(conn)?;
                }
            }
            Ok(outcomes)
        })
        .map_err(|error: diesel::result::Error| storage_error(&mut conn, error))
    }

    fn release_all(&self, holder: &str) -> Result<(), StorageError> {
        let mut conn = checkout(&self.pool)?;
        diesel::update(
            webhook_subscription::table.filter(webhook_subscription::lease_holder.eq(holder)),
        )
        .set((
            webhook_subscription::lease_holder.eq(None::<String>),
            webhook_subscription::lease_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(&mut conn)
        .map_err(|error| storage_error(&mut conn, error))?;
        Ok(())
    }

    fn release(&self, holder: &str, id: SubscriptionId) -> Result<(), StorageError> {
        let mut conn = checkout(&self.pool)?;
        diesel::update(
            webhook_subscription::table.filter(
                webhook_subscription::id
                    .eq(id.get())
                    .and(webhook_subscription::lease_holder.eq(holder)),
            ),
        )
        .set((
            webhook_subscription::lease_holder.eq(None::<String>),
            webhook_subscription::lease_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(&mut conn)
        .map_err(|error| storage_error(&mut conn, error))?;
        Ok(())
    }
}
