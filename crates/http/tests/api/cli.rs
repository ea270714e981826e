//! The `books-api` command line, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use books_adapters::PostgresApiKeyRepository;
use books_domain::{KeyService, Scope};
use books_local_postgres::testing::TestDatabase;

use crate::openapi::committed;

/// Runs the binary with `args` and the environment given (and no inherited DATABASE_URL).
pub(crate) fn books_api(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_books-api"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATA_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn a_key_created_on_the_command_line_is_printed_once_alone_listed_and_revocable() {
    let database = TestDatabase::new();
    let env = [("DATABASE_URL", database.url())];
    let created = stdout(&books_api(
        &["keys", "create", "--name", "cli-bot", "--scope", "read"],
        &env,
    ));
    let key = created.lines().last().unwrap().to_owned();
    assert!(key.starts_with("bk_") && key.len() == 67, "{created}");
    let keys = KeyService::new(PostgresApiKeyRepository::new(database.pool()));
    assert_eq!(
        keys.ring().unwrap().authenticate(&key).map(|p| p.scope),
        Some(Scope::Read)
    );

    let listed = stdout(&books_api(&["keys", "list"], &env));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("cli-bot") && l.contains("read")),
        "{listed}"
    );
    assert!(!listed.contains(&key), "a key is never shown again");

    stdout(&books_api(&["keys", "revoke", "cli-bot"], &env));
    assert!(keys.ring().unwrap().authenticate(&key).is_none());
    assert!(!stdout(&books_api(&["keys", "list"], &env)).contains("cli-bot"));
    assert!(
        !books_api(&["keys", "revoke", "cli-bot"], &env)
            .status
            .success()
    );
}

#[test]
fn a_write_key_is_the_default_scope() {
    let database = TestDatabase::new();
    let created = stdout(&books_api(
        &["keys", "create", "--name", "ci"],
        &[("DATABASE_URL", database.url())],
    ));
    let keys = KeyService::new(PostgresApiKeyRepository::new(database.pool()));
    let key = created.lines().last().unwrap();
    assert_eq!(
        keys.ring().unwrap().authenticate(key).map(|p| p.scope),
        Some(Scope::Write)
    );
}

#[test]
fn the_openapi_command_prints_the_committed_document() {
    assert_eq!(stdout(&books_api(&["openapi"], &[])), committed());
}

#[test]
fn without_a_database_url_migrate_runs_a_cluster_of_its_own_keeps_it_and_stops_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let folder = std::env::temp_dir().join(format!("books-api-cli-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    // As root the cluster runs as an unprivileged user, who must be able to enter the folder.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = folder.join("postgres");
    let data_dir = data.to_str().unwrap();
    for _ in 0..2 {
        let output = books_api(&["migrate", "--data-dir", data_dir], &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            Path::new(&data).join("data/PG_VERSION").exists(),
            "the cluster is kept"
        );
        assert!(
            !Path::new(&data).join("data/postmaster.pid").exists(),
            "the cluster was stopped"
        );
    }
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn a_log_filter_that_does_not_parse_stops_the_start_with_a_clear_message() {
    let output = books_api(&["openapi"], &[("RUST_LOG", "books_http=loud")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RUST_LOG") && stderr.contains("not a log filter"),
        "{stderr}"
    );
}

#[test]
fn log_formats_and_key_scopes_are_checked_by_the_command_line() {
    let format = books_api(&["openapi"], &[("LOG_FORMAT", "xml")]);
    assert!(!format.status.success());
    assert!(String::from_utf8_lossy(&format.stderr).contains("possible values: text, json"));
    let scope = books_api(&["keys", "create", "--name", "x", "--scope", "admin"], &[]);
    assert!(!scope.status.success());
    assert!(String::from_utf8_lossy(&scope.stderr).contains("possible values: read, write"));
}
