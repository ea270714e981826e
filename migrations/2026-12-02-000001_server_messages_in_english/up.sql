-- The service tells some PostgreSQL errors apart by their message (diesel does not hand on
-- their SQLSTATE: see crates/adapters/src/errors.rs), which PostgreSQL writes in the language of
-- `lc_messages`. Pin it to C (English) for this role in this database, where the role may: it is
-- a superuser-only setting. Otherwise the service warns at start (docs/operations.md says what
-- to ask of the database's administrator).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET lc_messages = %L',
                       current_user, current_database(), 'C');
    END IF;
END
$$;
