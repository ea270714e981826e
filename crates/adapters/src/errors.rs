//! What a PostgreSQL error means to the service: the one place that reads driver errors.
//!
//! PostgreSQL names every error by its SQLSTATE. diesel 2.3 reads the SQLSTATE but hands on only
//! a few classes of it, as [`DatabaseErrorKind`] (23505 as `UniqueViolation`, 40001 as
//! `SerializationFailure`, …), and a lost connection, which libpq reports without any SQLSTATE,
//! as `ClosedConnection` or `UnableToSendCommand`. For the other codes the service cares about it
//! gives only the server's message, so [`SQLSTATES`] lists each code with the message PostgreSQL
//! sends with it: the one list to extend, checked by a test against a real server.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What an error means for the request that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection is gone (closed, reset, or ended by the server): drop it, retry later.
    ConnectionLost,
    /// The server is busy, starting or stopping, or a statement ran out of time: retry later.
    Transient,
    /// A lock was not granted within `lock_timeout` (55P03).
    LockTimeout,
    /// A unique constraint refused the row (23505).
    UniqueViolation,
    /// Anything else: a bug or a broken invariant, to be logged and investigated.
    Other,
}

/// The SQLSTATEs the service tells apart beyond diesel's kinds, with the start of the message
/// PostgreSQL (in its default language) sends with each, and what each means.
pub(crate) const SQLSTATES: [(&str, &str, Failure); 7] = [
    // lock_not_available
    (
        "55P03",
        "canceling statement due to lock timeout",
        Failure::LockTimeout,
    ),
    // query_canceled (statement_timeout)
    (
        "57014",
        "canceling statement due to statement timeout",
        Failure::Transient,
    ),
    // admin_shutdown
    (
        "57P01",
        "terminating connection due to administrator command",
        Failure::ConnectionLost,
    ),
    // crash_shutdown
    (
        "57P02",
        "terminating connection because of crash of another server process",
        Failure::ConnectionLost,
    ),
    // cannot_connect_now: starting up, shutting down, in recovery
    ("57P03", "the database system is", Failure::Transient),
    // idle_session_timeout and the like end the session
    (
        "57P05",
        "terminating connection due to idle-session timeout",
        Failure::ConnectionLost,
    ),
    // too_many_connections (class 53, insufficient resources)
    (
        "53300",
        "sorry, too many clients already",
        Failure::Transient,
    ),
];

/// What libpq says, with no SQLSTATE, when the server went away mid-conversation (class 08 in
/// spirit: connection exception).
const CONNECTION_LOST: [&str; 2] = [
    "server closed the connection unexpectedly",
    "terminating connection",
];

/// True when `error` is a unique violation of `constraint` (diesel reads its name from the
/// error's fields, whatever the server's language).
pub(crate) fn violates(error: &DieselError, constraint: &str) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(constraint)
    )
}

/// Classifies `error`.
pub(crate) fn classify(error: &DieselError) -> Failure {
    let DieselError::DatabaseError(kind, info) = error else {
        return Failure::Other;
    };
    match kind {
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
            return Failure::ConnectionLost;
        }
        DatabaseErrorKind::UniqueViolation => return Failure::UniqueViolation,
        // 25006: a write on a connection to a server that no longer takes writes (a primary
        // demoted by a switchover, still up as a standby). The connection must go, so that the
        // next one finds the new primary (`target_session_attrs=read-write`), and the request
        // is answered 503: retry shortly.
        DatabaseErrorKind::ReadOnlyTransaction => return Failure::ConnectionLost,
        DatabaseErrorKind::SerializationFailure => return Failure::Transient,
        _ => {}
    }
    let message = info.message();
    SQLSTATES
        .iter()
        .find(|(_, start, _)| message.starts_with(start))
        .map(|(_, _, failure)| *failure)
        .or_else(|| {
            CONNECTION_LOST
                .iter()
                .any(|sign| message.contains(sign))
                .then_some(Failure::ConnectionLost)
        })
        .unwrap_or(Failure::Other)
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;

    use super::*;
    use books_local_postgres::testing::TestDatabase;

    fn error_of(conn: &mut PgConnection, sql: &str) -> DieselError {
        conn.batch_execute(sql).expect_err("the statement fails")
    }

    #[test]
    fn real_server_errors_are_classified_by_their_sqlstate() {
        let database = TestDatabase::new();
        let mut conn = PgConnection::establish(database.url()).unwrap();
        let mut other = PgConnection::establish(database.url()).unwrap();

        conn.batch_execute("CREATE TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1)")
            .unwrap();
        let duplicate = error_of(&mut conn, "INSERT INTO t VALUES (1)");
        assert_eq!(classify(&duplicate), Failure::UniqueViolation);

        let (locked, slow) = timeouts_on(database.url());
        assert_eq!(classify(&slow), Failure::Transient, "{slow}");
        assert_eq!(classify(&locked), Failure::LockTimeout, "{locked}");

        let pid: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_backend_pid()",
        ))
        .get_result(&mut conn)
        .unwrap();
        other
            .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        let ended = error_of(&mut conn, "SELECT 1");
        assert_eq!(classify(&ended), Failure::ConnectionLost, "{ended}");

        // A primary demoted to a standby refuses writes on the connections still open to it.
        other
            .batch_execute("SET default_transaction_read_only = on")
            .unwrap();
        let demoted = error_of(&mut other, "INSERT INTO t VALUES (2)");
        assert_eq!(classify(&demoted), Failure::ConnectionLost, "{demoted}");
        other
            .batch_execute("RESET default_transaction_read_only")
            .unwrap();

        let bug = error_of(&mut other, "SELECT * FROM no_such_table");
        assert_eq!(classify(&bug), Failure::Other);
    }

    /// A lock timeout and a statement timeout met on new connections to `url` (which has a table
    /// `t` with a row).
    fn timeouts_on(url: &str) -> (DieselError, DieselError) {
        let mut conn = PgConnection::establish(url).unwrap();
        let mut other = PgConnection::establish(url).unwrap();
        other
            .batch_execute("BEGIN; SELECT * FROM t FOR UPDATE")
            .unwrap();
        let locked = error_of(
            &mut conn,
            "BEGIN; SET LOCAL lock_timeout = 10; SELECT * FROM t FOR UPDATE",
        );
        conn.batch_execute("ROLLBACK").unwrap();
        other.batch_execute("ROLLBACK").unwrap();
        let slow = error_of(
            &mut conn,
            "SET statement_timeout = 10; SELECT pg_sleep(1); RESET statement_timeout",
        );
        (locked, slow)
    }

    #[test]
    fn on_a_server_that_writes_in_german_the_migrations_pin_english_and_timeouts_are_still_told_apart()
     {
        // Needs the de_DE.UTF-8 locale on the machine (`localedef -i de_DE -f UTF-8 de_DE.UTF-8`,
        // from Debian's `locales`; .ci/run makes it) and a superuser, as the tests' own cluster has.
        let database = TestDatabase::unmigrated();
        let url = database.url();
        let mut conn = PgConnection::establish(url).unwrap();
        conn.batch_execute(&format!(
            "ALTER DATABASE {} SET lc_messages = 'de_DE.UTF-8'",
            crate::database::quote_identifier(database.name())
        ))
        .expect("the de_DE.UTF-8 locale exists: localedef -i de_DE -f UTF-8 de_DE.UTF-8");
        conn.batch_execute("CREATE TABLE t (k int); INSERT INTO t VALUES (1)")
            .unwrap();
        assert_eq!(
            crate::foreign_message_language(url).unwrap().as_deref(),
            Some("de_DE.UTF-8")
        );
        // What goes wrong without the pin: the messages are German, and not recognised.
        let (locked, slow) = timeouts_on(url);
        assert_eq!(classify(&locked), Failure::Other, "{locked}");
        assert_eq!(classify(&slow), Failure::Other, "{slow}");

        crate::run_migrations(url, true).unwrap();
        assert_eq!(crate::foreign_message_language(url).unwrap(), None);
        let (locked, slow) = timeouts_on(url);
        assert_eq!(classify(&locked), Failure::LockTimeout, "{locked}");
        assert_eq!(classify(&slow), Failure::Transient, "{slow}");
    }
}
