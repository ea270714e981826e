//! API keys on PostgreSQL.

use crate::errors::{Failure, classify};
use anyhow::anyhow;
use books_domain::{
    ApiKey, ApiKeyRepository, CallerName, CreateKeyError, KeyDigest, KeyName, Principal,
    RevokeKeyError, Scope, StorageError,
};
use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;

use crate::PgPool;
use crate::connection::{checkout, storage_error};
use crate::schema::api_key;

/// Stores API keys (their digests) in the `api_key` table. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresApiKeyRepository {
    pool: PgPool,
}

impl PostgresApiKeyRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_key, check_for_backend(Pg))]
struct KeyRow {
    name: String,
    scope: String,
    digest: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl KeyRow {
    fn parts(self) -> Result<(KeyDigest, ApiKey), StorageError> {
        let broken =
            |what: &str| StorageError::Unknown(anyhow!("a stored API key has a bad {what}"));
        let name = KeyName::new(&self.name).map_err(|_| broken("name"))?;
        let scope = Scope::parse(&self.scope).ok_or_else(|| broken("scope"))?;
        let digest = KeyDigest(self.digest.try_into().map_err(|_| broken("digest"))?);
        Ok((
            digest,
            ApiKey {
                name,
                scope,
                created_at: self.created_at,
            },
        ))
    }
}

fn active()
-> api_key::BoxedQuery<'static, Pg, diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<KeyRow, Pg>>> {
    api_key::table
        .filter(api_key::revoked_at.is_null())
        .order(api_key::name)
        .select(KeyRow::as_select())
        .into_boxed()
}

impl ApiKeyRepository for PostgresApiKeyRepository {
    fn insert(
        &self,
        name: &KeyName,
        scope: Scope,
        digest: &KeyDigest,
    ) -> Result<ApiKey, CreateKeyError> {
        let mut conn = checkout(&self.pool)?;
        let row = diesel::insert_into(api_key::table)
            .values((
                api_key::name.eq(name.as_str()),
                api_key::scope.eq(scope.name()),
                api_key::digest.eq(digest.0.as_slice()),
            ))
            .returning(KeyRow::as_returning())
            .get_result(&mut conn);
        match row {
            Ok(row) => Ok(row.parts()?.1),
            Err(error) if classify(&error) == Failure::UniqueViolation => {
                Err(CreateKeyError::NameTaken(name.clone()))
            }
            Err(error) => Err(storage_error(&mut conn, error).into()),
        }
    }

    fn list(&self) -> Result<Vec<ApiKey>, StorageError> {
        let mut conn = checkout(&self.pool)?;
        let rows = active()
            .load(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        rows.into_iter()
            .map(|row| row.parts().map(|(_, key)| key))
            .collect()
    }

    fn active(&self) -> Result<Vec<(KeyDigest, Principal)>, StorageError> {
        let mut conn = checkout(&self.pool)?;
        let rows = active()
            .load(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        rows.into_iter()
            .map(|row| {
                row.parts().map(|(digest, key)| {
                    (
                        digest,
                        Principal {
                            key: digest,
                            name: CallerName::Key(key.name),
                            scope: key.scope,
                        },
                    )
                })
            })
            .collect()
    }

    fn revoke(&self, name: &KeyName) -> Result<(), RevokeKeyError> {
        let mut conn = checkout(&self.pool)?;
        let revoked = diesel::update(api_key::table)
            .filter(
                api_key::name
                    .eq(name.as_str())
                    .and(api_key::revoked_at.is_null()),
            )
            .set(api_key::revoked_at.eq(now))
            .execute(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        if revoked == 0 {
            return Err(RevokeKeyError::NotFound(name.clone()));
        }
        Ok(())
    }
}
