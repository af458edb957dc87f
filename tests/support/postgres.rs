//! A fresh PostgreSQL database for one test or bench, on the server of `DATABASE_URL`.

/// Creates (again, if it was left over) the database `fsm_<name>_<pid>` on the server of
/// `url`, and returns its URL.
pub async fn fresh_database(url: &str, name: &str) -> String {
    let short: String = name.chars().take(30).collect();
    let db = format!("fsm_{short}_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("DATABASE_URL={url}: {e}"));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{db}")
}
