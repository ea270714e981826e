DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET lc_messages',
                       current_user, current_database());
    END IF;
END
$$;
