//! The service's store: API keys and executions, in SQLite (embedded, the default) or
//! PostgreSQL (several instances sharing one store). One set of SQL for both, through
//! sqlx's `Any` driver: portable types only (TEXT, BIGINT), `$n` placeholders in order.

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration {version}: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database: {0}")]
    Data(String),
}

/// Schema versions, applied in order, each once (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            revoked_ms BIGINT,
            rate_limit_per_minute BIGINT,
            max_concurrent BIGINT
        )",
    ),
    (
        2,
        "CREATE TABLE executions (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            node TEXT NOT NULL,
            status TEXT NOT NULL,
            language TEXT NOT NULL,
            profile TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            finished_ms BIGINT,
            result TEXT
        )",
    ),
    (
        3,
        "CREATE INDEX executions_by_time ON executions (created_ms)",
    ),
    (
        4,
        "CREATE INDEX executions_by_node_status ON executions (node, status)",
    ),
    (
        5,
        "CREATE INDEX executions_by_key ON executions (key_id, created_ms)",
    ),
    (
        6,
        "CREATE TABLE sandboxes (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            profile TEXT NOT NULL,
            language TEXT,
            env TEXT NOT NULL,
            ttl_seconds BIGINT NOT NULL,
            created_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL,
            version BIGINT NOT NULL,
            workspace {blob} NOT NULL
        )",
    ),
    (
        7,
        "CREATE INDEX sandboxes_by_expiry ON sandboxes (expires_ms)",
    ),
    // The tamper-evident audit log (audit_store.rs).
    (
        8,
        "CREATE TABLE audit_entries (seq BIGINT PRIMARY KEY, entry {blob} NOT NULL)",
    ),
    (
        9,
        "CREATE TABLE audit_nodes (pos BIGINT PRIMARY KEY, hash {blob} NOT NULL)",
    ),
    (
        10,
        "CREATE TABLE audit_head (id BIGINT PRIMARY KEY, size BIGINT NOT NULL, checkpoint TEXT)",
    ),
    (
        11,
        "INSERT INTO audit_head (id, size, checkpoint) VALUES (1, 0, NULL)",
    ),
    (
        12,
        "CREATE TABLE llm_spend (
            scope TEXT NOT NULL,
            period TEXT NOT NULL,
            spent_picos BIGINT NOT NULL,
            PRIMARY KEY (scope, period)
        )",
    ),
];

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
    pub max_concurrent: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutionRow {
    pub id: String,
    pub key_id: String,
    pub status: String,
    pub language: String,
    pub profile: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The result document (JSON) once finished.
    pub result: Option<String>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects and brings the schema up to date. For SQLite the file and its directory are
    /// created (0700 directory: keys' hashes and every execution's output live there).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, true, true).await
    }

    /// An existing store, read-only where the driver allows (SQLite), without migrating:
    /// for `ironcage audit` on the service's log (a typo in the URL must not create a
    /// database that then "verifies", and an auditor needs no write access).
    pub async fn open_existing(url: &str, write: bool) -> Result<Store, StoreError> {
        Store::open_with(url, write, false).await
    }

    async fn open_with(url: &str, write: bool, migrate: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_err = |source| StoreError::Connect {
            url: redact_url(url),
            source,
        };
        let (backend, url_used) = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path).parent().filter(|_| migrate) {
                if !dir.as_os_str().is_empty() {
                    create_private_dir(dir).map_err(|e| connect_err(sqlx::Error::Io(e)))?;
                }
            }
            // WAL: readers never wait for the writer; busy_timeout: writers queue instead of
            // failing when several connections write at once.
            let sep = if path.contains('?') { '&' } else { '?' };
            if !migrate && !std::path::Path::new(path.split('?').next().unwrap_or(path)).is_file() {
                return Err(StoreError::Data(format!(
                    "{}: no such database",
                    redact_url(url)
                )));
            }
            let mode = if write { "rwc" } else { "ro" };
            (Backend::Sqlite, format!("{url}{sep}mode={mode}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Data(format!(
                "database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact_url(url)
            )));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 16 } else { 20 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite && write {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url_used)
            .await
            .map_err(connect_err)?;
        let store = Store { pool, backend };
        if migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Several instances starting at once on PostgreSQL: one migrates, the others wait.
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7301990412)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let m = |source| StoreError::Migrate {
                version: *version,
                source,
            };
            let blob = match self.backend {
                Backend::Sqlite => "BLOB",
                Backend::Postgres => "BYTEA",
            };
            sqlx::query(&sql.replace("{blob}", blob))
                .execute(&mut *tx)
                .await
                .map_err(m)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(m)?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- keys ----

    pub async fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, prefix, created_ms, revoked_ms, rate_limit_per_minute, max_concurrent)
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(hash)
        .bind(&key.prefix)
        .bind(key.created_ms)
        .bind(key.rate_limit_per_minute)
        .bind(key.max_concurrent)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn key_of(r: &AnyRow) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            prefix: r.try_get("prefix")?,
            created_ms: r.try_get("created_ms")?,
            revoked_ms: r.try_get("revoked_ms")?,
            rate_limit_per_minute: r.try_get("rate_limit_per_minute")?,
            max_concurrent: r.try_get("max_concurrent")?,
        })
    }

    const KEY_COLS: &'static str =
        "id, name, prefix, created_ms, revoked_ms, rate_limit_per_minute, max_concurrent";

    /// The live (not revoked) key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let q = format!(
            "SELECT {} FROM api_keys WHERE hash = $1 AND revoked_ms IS NULL",
            Self::KEY_COLS
        );
        let row = sqlx::query(&q)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::key_of).transpose()
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let q = format!(
            "SELECT {} FROM api_keys ORDER BY created_ms, id",
            Self::KEY_COLS
        );
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        rows.iter().map(Self::key_of).collect()
    }

    /// Revokes by id or by name; returns how many keys were revoked.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $1 WHERE (id = $2 OR name = $3) AND revoked_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id_or_name)
        .bind(id_or_name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    // ---- LLM spending (budgets survive restarts) ----

    /// Adds to what `scope` spent in `period` (a calendar key such as `2026-11-25`).
    pub async fn add_llm_spend(
        &self,
        scope: &str,
        period: &str,
        picos: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO llm_spend (scope, period, spent_picos) VALUES ($1, $2, $3)
             ON CONFLICT (scope, period) DO UPDATE SET spent_picos = llm_spend.spent_picos + excluded.spent_picos",
        )
        .bind(scope)
        .bind(period)
        .bind(picos)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn llm_spent(&self, scope: &str, period: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT spent_picos FROM llm_spend WHERE scope = $1 AND period = $2")
                .bind(scope)
                .bind(period)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |r| r.0))
    }

    // ---- executions ----

    pub async fn insert_execution(&self, e: &ExecutionRow, node: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO executions (id, key_id, node, status, language, profile, created_ms, finished_ms, result)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.id)
        .bind(&e.key_id)
        .bind(node)
        .bind(&e.status)
        .bind(&e.language)
        .bind(&e.profile)
        .bind(e.created_ms)
        .bind(e.finished_ms)
        .bind(e.result.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_execution(
        &self,
        id: &str,
        status: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE executions SET status = $1, finished_ms = $2, result = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(now_ms())
        .bind(result)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn execution_of(r: &AnyRow) -> Result<ExecutionRow, StoreError> {
        Ok(ExecutionRow {
            id: r.try_get("id")?,
            key_id: r.try_get("key_id")?,
            status: r.try_get("status")?,
            language: r.try_get("language")?,
            profile: r.try_get("profile")?,
            created_ms: r.try_get("created_ms")?,
            finished_ms: r.try_get("finished_ms")?,
            result: r.try_get("result")?,
        })
    }

    const EXEC_COLS: &'static str =
        "id, key_id, status, language, profile, created_ms, finished_ms, result";

    pub async fn execution(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        let q = format!("SELECT {} FROM executions WHERE id = $1", Self::EXEC_COLS);
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::execution_of).transpose()
    }

    /// A key's executions, newest first.
    pub async fn executions_of_key(
        &self,
        key_id: &str,
        limit: i64,
        status: Option<&str>,
    ) -> Result<Vec<ExecutionRow>, StoreError> {
        let rows = match status {
            Some(s) => {
                let q = format!(
                    "SELECT {} FROM executions WHERE key_id = $1 AND status = $2 ORDER BY created_ms DESC, id DESC LIMIT $3",
                    Self::EXEC_COLS
                );
                sqlx::query(&q)
                    .bind(key_id)
                    .bind(s)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let q = format!(
                    "SELECT {} FROM executions WHERE key_id = $1 ORDER BY created_ms DESC, id DESC LIMIT $2",
                    Self::EXEC_COLS
                );
                sqlx::query(&q)
                    .bind(key_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(Self::execution_of).collect()
    }

    /// Executions this node was running when it stopped: marked failed with `result`.
    pub async fn fail_interrupted(&self, node: &str, result: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE executions SET status = 'failed', finished_ms = $1, result = $2 WHERE node = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(result)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

/// A long-lived sandbox: its settings and its working directory between commands (a job
/// frame whose files are the entries).
#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: String,
    pub key_id: String,
    pub profile: String,
    pub language: Option<String>,
    /// JSON object of environment variables given at creation.
    pub env: String,
    pub ttl_seconds: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub version: i64,
    pub workspace: Vec<u8>,
}

impl Store {
    pub async fn insert_sandbox(&self, s: &SandboxRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sandboxes (id, key_id, profile, language, env, ttl_seconds, created_ms, expires_ms, version, workspace)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.id)
        .bind(&s.key_id)
        .bind(&s.profile)
        .bind(s.language.as_deref())
        .bind(&s.env)
        .bind(s.ttl_seconds)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .bind(s.version)
        .bind(&s.workspace)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A sandbox row; its files only when `workspace` (else empty, and `size` selected).
    fn sandbox_of(r: &AnyRow, workspace: bool) -> Result<SandboxRow, StoreError> {
        Ok(SandboxRow {
            id: r.try_get("id")?,
            key_id: r.try_get("key_id")?,
            profile: r.try_get("profile")?,
            language: r.try_get("language")?,
            env: r.try_get("env")?,
            ttl_seconds: r.try_get("ttl_seconds")?,
            created_ms: r.try_get("created_ms")?,
            expires_ms: r.try_get("expires_ms")?,
            version: r.try_get("version")?,
            workspace: if workspace {
                r.try_get("workspace")?
            } else {
                Vec::new()
            },
        })
    }

    const SANDBOX_COLS: &'static str =
        "id, key_id, profile, language, env, ttl_seconds, created_ms, expires_ms, version";

    /// The sandbox, if it exists and has not expired.
    pub async fn sandbox(&self, id: &str) -> Result<Option<SandboxRow>, StoreError> {
        let q = format!(
            "SELECT {}, workspace FROM sandboxes WHERE id = $1 AND expires_ms > $2",
            Self::SANDBOX_COLS
        );
        let row = sqlx::query(&q)
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Self::sandbox_of(&r, true)).transpose()
    }

    /// The sandbox without its files (and their stored size): for looking at it without
    /// reading up to the workspace limit from the store.
    pub async fn sandbox_meta(&self, id: &str) -> Result<Option<(SandboxRow, i64)>, StoreError> {
        let q = format!(
            "SELECT {}, length(workspace) AS size FROM sandboxes WHERE id = $1 AND expires_ms > $2",
            Self::SANDBOX_COLS
        );
        let row = sqlx::query(&q)
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            // SQLite's length() is an integer that the Any driver may hand back as 32-bit.
            let size = r
                .try_get::<i64, _>("size")
                .or_else(|_| r.try_get::<i32, _>("size").map(i64::from))
                .unwrap_or(0);
            Ok((Self::sandbox_of(&r, false)?, size))
        })
        .transpose()
    }

    /// Saves a new working directory if nobody saved one since `version` was read; false
    /// when someone did (or the sandbox is gone).
    pub async fn save_workspace(
        &self,
        id: &str,
        version: i64,
        workspace: &[u8],
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE sandboxes SET workspace = $1, version = version + 1, expires_ms = $2 WHERE id = $3 AND version = $4",
        )
        .bind(workspace)
        .bind(expires_ms)
        .bind(id)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_sandbox(&self, id: &str, expires_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET expires_ms = $1 WHERE id = $2")
            .bind(expires_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A key's sandboxes that have not expired.
    pub async fn count_sandboxes(&self, key_id: &str) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) FROM sandboxes WHERE key_id = $1 AND expires_ms > $2")
            .bind(key_id)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get::<i64, _>(0)?)
    }

    /// Forgets finished executions older than `before_ms`; returns how many.
    pub async fn reap_executions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM executions WHERE status <> 'running' AND created_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes expired sandboxes; returns how many.
    pub async fn reap_sandboxes(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM sandboxes WHERE expires_ms <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact_url("postgres://ic:s3cret@db:5432/ic"),
            "postgres://ic:***@db:5432/ic"
        );
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
