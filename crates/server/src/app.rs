//! The HTTP API: routes, authentication, errors as JSON, streaming, metrics per request.

use crate::config::{Config, Language};
use crate::execution::{self, Chunk, ExecutionRequest, ExecutionResult, Planned};
use crate::keys::{self, Limiter};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::store::{now_ms, ApiKey, ExecutionRow, Store};
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ironcage_audit::AuditLog;
use ironcage_policy::Policy;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct App {
    pub cfg: Config,
    pub languages: BTreeMap<String, Language>,
    /// Profiles requests may name, loaded once at start.
    pub profiles: BTreeMap<String, Policy>,
    pub warm_profiles: Vec<String>,
    pub store: Store,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub slots: Arc<Semaphore>,
    pub node: String,
    pub audit: Arc<Mutex<AuditLog>>,
    /// One command or file change at a time per long-lived sandbox (on this instance; the
    /// store's version check covers several instances).
    pub sandbox_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set when an execution could not be recorded in the audit log (tampering, or the
    /// store failing): from then on nothing runs until an operator has looked.
    pub audit_broken: Mutex<Option<String>>,
    /// The LLM gateway under /llm/ (None when `llm.enabled` is false).
    pub gateway: Option<Arc<ironcage_gateway::Gateway>>,
    pub llm_auth: Option<Arc<crate::llm::ServiceAuth>>,
}

impl App {
    /// Refuses new work while the audit log cannot record it.
    pub(crate) fn check_audit(&self) -> Result<(), ApiError> {
        match &*self.audit_broken.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                format!("executions are refused: the audit log cannot record them ({why})"),
            )),
        }
    }
}

/// An error response: `{"error": {"code", "message"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn retry(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// A fault of ours: logged in full, answered without internals.
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("{e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (the server log has the details)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/languages", get(languages))
        .route("/v1/profiles", get(profiles))
        .route(
            "/v1/executions",
            get(list_executions).post(create_execution),
        )
        .route("/v1/executions/{id}", get(get_execution))
        .route(
            "/v1/sandboxes",
            axum::routing::post(crate::sandboxes::create),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(crate::sandboxes::show).delete(crate::sandboxes::delete),
        )
        .route(
            "/v1/sandboxes/{id}/commands",
            axum::routing::post(crate::sandboxes::command),
        )
        .route(
            "/v1/sandboxes/{id}/files",
            get(crate::sandboxes::list_files),
        )
        .route(
            "/v1/sandboxes/{id}/files/{*path}",
            get(crate::sandboxes::get_file).put(crate::sandboxes::put_file),
        )
        .route("/llm/{*rest}", axum::routing::any(crate::llm::handle))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            measure,
        ))
        .with_state(app)
}

async fn measure(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // The gateway answers in each provider's own error shape, which must reach the SDKs
    // unchanged.
    let llm = req.uri().path().starts_with("/llm/");
    let resp = next.run(req).await;
    let resp = if llm { resp } else { json_errors(resp).await };
    app.metrics.request(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Every error as JSON: responses the framework makes itself (a bad query string or path
/// parameter, a method the route does not have) come as plain text or empty; they get the
/// API's `{"error": {...}}` shape here, with their text as the message.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let retry = resp.headers().get(header::RETRY_AFTER).cloned();
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut r = (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if let Some(v) = retry {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let store = app.store.ping().await;
    let warm = app.pool.warmed(&app.warm_profiles);
    let audit = app.check_audit().is_ok();
    let body = json!({
        "ready": store.is_ok() && warm && audit,
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
        "pool_warm": warm,
        "audit": audit,
    });
    let status = if store.is_ok() && warm && audit {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = app.metrics.render();
        if let Some(gw) = app.gateway.as_ref() {
            ironcage_gateway::metrics::render(gw, &mut text);
        }
        text
    })
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

/// The request body, up to the configured limit (413 beyond it).
pub(crate) async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = app.cfg.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than this server's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A client that stalls mid-body is cut off rather than holding memory.
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// Time for a request's body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON request body, with the parser's message (line, column, field) on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body: {e}"),
        )
    })
}

/// The key's share of running executions (429 with Retry-After when it has them all).
pub(crate) fn key_slot(app: &Arc<App>, key: &ApiKey) -> Result<keys::RunningGuard, ApiError> {
    let max_for_key = key
        .max_concurrent
        .map_or(app.cfg.keys.max_concurrent, |v| v as u32);
    app.limiter.start(&key.id, max_for_key).ok_or_else(|| {
        app.metrics.rejected("key_concurrency");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_running",
            format!("this key already has {max_for_key} executions running"),
        )
        .retry(1)
    })
}

/// One of the instance's execution slots, waiting up to the queue timeout (then 503 with
/// Retry-After).
pub(crate) async fn acquire_slot(
    app: &Arc<App>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let wait = Duration::from_millis(app.cfg.pool.queue_timeout_ms);
    match tokio::time::timeout(wait, Arc::clone(&app.slots).acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => {
            app.metrics.rejected("capacity");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "at_capacity",
                format!(
                    "all {} execution slots stayed busy for {} ms; retry later",
                    app.cfg.pool.max_running, app.cfg.pool.queue_timeout_ms
                ),
            )
            .retry(1))
        }
    }
}

/// The key named by `Authorization: Bearer KEY`, if it is live.
pub(crate) async fn authenticate(app: &App, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing `Authorization: Bearer KEY` (create one with `ironcage key create`)",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer KEY`"))?;
    let key = app
        .store
        .key_by_hash(&keys::hash(secret))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| unauthorized("unknown or revoked API key"))?;
    let per_minute = key
        .rate_limit_per_minute
        .map_or(app.cfg.keys.rate_limit_per_minute, |v| v as u32);
    if let Err(wait) = app.limiter.take(&key.id, per_minute) {
        app.metrics.rejected("rate_limit");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("this key is limited to {per_minute} requests per minute"),
        )
        .retry(wait));
    }
    Ok(key)
}

async fn languages(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&app, &headers).await?;
    let list: Vec<_> = app
        .languages
        .iter()
        .map(|(name, l)| json!({"name": name, "command": l.command, "file": l.file}))
        .collect();
    Ok(Json(json!({"languages": list})).into_response())
}

async fn profiles(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&app, &headers).await?;
    let list: Vec<_> = app
        .profiles
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "default": p.name == app.cfg.default_profile,
                "network_isolated": p.network.isolated,
            })
        })
        .collect();
    Ok(Json(json!({"profiles": list})).into_response())
}

#[derive(Deserialize)]
struct CreateQuery {
    #[serde(default)]
    stream: Option<String>,
}

async fn create_execution(
    State(app): State<Arc<App>>,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    // The key's concurrency first: a key cannot have more bodies in memory than it may
    // run executions.
    let key_slot = key_slot(&app, &key)?;
    let bytes = read_body(&app, &headers, body).await?;
    let req: ExecutionRequest = parse_json(&bytes)?;
    drop(bytes);
    let names: Vec<String> = app.profiles.keys().cloned().collect();
    let planned = execution::plan(req, &app.cfg, &app.languages, &names)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let stream = matches!(q.stream.as_deref(), Some("true" | "1" | "yes"));

    // Capacity first, so a refusal is a clean status code and nothing was started.
    app.check_audit()?;
    let permit = acquire_slot(&app).await?;

    let (id, created) = record_running(&app, &key.id, &planned).await?;

    let (tx, rx) = if stream {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    // The execution runs in a task of its own: a client that disconnects does not cancel
    // it, and it is always recorded.
    let task = {
        let app = Arc::clone(&app);
        let id = id.clone();
        let key_id = key.id.clone();
        tokio::spawn(async move {
            let (r, _) = run_execution(&app, &id, &key_id, planned, created, tx).await;
            drop((permit, key_slot));
            r
        })
    };
    match rx {
        None => {
            let result = task.await.map_err(ApiError::internal)?;
            Ok(Json(result).into_response())
        }
        Some(rx) => Ok(stream_response(id, rx, task).into_response()),
    }
}

/// Records a new execution as running on this node (so a crash leaves it on record, to be
/// marked failed at the next start); returns its id and creation time.
pub(crate) async fn record_running(
    app: &App,
    key_id: &str,
    planned: &Planned,
) -> Result<(String, i64), ApiError> {
    let id = format!("exe_{}", ironcage_audit::run_events::new_run_id());
    let created = now_ms();
    app.store
        .insert_execution(
            &ExecutionRow {
                id: id.clone(),
                key_id: key_id.to_string(),
                status: "running".into(),
                language: planned.language.clone(),
                profile: planned.profile.clone(),
                created_ms: created,
                finished_ms: None,
                result: None,
            },
            &app.node,
        )
        .await
        .map_err(ApiError::internal)?;
    Ok((id, created))
}

pub(crate) async fn run_execution(
    app: &Arc<App>,
    id: &str,
    key_id: &str,
    planned: Planned,
    created: i64,
    sink: Option<tokio::sync::mpsc::UnboundedSender<Chunk>>,
) -> (ExecutionResult, Option<Result<execution::Capture, String>>) {
    app.metrics.running(1);
    let started = Instant::now();
    let limit = app.cfg.limits.output_limit_bytes;
    let mut ran = match app.pool.take(&planned.profile).await {
        Ok(mut warm) => {
            // The sandbox's gateway listener, served for this execution with a key of its
            // own (charged to the API key and to the execution's budget).
            let served = match (warm.llm_listener.take(), &app.gateway, &app.llm_auth) {
                (Some(fd), Some(gw), Some(auth)) => {
                    crate::llm::serve_gateway(Arc::clone(gw), Arc::clone(auth), fd, key_id, id)
                        .await
                }
                _ => None,
            };
            let mut job = planned.job.clone();
            if let Some(s) = &served {
                for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
                    job.env.retain(|(k, _)| k != name);
                    job.env.push((name.to_string(), s.key.clone()));
                }
            }
            let ran = execution::run(
                warm,
                &job,
                Duration::from_millis(planned.timeout_ms),
                limit,
                sink,
            )
            .await;
            if let Some(s) = served {
                s.stop(id).await;
            }
            ran
        }
        Err(e) => execution::Ran::failed(e.to_string()),
    };
    let report = ran.report.as_ref().ok().cloned();
    let capture = ran.capture.take();
    let result = execution::result_of(id, &planned, created, ran, limit);
    let outcome = if result.status == "failed" {
        "failed"
    } else if result.timed_out {
        "timeout"
    } else if result.oom_killed {
        "oom"
    } else if result.exit_code == Some(0) {
        "success"
    } else {
        "nonzero_exit"
    };
    let mut kinds: Vec<&str> = result
        .violations
        .iter()
        .map(|v| match v {
            ironcage_sandbox::report::Violation::Syscall { .. } => "syscall",
            ironcage_sandbox::report::Violation::Path { .. } => "filesystem",
            ironcage_sandbox::report::Violation::Network { .. } => "network",
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    app.metrics
        .execution(outcome, started.elapsed().as_secs_f64(), &kinds);
    app.metrics.running(-1);

    // The store and the audit log are written at once (different disks' worth of waiting).
    let t_rec = Instant::now();
    let doc = serde_json::to_string(&result).unwrap_or_default();
    let (stored, ()) = tokio::join!(
        app.store.finish_execution(id, &result.status, &doc),
        record_audit(app, id, key_id, &planned, report, &result)
    );
    if let Err(e) = stored {
        tracing::error!("recording execution {id}: {e}");
    }
    tracing::debug!(
        id,
        "ran in {:?}, recorded in {:?}",
        t_rec.duration_since(started),
        t_rec.elapsed()
    );
    // Replace the sandbox we used, now that the execution is recorded.
    app.pool.refill(&planned.profile);
    (result, capture)
}

/// The execution in the tamper-evident audit log: its start and end in one batch.
async fn record_audit(
    app: &Arc<App>,
    id: &str,
    key_id: &str,
    planned: &Planned,
    report: Option<ironcage_sandbox::RunReport>,
    result: &ExecutionResult,
) {
    let Some(policy) = app.profiles.get(&planned.profile).cloned() else {
        return;
    };
    let run_id = report
        .as_ref()
        .map_or_else(|| id.to_string(), |r| r.run_id.clone());
    let mut start = ironcage_audit::run_events::run_start(&ironcage_audit::run_events::StartInfo {
        run_id: &run_id,
        policy: &policy,
        argv: &planned.job.argv,
        host_uid: ironcage_sandbox::sys::getuid(),
        sandbox_uid: report.as_ref().map_or(0, |r| r.sandbox_uid),
        rootless: ironcage_sandbox::sys::geteuid() != 0,
        best_effort: false,
        unenforced: Vec::new(),
        floor_lifted: &[],
        binds: Vec::new(),
        cwd: crate::host::WORK_DIR.into(),
        env_names: planned.job.env.iter().map(|(k, _)| k.clone()).collect(),
    });
    start.fields.insert("execution_id".into(), json!(id));
    start.fields.insert("api_key".into(), json!(key_id));
    start
        .fields
        .insert("language".into(), json!(planned.language));
    let mut events = vec![start];
    match &report {
        Some(r) => events.extend(ironcage_audit::run_events::run_end(
            r,
            &policy.audit.detail_level,
        )),
        None => events.push(ironcage_audit::run_events::run_failed(
            &run_id,
            result.error.as_deref().unwrap_or("failed"),
            ironcage_sandbox::exit_code::SETUP_FAILED,
        )),
    }
    let audit = Arc::clone(&app.audit);
    let appended = tokio::task::spawn_blocking(move || {
        let mut log = audit.lock().unwrap_or_else(|p| p.into_inner());
        log.append(&events).map(|_| ())
    })
    .await;
    match appended {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_tampering() => {
            tracing::error!("audit log: {e}; refusing executions until it is fixed");
            *app.audit_broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        // A store failure (connection lost, disk full): this execution is not on record;
        // the next one tries again.
        Ok(Err(e)) => {
            tracing::error!("audit log: execution {id} not recorded: {e}");
            app.metrics.rejected("audit_failure");
        }
        Err(e) => tracing::error!("audit log: {e}"),
    }
}

/// Output chunks as they come (`stdout`/`stderr` events), then the `result` event.
fn stream_response(
    id: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Chunk>,
    task: tokio::task::JoinHandle<ExecutionResult>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let s = async_stream::stream! {
        yield Ok(SseEvent::default().event("started").data(json!({"id": id}).to_string()));
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        while let Some(chunk) = rx.recv().await {
            let (i, name, bytes) = match chunk {
                Chunk::Stdout(b) => (0, "stdout", b),
                Chunk::Stderr(b) => (1, "stderr", b),
            };
            pending[i].extend_from_slice(&bytes);
            let text = take_utf8(&mut pending[i]);
            if !text.is_empty() {
                yield Ok(SseEvent::default().event(name).data(json!({"data": text}).to_string()));
            }
        }
        for (i, name) in [(0, "stdout"), (1, "stderr")] {
            if !pending[i].is_empty() {
                let text = String::from_utf8_lossy(&pending[i]).into_owned();
                yield Ok(SseEvent::default().event(name).data(json!({"data": text}).to_string()));
            }
        }
        let result = match task.await {
            Ok(r) => serde_json::to_value(&r).unwrap_or_default(),
            Err(e) => json!({"id": id, "status": "failed", "error": e.to_string()}),
        };
        yield Ok(SseEvent::default().event("result").data(result.to_string()));
    };
    Sse::new(s).keep_alive(KeepAlive::default())
}

/// Takes the longest prefix of `buf` that is complete UTF-8 (invalid bytes replaced),
/// leaving an incomplete character at the end for the next chunk.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    // Only the last (up to) 3 bytes can be an unfinished character.
    let tail_start = buf.len().saturating_sub(3);
    let cut = (tail_start..buf.len())
        .find(|&i| {
            let need = match buf[i] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return false,
            };
            buf.len() - i < need
                && std::str::from_utf8(&buf[i..]).is_err_and(|e| e.error_len().is_none())
        })
        .unwrap_or(buf.len());
    let rest = buf.split_off(cut);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    status: Option<String>,
}

/// The stored result, completed with the row's own fields (an execution interrupted by a
/// stopped server has only `status` and `error` in its result).
fn view(row: &ExecutionRow) -> serde_json::Value {
    let mut v = match row
        .result
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(v @ serde_json::Value::Object(_))) => v,
        _ => json!({}),
    };
    for (k, val) in [
        ("id", json!(row.id)),
        ("status", json!(row.status)),
        ("language", json!(row.language)),
        ("profile", json!(row.profile)),
        ("created_at_ms", json!(row.created_ms)),
    ] {
        if v.get(k).is_none() {
            v[k] = val;
        }
    }
    v
}

async fn get_execution(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    match app.store.execution(&id).await.map_err(ApiError::internal)? {
        // Another key's execution is as invisible as one that does not exist.
        Some(row) if row.key_id == key.id => Ok(Json(view(&row)).into_response()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no execution {id:?}"),
        )),
    }
}

async fn list_executions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let key = authenticate(&app, &headers).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit: must be between 1 and 1000",
        ));
    }
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "running" | "completed" | "failed") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("status: {s:?}; use running, completed or failed"),
            ));
        }
    }
    let rows = app
        .store
        .executions_of_key(&key.id, limit, q.status.as_deref())
        .await
        .map_err(ApiError::internal)?;
    // Summaries: the output (up to the output limit per stream, each) is at
    // /v1/executions/{id}, so a list stays small whatever the executions printed.
    let list: Vec<_> = rows
        .iter()
        .map(|r| {
            let mut v = view(r);
            if let Some(o) = v.as_object_mut() {
                o.remove("stdout");
                o.remove("stderr");
            }
            v
        })
        .collect();
    Ok(Json(json!({"executions": list})).into_response())
}

#[cfg(test)]
mod tests {
    use super::take_utf8;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let bytes = "héllo €".as_bytes();
        let mut buf = bytes[..bytes.len() - 1].to_vec();
        let first = take_utf8(&mut buf);
        assert_eq!(first, "héllo ");
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(take_utf8(&mut buf), "€");
        let mut bad = vec![b'a', 0xff, b'b'];
        assert_eq!(take_utf8(&mut bad), "a\u{fffd}b");
        // An invalid byte and an unfinished character in one chunk.
        let euro = "€".as_bytes();
        let mut both = vec![0xff, b'x', euro[0], euro[1]];
        assert_eq!(take_utf8(&mut both), "\u{fffd}x");
        both.push(euro[2]);
        assert_eq!(take_utf8(&mut both), "€");
    }
}
