//! Long-lived sandboxes, for agents that work in steps: a sandbox keeps its files (and its
//! environment) between commands. Each command runs in a fresh pooled sandbox whose /work
//! is restored from the stored files, and the files it leaves in /work are stored again.
//! Processes end with their command; nothing but /work carries over.
//!
//! The files live in the store (one job frame per sandbox), so they are bounded
//! (`sandboxes.max_workspace_bytes`), survive restarts, and are reachable from every
//! instance sharing a PostgreSQL store. The server never touches a path the sandbox chose
//! on its own file system: files travel as data, and symbolic links are recreated inside
//! the next sandbox, where they can only lead to what that sandbox may see.

use crate::app::{
    acquire_slot, authenticate, key_slot, parse_json, read_body, record_running, run_execution,
    ApiError, App,
};
use crate::execution::{self, invalid, Invalid, MemoryLimit, Planned};
use crate::store::{now_ms, SandboxRow};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironcage_sandbox::job::{check_relative_path, FileKind, Job, JobFile};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The program (looked up on PATH); `args` follow. Or `code`, run with the sandbox's
    /// language.
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    memory_limit: Option<MemoryLimit>,
    #[serde(default)]
    cpu_seconds: Option<u64>,
}

/// Bounds on a sandbox's list of files (its names travel in one frame header).
const MAX_ENTRIES: usize = 10_000;
const MAX_NAMES_BYTES: usize = ironcage_sandbox::job::MAX_HEADER / 2;

fn bad(e: Invalid) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no sandbox {id:?} (it may have expired)"),
    )
}

fn workspace_of(row: &SandboxRow) -> Result<Vec<JobFile>, ApiError> {
    Job::decode(&row.workspace)
        .map(|j| j.files)
        .map_err(ApiError::internal)
}

fn encode_workspace(files: Vec<JobFile>) -> Vec<u8> {
    Job {
        argv: vec!["workspace".into()],
        files,
        ..Job::default()
    }
    .encode()
}

fn workspace_bytes(files: &[JobFile]) -> u64 {
    files.iter().map(|f| f.content.len() as u64).sum()
}

fn view(row: &SandboxRow, stored_bytes: i64) -> serde_json::Value {
    json!({
        "id": row.id,
        "profile": row.profile,
        "language": row.language,
        "ttl_seconds": row.ttl_seconds,
        "created_at_ms": row.created_ms,
        "expires_at_ms": row.expires_ms,
        "stored_bytes": stored_bytes,
    })
}

/// The key's sandbox without its files, with their stored size; or 404.
async fn load_meta(app: &App, key_id: &str, id: &str) -> Result<(SandboxRow, i64), ApiError> {
    match app
        .store
        .sandbox_meta(id)
        .await
        .map_err(ApiError::internal)?
    {
        Some((row, size)) if row.key_id == key_id => Ok((row, size)),
        _ => Err(not_found(id)),
    }
}

/// The key's sandbox, or 404 (another key's sandbox is as invisible as a missing one).
async fn load(app: &App, key_id: &str, id: &str) -> Result<SandboxRow, ApiError> {
    match app.store.sandbox(id).await.map_err(ApiError::internal)? {
        Some(row) if row.key_id == key_id => Ok(row),
        _ => Err(not_found(id)),
    }
}

fn lock_of(app: &App, id: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = app.sandbox_locks.lock().unwrap_or_else(|p| p.into_inner());
    // Forget locks nobody holds or waits for, so the map does not grow forever.
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    Arc::clone(locks.entry(id.to_string()).or_default())
}

pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let bytes = read_body(&app, &headers, body).await?;
    let req: CreateSandbox = if bytes.iter().all(u8::is_ascii_whitespace) {
        parse_json(b"{}")?
    } else {
        parse_json(&bytes)?
    };
    let profile = req
        .profile
        .unwrap_or_else(|| app.cfg.default_profile.clone());
    if !app.profiles.contains_key(&profile) {
        return Err(bad(execution::unknown(
            "profile",
            &profile,
            app.profiles.keys(),
        )));
    }
    if let Some(l) = &req.language {
        if !app.languages.contains_key(l) {
            return Err(bad(execution::unknown("language", l, app.languages.keys())));
        }
    }
    let s = &app.cfg.sandboxes;
    let ttl = match req.ttl_seconds {
        None => s.default_ttl_seconds,
        Some(0) => return Err(bad(invalid("ttl_seconds", "must be above 0"))),
        Some(t) if t > s.max_ttl_seconds => {
            return Err(bad(invalid(
                "ttl_seconds",
                format!(
                    "{t} is above this server's maximum of {}",
                    s.max_ttl_seconds
                ),
            )))
        }
        Some(t) => t,
    };
    let env = execution::env_of(req.env, "env").map_err(bad)?;
    let have = app
        .store
        .count_sandboxes(&key.id)
        .await
        .map_err(ApiError::internal)?;
    if have as u64 >= s.max_per_key {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sandboxes",
            format!(
                "this key has {have} sandboxes; at most {} (delete one, or let it expire)",
                s.max_per_key
            ),
        ));
    }
    let now = now_ms();
    let row = SandboxRow {
        id: format!("sbx_{}", ironcage_audit::run_events::new_run_id()),
        key_id: key.id.clone(),
        profile,
        language: req.language,
        env: serde_json::to_string(&env.into_iter().collect::<BTreeMap<_, _>>())
            .unwrap_or_else(|_| "{}".into()),
        ttl_seconds: ttl as i64,
        created_ms: now,
        expires_ms: now + ttl as i64 * 1000,
        version: 0,
        workspace: encode_workspace(Vec::new()),
    };
    app.store
        .insert_sandbox(&row)
        .await
        .map_err(ApiError::internal)?;
    let size = row.workspace.len() as i64;
    Ok((StatusCode::CREATED, Json(view(&row, size))).into_response())
}

pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let (row, size) = load_meta(&app, &key.id, &id).await?;
    Ok(Json(view(&row, size)).into_response())
}

pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    load_meta(&app, &key.id, &id).await?;
    app.store
        .delete_sandbox(&id)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn command(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let key_slot = key_slot(&app, &key)?;
    let bytes = read_body(&app, &headers, body).await?;
    let req: Command = parse_json(&bytes)?;
    // Held until the command's files are saved, by the task that saves them (a client
    // that goes away cancels neither).
    let held = lock_of(&app, &id).lock_owned().await;
    let row = load(&app, &key.id, &id).await?;
    let mut files = workspace_of(&row)?;

    let (argv, language) = match (req.cmd, req.code) {
        (Some(cmd), None) if !cmd.is_empty() => {
            let mut argv = vec![cmd];
            argv.extend(req.args);
            (argv, "command".to_string())
        }
        (None, Some(code)) => {
            let Some(lang) = row.language.as_ref().and_then(|l| app.languages.get(l)) else {
                return Err(bad(invalid(
                    "code",
                    "this sandbox was created without a language: give `cmd` instead",
                )));
            };
            files.retain(|f| f.path != lang.file);
            files.push(JobFile {
                path: lang.file.clone(),
                content: code.into_bytes(),
                ..JobFile::default()
            });
            let argv = lang.argv(req.args);
            (argv, row.language.clone().unwrap_or_default())
        }
        _ => {
            return Err(bad(invalid(
                "cmd",
                "give exactly one of `cmd` (a program) and `code`",
            )))
        }
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(bad(invalid("args", "contains NUL")));
    }
    let (timeout_ms, memory, cpu) =
        execution::limits(&app.cfg, req.timeout_ms, req.memory_limit, req.cpu_seconds)
            .map_err(bad)?;
    let mut env: Vec<(String, String)> = serde_json::from_str::<BTreeMap<String, String>>(&row.env)
        .unwrap_or_default()
        .into_iter()
        .collect();
    for (k, v) in execution::env_of(req.env, "env").map_err(bad)? {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    let planned = Planned {
        job: Job {
            argv,
            env,
            stdin: req.stdin.unwrap_or_default().into_bytes(),
            files,
            timeout_ms: Some(timeout_ms),
            memory_limit_bytes: Some(memory),
            cpu_seconds: Some(cpu),
            max_file_size: Some(app.cfg.limits.max_file_size),
            capture: true,
            capture_limit: Some(app.cfg.sandboxes.max_workspace_bytes),
        },
        profile: row.profile.clone(),
        language,
        timeout_ms,
    };

    app.check_audit()?;
    let permit = acquire_slot(&app).await?;
    // The sandbox does not expire while its command runs.
    let ttl_ms = row.ttl_seconds * 1000;
    app.store
        .touch_sandbox(&id, now_ms() + ttl_ms + timeout_ms as i64 + 60_000)
        .await
        .map_err(ApiError::internal)?;
    let (exec_id, created) = record_running(&app, &key.id, &planned).await?;
    let task = {
        let app = Arc::clone(&app);
        let key_id = key.id.clone();
        tokio::spawn(async move {
            let (result, capture) =
                run_execution(&app, &exec_id, &key_id, planned, created, None).await;
            drop((permit, key_slot));
            let (saved, note) = match (&result.status[..], capture) {
                ("failed", None) => (
                    false,
                    Some(format!(
                        "files not saved: the command could not run ({}); the sandbox's files are as they were",
                        result.error.as_deref().unwrap_or("sandbox failure")
                    )),
                ),
                (_, capture) => save_capture(&app, &row, capture).await,
            };
            drop(held);
            let mut doc = serde_json::to_value(&result).unwrap_or_default();
            doc["sandbox_id"] = json!(row.id);
            doc["files_saved"] = json!(saved);
            if let Some(n) = note {
                doc["files_note"] = json!(n);
            }
            doc
        })
    };
    let doc = task.await.map_err(ApiError::internal)?;
    Ok(Json(doc).into_response())
}

/// Stores the files a command left, if it left a complete set that fits; (saved, why not).
async fn save_capture(
    app: &App,
    row: &SandboxRow,
    capture: Option<Result<execution::Capture, String>>,
) -> (bool, Option<String>) {
    let expires = now_ms() + row.ttl_seconds * 1000;
    let outcome = match capture {
        Some(Ok(c)) => {
            let bytes = encode_workspace(c.files);
            match app
                .store
                .save_workspace(&row.id, row.version, &bytes, expires)
                .await
            {
                Ok(true) if c.skipped.is_empty() => (true, None),
                Ok(true) => (
                    true,
                    Some(format!(
                        "saved without {} entries that could not be read: {}",
                        c.skipped.len(),
                        c.skipped.join(", ")
                    )),
                ),
                Ok(false) => (false, Some("files not saved: the sandbox changed meanwhile (another instance) or was deleted".to_string())),
                Err(e) => {
                    tracing::error!("saving sandbox {}: {e}", row.id);
                    (false, Some("files not saved: the store failed (see the server log)".to_string()))
                }
            }
        }
        Some(Err(e)) => (false, Some(format!("files not saved: {e}"))),
        None => (
            false,
            Some("files not saved: the command did not end by itself (timeout or kill); the sandbox's files are as they were before it".into()),
        ),
    };
    if !outcome.0 {
        let _ = app.store.touch_sandbox(&row.id, expires).await;
    }
    outcome
}

pub async fn list_files(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let row = load(&app, &key.id, &id).await?;
    let files = workspace_of(&row)?;
    Ok(Json(json!({"files": listing(&files, "")})).into_response())
}

fn listing(files: &[JobFile], under: &str) -> Vec<serde_json::Value> {
    files
        .iter()
        .filter(|f| under.is_empty() || f.path.starts_with(&format!("{under}/")))
        .map(|f| match f.kind {
            FileKind::File => json!({"path": f.path, "kind": "file", "size": f.content.len(), "executable": f.executable}),
            FileKind::Dir => json!({"path": f.path, "kind": "dir"}),
            FileKind::Symlink => json!({"path": f.path, "kind": "symlink", "target": String::from_utf8_lossy(&f.content)}),
        })
        .collect()
}

fn check_path(path: &str) -> Result<String, ApiError> {
    check_relative_path(path).map_err(|e| bad(invalid("path", e.to_string())))?;
    // One spelling per file: "./a//b" is "a/b".
    Ok(std::path::Path::new(path)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/"))
}

pub async fn get_file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let path = check_path(&path)?;
    let row = load(&app, &key.id, &id).await?;
    let files = workspace_of(&row)?;
    match files.iter().find(|f| f.path == path) {
        Some(f) if f.kind == FileKind::File => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            f.content.clone(),
        )
            .into_response()),
        Some(f) if f.kind == FileKind::Dir => {
            Ok(Json(json!({"files": listing(&files, &path)})).into_response())
        }
        Some(f) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "symlink",
            format!(
                "{path} is a symbolic link to {:?}; links are not followed",
                String::from_utf8_lossy(&f.content)
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no file {path:?} in sandbox {id}"),
        )),
    }
}

#[derive(Deserialize)]
pub struct PutQuery {
    #[serde(default)]
    executable: Option<bool>,
}

pub async fn put_file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let path = check_path(&path)?;
    let content = read_body(&app, &headers, body).await?;
    let lock = lock_of(&app, &id);
    let _held = lock.lock().await;
    let row = load(&app, &key.id, &id).await?;
    let mut files = workspace_of(&row)?;
    // Never through a link or a file: every parent must be a directory or absent.
    let parts: Vec<&str> = path.split('/').collect();
    for i in 1..parts.len() {
        let parent = parts[..i].join("/");
        if let Some(f) = files.iter().find(|f| f.path == parent) {
            if f.kind != FileKind::Dir {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_a_directory",
                    format!("{parent} is a {:?}, not a directory", f.kind),
                ));
            }
        }
    }
    let below = format!("{path}/");
    if files
        .iter()
        .any(|f| (f.path == path && f.kind == FileKind::Dir) || f.path.starts_with(&below))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_a_directory",
            format!("{path} is a directory"),
        ));
    }
    files.retain(|f| f.path != path);
    let size = content.len();
    files.push(JobFile {
        path: path.clone(),
        content: content.to_vec(),
        executable: q.executable.unwrap_or(false),
        kind: FileKind::File,
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    // The list of names is bounded too (it travels as one header).
    let names: usize = files.iter().map(|f| f.path.len() + 64).sum();
    if files.len() > MAX_ENTRIES || names > MAX_NAMES_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "workspace_full",
            format!(
                "the sandbox would hold {} entries ({names} bytes of names); at most {MAX_ENTRIES} entries and {MAX_NAMES_BYTES} bytes of names",
                files.len()
            ),
        ));
    }
    let total = workspace_bytes(&files);
    let max = app.cfg.sandboxes.max_workspace_bytes;
    if total > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "workspace_full",
            format!("the sandbox's files would total {total} bytes, more than {max}"),
        ));
    }
    let expires = now_ms() + row.ttl_seconds * 1000;
    if !app
        .store
        .save_workspace(&id, row.version, &encode_workspace(files), expires)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the sandbox changed meanwhile; retry",
        ));
    }
    Ok(Json(json!({"path": path, "size": size})).into_response())
}
