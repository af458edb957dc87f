//! How the PostgreSQL store connects: TLS as `sslmode` means it to libpq (against the CI
//! server with a certificate of its own certificate authority, and against a server that
//! refuses TLS), tables in a schema of their own, and roles with the least privileges.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fsm_core::{Context, Executor, Fsm, PgOptions, PgStore, StepError, StoreError};
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

#[path = "support/postgres.rs"]
mod postgres;

#[derive(Fsm, Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ping {
    #[fsm(initial, on(pong => Ponged))]
    Sent { n: u32 },
    #[fsm(terminal)]
    Ponged { n: u32 },
}

struct Table;

impl ping::Steps for Table {
    async fn sent(
        &self,
        m: ping::Machine<ping::Sent>,
        _: Context,
    ) -> Result<ping::Machine<ping::Ponged>, StepError> {
        Ok(m.pong(|s| ping::Ponged { n: s.n }))
    }
}

/// Runs one execution to its end through `store`.
async fn round_trip(store: PgStore) {
    let ex = Executor::<Ping, Table>::builder(Table)
        .durable(store)
        .unwrap();
    let id = ex
        .start(ping::Machine::new(ping::Sent { n: 1 }))
        .await
        .unwrap();
    let row = tokio::time::timeout(Duration::from_secs(10), ex.finished(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state_name, "Ponged");
    ex.shutdown().await;
}

/// A rustls connector that trusts the certificate authority in the PEM file `ca`.
fn rustls_trusting(ca: &str) -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// The server of `DATABASE_URL`, or a line that says the test was skipped (a failure where
/// the server is required).
fn server(test: &str) -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok();
    if url.is_none() {
        let line = format!("SKIPPED {test}: DATABASE_URL is not set (.ci/run starts a server)");
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    url
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server that refuses TLS, as PostgreSQL without `ssl = on` does: it answers the TLS
/// request with `N`.
async fn server_without_tls() -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                // 8 bytes: length 8, then the SSLRequest code 80877103.
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    port
}

#[test]
fn sslmode_require_against_a_server_without_tls_is_a_tls_error_not_a_retry() {
    runtime().block_on(async {
        let port = server_without_tls().await;
        let url = format!("postgres://fsm@127.0.0.1:{port}/orders?sslmode=require");
        // With a connector: the server refused TLS.
        let ca = std::env::temp_dir().join(format!("fsm-no-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "").unwrap();
        let err = PgStore::connect_with(&url, PgOptions::new().tls(rustls_trusting(ca.to_str().unwrap())))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Tls { message } if message.contains("server does not support TLS")),
            "{err}"
        );
        // Without one: `require` cannot be met, and the error says what to do.
        let err = PgStore::connect(&url).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Tls { message } if message.contains("PgOptions::tls")),
            "{err}"
        );
        assert!(err.to_string().starts_with("TLS: "), "{err}");
    });
}

#[test]
fn tls_to_the_server_with_require_and_prefer() {
    let Some(url) = server("TLS to PostgreSQL") else {
        return;
    };
    let Ok(ca) = std::env::var("FSM_PG_CA") else {
        let line = "SKIPPED TLS to PostgreSQL: FSM_PG_CA (the CA of the server's certificate) \
                    is not set (.ci/run makes one and starts the server with TLS)";
        assert!(std::env::var_os("FSM_REQUIRE_POSTGRES").is_none(), "{line}");
        let _ = writeln!(std::io::stdout().lock(), "{line}");
        return;
    };
    runtime().block_on(async {
        let db = postgres::fresh_database(&url, "tls").await;
        for mode in ["require", "prefer"] {
            let url = format!("{db}?sslmode={mode}");
            let store = PgStore::connect_with(&url, PgOptions::new().tls(rustls_trusting(&ca)))
                .await
                .unwrap();
            // Every session of the store (writer, reader, listener) is encrypted. The
            // listener connects in a task of its own, and may still be on its way.
            let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut sessions = (0, 0);
            for _ in 0..100 {
                let row = client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl) \
                         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap();
                sessions = (row.get::<_, i64>(0), row.get::<_, i64>(1));
                assert_eq!(sessions.0, 0, "sslmode={mode}: a session in the clear");
                if sessions.1 == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(sessions, (0, 3), "sslmode={mode}");
            round_trip(store).await;
            // The store's sessions end with it (its listener looks every second).
            let mut gone = false;
            for _ in 0..50 {
                let left: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if left == 0 {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(gone, "the store's sessions outlived it");
        }
        // A certificate from an authority the client does not trust (it trusts none here) is
        // refused, not retried.
        let none = std::env::temp_dir().join(format!("fsm-no-ca-{}.pem", std::process::id()));
        std::fs::write(&none, "").unwrap();
        let err = PgStore::connect_with(
            &format!("{db}?sslmode=require"),
            PgOptions::new().tls(rustls_trusting(none.to_str().unwrap())),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Tls { .. }), "{err}");
    });
}

#[test]
fn tables_in_a_schema_of_their_own_and_a_role_that_may_only_read_and_write_them() {
    let Some(url) = server("schemas and roles on PostgreSQL") else {
        return;
    };
    runtime().block_on(async {
        let db = postgres::fresh_database(&url, "roles").await;
        let (owner, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let name = owner
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get::<_, String>(0);
        // The owner's first connect creates the schema and the tables in it, not in public.
        let store = PgStore::connect_with(&db, PgOptions::new().schema("shop"))
            .await
            .unwrap();
        round_trip(store).await;
        let count = |schema: &'static str| {
            let owner = &owner;
            async move {
                owner
                    .query_one(
                        "SELECT count(*) FROM information_schema.tables \
                         WHERE table_schema = $1 AND table_name LIKE 'fsm_%'",
                        &[&schema],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            }
        };
        assert_eq!(count("shop").await, 5);
        assert_eq!(count("public").await, 0);
        // A role that may read and write the tables, and create nothing.
        let app = format!("fsm_app_{}", std::process::id());
        let idle = format!("fsm_idle_{}", std::process::id());
        owner
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {app}; DROP ROLE IF EXISTS {idle};
                 CREATE ROLE {app} LOGIN; CREATE ROLE {idle} LOGIN;
                 REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                 GRANT CONNECT ON DATABASE \"{name}\" TO {app}, {idle};
                 GRANT USAGE ON SCHEMA shop TO {app}, {idle};
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA shop TO {app};"
            ))
            .await
            .unwrap();
        let as_role = |role: &str| db.replacen("fsm@", &format!("{role}@"), 1);
        let store = PgStore::connect_with(&as_role(&app), PgOptions::new().schema("shop"))
            .await
            .unwrap();
        round_trip(store).await;
        // One that may not touch the tables is told so, as privileges.
        let err = PgStore::connect_with(&as_role(&idle), PgOptions::new().schema("shop"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Privileges { .. }), "{err:?}");
        assert!(err.to_string().contains("lacks a privilege"), "{err}");
        // And one that may not create the schema it names, too.
        let err = PgStore::connect_with(&as_role(&app), PgOptions::new().schema("elsewhere"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Privileges { .. }), "{err:?}");
    });
}
