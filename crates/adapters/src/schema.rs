//! The tables, as diesel sees them. Kept by hand in step with `migrations/`.

diesel::table! {
    book (id) {
        id -> Int8,
        title -> Varchar,
        author -> Varchar,
        genre -> Nullable<Varchar>,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        isbn -> Nullable<Varchar>,
        published_year -> Nullable<Int4>,
        title_words -> Array<Text>,
        author_words -> Array<Text>,
    }
}

diesel::table! {
    idempotency_key (owner, key) {
        owner -> Bytea,
        key -> Varchar,
        created_at -> Timestamptz,
        book_ids -> Nullable<Array<Int8>>,
        request_digest -> Bytea,
        digest_fields -> Int2,
    }
}

diesel::table! {
    api_key (id) {
        id -> Int8,
        name -> Varchar,
        scope -> Text,
        digest -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    book_change (id) {
        id -> Int8,
        seq -> Nullable<Int8>,
        kind -> Text,
        book_id -> Int8,
        version -> Int8,
        at -> Timestamptz,
        title -> Nullable<Varchar>,
        author -> Nullable<Varchar>,
        genre -> Nullable<Varchar>,
        created_at -> Nullable<Timestamptz>,
        updated_at -> Nullable<Timestamptz>,
        isbn -> Nullable<Varchar>,
        published_year -> Nullable<Int4>,
    }
}

diesel::table! {
    book_change_counter (only_row) {
        only_row -> Bool,
        last_seq -> Int8,
        purged_through -> Int8,
        timeline -> Nullable<Int8>,
    }
}

diesel::table! {
    webhook_subscription (id) {
        id -> Int8,
        owner -> Bytea,
        url -> Text,
        events -> Array<Text>,
        description -> Nullable<Text>,
        secret -> Bytea,
        secret_nonce -> Nullable<Bytea>,
        status -> Text,
        delivered_through -> Int8,
        attempts -> Int4,
        failing_since -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
        lease_holder -> Nullable<Text>,
        lease_until -> Nullable<Timestamptz>,
        // `logged` (the attempts logged so far) is only written by SQL of its own: diesel's
        // table may have 16 columns without a feature that doubles its compile time.
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_delivery (subscription_id, slot) {
        subscription_id -> Int8,
        slot -> Int2,
        n -> Int8,
        seq -> Int8,
        attempt -> Int4,
        at -> Timestamptz,
        status -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int8,
    }
}

diesel::joinable!(webhook_delivery -> webhook_subscription (subscription_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_subscription, webhook_delivery);
