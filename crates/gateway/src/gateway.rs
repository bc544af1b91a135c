//! One request through the gateway: route -> authenticate -> read -> scan -> price and
//! reserve -> breaker -> forward with the real key -> meter -> settle -> record.

use crate::auth::Authorize;
use crate::body::{full, GatewayBody};
use crate::event::{Decision, Event, RequestRecord, Sink};
use crate::meter::{self, StreamMeter};
use crate::provider::{self, Endpoint, ErrorKind, Provider, Route};
use crate::sse;
use crate::upstream::{self, HttpClient};
use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, HeaderMap, Request, Response, StatusCode};
use ironcage_guard::breaker::{BreakerConfig, CircuitBreaker, Transition};
use ironcage_guard::budget::{Ledger, Reservation};
use ironcage_guard::money::Usd;
use ironcage_guard::pii::{self, Scanner};
use ironcage_guard::prices::{Price, PriceTable, Usage};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Largest request body accepted (prompts with images inline can be large).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Largest non-streaming response read from an upstream.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// What a request without an output cap reserves (and, for a whole answer, is capped at)
/// at most: a model's full output allowance (128k tokens for some) would not fit common
/// budgets. A stream grows its reservation past it while the budget allows.
pub const UNCAPPED_OUTPUT_TOKENS: u64 = 16_384;

/// Deadline for receiving a request body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// Memory for request bodies being read and parsed, all requests together, in KiB. A parsed
/// JSON document takes up to ~16 times its text, which is what a body is charged.
const BODY_MEMORY_KIB: usize = 1 << 20;
const JSON_EXPANSION: usize = 16;

/// Output cap assumed for a request that sets none, when the price table has none either.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// JSON keys whose values are protocol, not content: never scanned or redacted.
const PROTOCOL_KEYS: [&str; 12] = [
    "model",
    "role",
    "type",
    "id",
    "tool_call_id",
    "call_id",
    "previous_response_id",
    "encoding_format",
    "stop_reason",
    "finish_reason",
    "object",
    "cache_control",
];

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream URL for {provider} `{url}`: {why}")]
    Upstream {
        provider: &'static str,
        url: String,
        why: String,
    },
    #[error("circuit breaker settings: {0}")]
    Breaker(String),
}

/// How the gateway is set up.
pub struct Config {
    /// Base URL per provider (OpenAI's with `/v1`, Anthropic's without, as in the SDKs).
    pub upstreams: HashMap<Provider, String>,
    /// The real provider keys, injected upstream. A provider without one gets requests
    /// with no key (fine for keyless test upstreams; real providers answer 401).
    pub credentials: HashMap<Provider, Zeroizing<String>>,
    pub pii: pii::Rules,
    pub pii_responses: bool,
    pub allow_unpriced_models: bool,
    pub breaker: BreakerConfig,
    /// Deadline for a non-streaming answer, and for each gap between stream chunks.
    pub upstream_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstreams: HashMap::new(),
            credentials: HashMap::new(),
            pii: pii::Rules::default(),
            pii_responses: false,
            allow_unpriced_models: false,
            breaker: BreakerConfig::default(),
            upstream_timeout: Duration::from_secs(600),
        }
    }
}

/// Counters for reports and /metrics.
#[derive(Default)]
pub struct Stats {
    pub decisions: [AtomicU64; Decision::ALL.len()],
    pub cost_picos: AtomicU64,
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
}

impl Stats {
    fn counter(&self, d: Decision) -> &AtomicU64 {
        // ALL lists every variant, so the position always exists.
        let i = Decision::ALL.iter().position(|x| *x == d).unwrap_or(0);
        &self.decisions[i]
    }

    pub fn count(&self, d: Decision) -> u64 {
        self.counter(d).load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.decisions
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

pub struct Gateway {
    upstreams: HashMap<Provider, hyper::Uri>,
    credentials: HashMap<Provider, Zeroizing<String>>,
    pii: pii::Rules,
    /// The rules responses are redacted with (`pii_responses`), made once.
    response_pii: Option<pii::Rules>,
    allow_unpriced: bool,
    timeout: Duration,
    prices: Arc<PriceTable>,
    ledger: Arc<Ledger>,
    auth: Arc<dyn Authorize>,
    breakers: HashMap<Provider, CircuitBreaker>,
    sink: Sink,
    client: HttpClient,
    scanner: &'static Scanner,
    in_flight: AtomicU64,
    body_memory: Arc<tokio::sync::Semaphore>,
    /// Set when the host of the gateway ends: requests still waiting on the provider stop
    /// waiting, are billed at what they may have cost, and are recorded.
    shutdown: tokio::sync::watch::Sender<bool>,
    pub stats: Stats,
}

impl Gateway {
    pub fn new(
        cfg: Config,
        prices: Arc<PriceTable>,
        ledger: Arc<Ledger>,
        auth: Arc<dyn Authorize>,
        sink: Sink,
    ) -> Result<Gateway, GatewayError> {
        let mut upstreams = HashMap::new();
        let mut breakers = HashMap::new();
        for p in Provider::ALL {
            let url = cfg
                .upstreams
                .get(&p)
                .cloned()
                .unwrap_or_else(|| p.default_upstream().to_string());
            let bad = |why: &str| GatewayError::Upstream {
                provider: p.name(),
                url: url.clone(),
                why: why.to_string(),
            };
            let uri: hyper::Uri = url
                .trim_end_matches('/')
                .parse()
                .map_err(|_| bad("not a URL"))?;
            match uri.scheme_str() {
                Some("http" | "https") => {}
                _ => return Err(bad("must start with http:// or https://")),
            }
            if uri.authority().is_none() || uri.query().is_some() {
                return Err(bad("needs a host and no query"));
            }
            upstreams.insert(p, uri);
            breakers.insert(
                p,
                CircuitBreaker::new(cfg.breaker)
                    .map_err(|e| GatewayError::Breaker(e.to_string()))?,
            );
        }
        Ok(Gateway {
            upstreams,
            credentials: cfg.credentials,
            response_pii: cfg.pii_responses.then(|| response_rules(&cfg.pii)),
            pii: cfg.pii,
            allow_unpriced: cfg.allow_unpriced_models,
            timeout: cfg.upstream_timeout,
            prices,
            ledger,
            auth,
            breakers,
            sink,
            client: upstream::client(),
            scanner: Scanner::global(),
            in_flight: AtomicU64::new(0),
            body_memory: Arc::new(tokio::sync::Semaphore::new(BODY_MEMORY_KIB)),
            shutdown: tokio::sync::watch::channel(false).0,
            stats: Stats::default(),
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn breaker(&self, p: Provider) -> Option<&CircuitBreaker> {
        self.breakers.get(&p)
    }

    /// Room for a body of `bytes` (and its parsed form), waiting up to the body deadline.
    async fn body_memory(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = (bytes.max(1024) * JSON_EXPANSION)
            .div_ceil(1024)
            .min(BODY_MEMORY_KIB) as u32;
        tokio::time::timeout(
            BODY_DEADLINE,
            Arc::clone(&self.body_memory).acquire_many_owned(kib),
        )
        .await
        .ok()?
        .ok()
    }

    /// A stream event with personal data redacted (`pii_responses`), rebuilt as
    /// `event:`/`data:` lines; None when it holds none. A value split across two events
    /// is not seen (each event is scanned on its own).
    fn redact_event(
        &self,
        rules: &pii::Rules,
        name: Option<&str>,
        payload: &str,
        rec: &mut RequestRecord,
    ) -> Option<Bytes> {
        let mut v: Value = serde_json::from_str(payload).ok()?;
        let c = self.scanner.apply_json(&mut v, rules, &PROTOCOL_KEYS);
        if c.redacted.is_empty() {
            return None;
        }
        for (k, n) in &c.redacted {
            *rec.pii_redacted.entry(format!("response.{k}")).or_insert(0) += n;
        }
        let data = serde_json::to_string(&v).ok()?;
        Some(Bytes::from(match name {
            Some(n) => format!("event: {n}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        }))
    }

    /// Ends the wait of every request still waiting on a provider (see `shutdown`).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Runs `f` unless the gateway is shut down first (None).
    async fn unless_shut_down<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        let stop = crate::serve::stopped(self.shutdown.subscribe());
        tokio::select! {
            out = f => Some(out),
            _ = stop => None,
        }
    }

    /// Requests accepted and not yet recorded (streams still relaying or draining).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Every request ends here exactly once.
    fn record(&self, r: RequestRecord) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.stats
            .counter(r.decision)
            .fetch_add(1, Ordering::Relaxed);
        if let Some(u) = &r.usage {
            self.stats.input_tokens.fetch_add(
                u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                Ordering::Relaxed,
            );
            self.stats
                .output_tokens
                .fetch_add(u.output_tokens, Ordering::Relaxed);
        }
        self.stats
            .cost_picos
            .fetch_add(r.cost.picos().max(0) as u64, Ordering::Relaxed);
        (self.sink)(Event::Request(r));
    }

    fn transition(&self, provider: Provider, t: Option<Transition>) {
        if let Some(t) = t {
            (self.sink)(Event::Breaker {
                provider,
                from: t.from.as_str().to_string(),
                to: t.to.as_str().to_string(),
                reason: t.to_string(),
            });
        }
    }

    /// Answers one request. Never fails: every problem is an answer in the provider's
    /// error shape, and every request leaves one record.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // In a task of its own: hyper drops this future when the client hangs up, and a
        // request already sent upstream must still be settled, billed and recorded.
        let gw = Arc::clone(self);
        match tokio::spawn(async move { gw.handle_inner(req).await }).await {
            Ok(r) => r,
            Err(_) => provider::error_response(
                Provider::OpenAi,
                ErrorKind::BadGateway,
                "internal",
                "the gateway failed on this request",
                None,
            ),
        }
    }

    async fn handle_inner<B>(self: Arc<Self>, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let path = req.uri().path().to_string();
        let mut rec = RequestRecord {
            decision: Decision::Invalid,
            provider: provider::provider_of(&path).unwrap_or(Provider::OpenAi),
            endpoint: None,
            model: None,
            caller: None,
            stream: false,
            status: 0,
            upstream_status: None,
            usage: None,
            cost_usd: Usd::ZERO.to_decimal_string(),
            cost: Usd::ZERO,
            reason: None,
            pii_redacted: BTreeMap::new(),
            pii_blocked: Vec::new(),
            client_disconnected: false,
            duration_ms: 0,
            scopes: Vec::new(),
        };
        let route = match provider::route(req.method(), &path) {
            Ok(r) => r,
            Err(p) => {
                let p = p.unwrap_or(Provider::OpenAi);
                let msg = format!(
                    "{} {} is not an endpoint this gateway forwards",
                    req.method(),
                    path
                );
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::NotFound,
                    "unknown_endpoint",
                    &msg,
                    started,
                );
            }
        };
        rec.provider = route.provider;
        rec.endpoint = Some(route.endpoint.clone());
        let p = route.provider;

        // Authenticate before reading the body: an unknown caller costs us nothing more.
        let key = presented_key(req.headers());
        let agent = req
            .headers()
            .get("x-ironcage-agent")
            .and_then(|v| v.to_str().ok())
            .filter(|a| valid_agent(a))
            .map(str::to_string);
        if req.headers().contains_key("x-ironcage-agent") && agent.is_none() {
            return self.refuse(
                rec,
                p,
                ErrorKind::BadRequest,
                "invalid_agent",
                "x-ironcage-agent must be 1-64 characters of [A-Za-z0-9_.-]",
                started,
            );
        }
        let caller = match key {
            Some(k) => self.auth.authorize(&k, agent.as_deref()).await,
            None => None,
        };
        let Some(caller) = caller else {
            rec.decision = Decision::Unauthorized;
            return self.refuse(
                rec,
                p,
                ErrorKind::Unauthorized,
                "invalid_api_key",
                "missing or unknown API key for this gateway (use the key Iron Cage gave you)",
                started,
            );
        };
        rec.caller = Some(caller.label.clone());
        rec.scopes = caller.scopes.clone();

        let (parts, body) = req.into_parts();
        // Only Anthropic's `?beta=true` is passed on; other query strings stay here.
        let query = parts
            .uri
            .query()
            .filter(|q| *q == "beta=true")
            .map(str::to_string);
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(MAX_REQUEST_BYTES)
            .min(MAX_REQUEST_BYTES);
        let mut memory = match self.body_memory(announced).await {
            Some(p) => p,
            None => {
                rec.decision = Decision::Invalid;
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::Unavailable,
                    "busy",
                    "too many large requests at once; retry",
                    started,
                );
            }
        };
        let read = tokio::time::timeout(
            BODY_DEADLINE,
            Limited::new(body, MAX_REQUEST_BYTES).collect(),
        )
        .await;
        let read = match read {
            Ok(r) => r,
            Err(_) => {
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadRequest,
                    "body_timeout",
                    &format!(
                        "the request body did not arrive within {}s",
                        BODY_DEADLINE.as_secs()
                    ),
                    started,
                );
            }
        };
        let bytes = match read {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_big = e.to_string().contains("length limit");
                let (kind, code, msg) = if too_big {
                    (
                        ErrorKind::TooLarge,
                        "request_too_large",
                        format!("request body over {} bytes", MAX_REQUEST_BYTES),
                    )
                } else {
                    (
                        ErrorKind::BadRequest,
                        "body_read_failed",
                        "could not read the request body".to_string(),
                    )
                };
                return self.refuse(rec, p, kind, code, &msg, started);
            }
        };
        // Hold only what this body needs (a chunked body was charged the maximum).
        let need = (bytes.len().max(1024) * JSON_EXPANSION).div_ceil(1024);
        if memory.num_permits() > need {
            drop(memory.split(memory.num_permits() - need));
        }

        if route.endpoint == Endpoint::Models {
            rec.decision = Decision::Forwarded;
            return self
                .forward_plain(
                    rec,
                    &route,
                    &parts.headers,
                    query,
                    Bytes::new(),
                    None,
                    started,
                )
                .await;
        }

        let mut json: Value = match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadRequest,
                    "invalid_json",
                    "request body must be a JSON object",
                    started,
                )
            }
            Err(e) => {
                let msg = format!(
                    "request body is not valid JSON: line {} column {}: {}",
                    e.line(),
                    e.column(),
                    e
                );
                return self.refuse(rec, p, ErrorKind::BadRequest, "invalid_json", &msg, started);
            }
        };
        let model = json
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(model) = model else {
            return self.refuse(
                rec,
                p,
                ErrorKind::BadRequest,
                "missing_model",
                "request has no `model`",
                started,
            );
        };
        rec.model = Some(model.clone());
        let stream = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
        rec.stream = stream;

        // Inputs whose size the body does not bound, or that the provider would fetch.
        // (count_tokens too: it is free, but the provider would still fetch.)
        let media_tokens = match unbounded_inputs(&route.endpoint, &json) {
            Ok(extra) => extra,
            Err(why) => {
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadRequest,
                    "unsupported_input",
                    &why,
                    started,
                );
            }
        };

        // Personal data and secrets, before anything leaves: every string but the model
        // name (priced below), after undoing look-alike characters that hide them.
        normalize_confusables(&mut json);
        let model_value = json.as_object_mut().and_then(|o| o.remove("model"));
        let counts = self.scanner.apply_json(&mut json, &self.pii, &[]);
        if let (Some(o), Some(m)) = (json.as_object_mut(), model_value) {
            o.insert("model".into(), m);
        }
        if let Some(kind) = pii_in_keys(self.scanner, &json, &self.pii) {
            rec.pii_blocked = vec![kind.clone()];
            rec.decision = Decision::Blocked;
            let msg = format!(
                "request blocked: an object key holds {kind}, which keys cannot be redacted from"
            );
            return self.refuse(rec, p, ErrorKind::BadRequest, "pii_blocked", &msg, started);
        }
        for (k, n) in &counts.redacted {
            rec.pii_redacted.insert(k.to_string(), *n);
        }
        if counts.is_blocked() {
            rec.pii_blocked = counts.blocked.iter().map(|k| k.to_string()).collect();
            rec.decision = Decision::Blocked;
            let msg = format!(
                "request blocked by policy: it contains {} (llm.pii)",
                rec.pii_blocked.join(", ")
            );
            return self.refuse(rec, p, ErrorKind::BadRequest, "pii_blocked", &msg, started);
        }
        let redacted = !counts.redacted.is_empty();
        let bytes_len = (bytes.len() as u64).saturating_add(media_tokens);

        // Price and reservation.
        let price = self.prices.lookup(&model).cloned();
        let free = free_price();
        let mut capped = false;
        let mut reservation = None;
        let mut watched_output: Option<u64> = None;
        let mut include_usage_added = false;
        if route.endpoint.billed() {
            let price = match price.as_ref() {
                Some(pr) => pr,
                None if self.allow_unpriced => &free,
                None => {
                    let msg = format!("model `{model}` is not in the price table, so its cost cannot be held to the budget (add it to prices.yaml or allow unpriced models)");
                    return self.refuse(
                        rec,
                        p,
                        ErrorKind::BadRequest,
                        "model_not_priced",
                        &msg,
                        started,
                    );
                }
            };
            let cap = output_cap(&route.endpoint, &json);
            // `n` as the provider may read it (2.0 is 2).
            let n = json
                .get("n")
                .and_then(Value::as_f64)
                .map_or(1, |f| f.ceil().clamp(1.0, 128.0) as u64);
            let out_tokens = match (&route.endpoint, cap) {
                (Endpoint::Embeddings, _) => 0,
                (_, Some(c)) => c.saturating_mul(n),
                (_, None) => {
                    let d = price
                        .max_output_tokens
                        .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
                        .min(UNCAPPED_OUTPUT_TOKENS);
                    if stream {
                        // A stream is watched as it goes and stopped at the budget.
                        watched_output = Some(d.saturating_mul(n));
                    } else {
                        // A whole answer cannot be stopped half-way: cap it at what was
                        // reserved.
                        set_output_cap(&route.endpoint, &mut json, d);
                        capped = true;
                    }
                    d.saturating_mul(n)
                }
            };
            // Input tokens are at most the body's bytes (every token is at least a byte),
            // plus a fixed allowance per inline image, audio or file part.
            let bound = price
                .worst_case(bytes_len, Some(out_tokens))
                .unwrap_or(Usd::MAX);
            match self.ledger.reserve(&caller.scopes, bound) {
                Ok(r) => reservation = Some(r),
                Err(refusal) => {
                    rec.decision = Decision::OverBudget;
                    let msg = format!(
                        "LLM budget exhausted: {refusal} (this request could cost up to {bound})"
                    );
                    return self.refuse(
                        rec,
                        p,
                        ErrorKind::Budget,
                        "budget_exceeded",
                        &msg,
                        started,
                    );
                }
            }
            if stream && p == Provider::OpenAi && route.endpoint == Endpoint::ChatCompletions {
                let asked = json
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !asked {
                    include_usage_added = true;
                    if let Some(o) = json.as_object_mut() {
                        // Anything but an object (null, a string) would keep usage away.
                        if !o.get("stream_options").is_some_and(Value::is_object) {
                            o.insert("stream_options".into(), serde_json::json!({}));
                        }
                        if let Some(Value::Object(so)) = o.get_mut("stream_options") {
                            so.insert("include_usage".into(), Value::Bool(true));
                        }
                    }
                }
            }
        }
        // Always what was parsed and checked, never the bytes as received: with duplicate
        // keys the provider's parser might keep the other value (a second `model`, an
        // unscanned `content`).
        let _ = (capped, bytes);
        let body = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
        // The parsed document is no longer needed while the answer is awaited.
        drop(json);
        drop(memory);
        rec.decision = if redacted {
            Decision::Redacted
        } else {
            Decision::Forwarded
        };
        let ctx = Flight {
            route,
            price,
            reservation,
            include_usage_added,
            watched: watched_output,
            input_bound: bytes_len,
        };
        self.clone()
            .forward_plain(
                rec,
                &ctx.route.clone(),
                &parts.headers,
                query,
                body,
                Some(ctx),
                started,
            )
            .await
    }

    fn refuse(
        &self,
        mut rec: RequestRecord,
        p: Provider,
        kind: ErrorKind,
        code: &str,
        msg: &str,
        started: Instant,
    ) -> Response<GatewayBody> {
        let retry = match kind {
            ErrorKind::Unavailable => Some(
                self.breakers
                    .get(&p)
                    .map(|b| b.config().cooldown.as_secs().max(1))
                    .unwrap_or(1),
            ),
            _ => None,
        };
        let resp = provider::error_response(p, kind, code, msg, retry);
        rec.status = resp.status().as_u16();
        rec.reason = Some(msg.to_string());
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.record(rec);
        resp
    }

    /// Sends the request upstream (through the breaker) and relays the answer.
    #[allow(clippy::too_many_arguments)]
    async fn forward_plain(
        self: &Arc<Self>,
        mut rec: RequestRecord,
        route: &Route,
        headers: &HeaderMap,
        query: Option<String>,
        body: Bytes,
        flight: Option<Flight>,
        started: Instant,
    ) -> Response<GatewayBody> {
        let p = route.provider;
        let breaker = &self.breakers[&p];
        let permit = match breaker.try_acquire(Instant::now()) {
            Ok(permit) => permit,
            Err(open) => {
                rec.decision = Decision::BreakerOpen;
                let msg = format!("{} upstream unavailable: {open}", p.name());
                drop(flight);
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::Unavailable,
                    "circuit_open",
                    &msg,
                    started,
                );
            }
        };
        self.transition(p, permit.transition().cloned());

        let req =
            match self.upstream_request(route, headers, query.as_deref(), body, flight.is_some()) {
                Ok(r) => r,
                Err(e) => {
                    drop(permit);
                    rec.decision = Decision::UpstreamFailed;
                    return self.refuse(rec, p, ErrorKind::BadGateway, "bad_upstream", &e, started);
                }
            };
        let sent = self
            .unless_shut_down(tokio::time::timeout(self.timeout, self.client.request(req)))
            .await;
        let Some(sent) = sent else {
            drop(permit);
            bill_worst_case(&mut rec, flight);
            rec.decision = Decision::UpstreamFailed;
            return self.refuse(
                rec,
                p,
                ErrorKind::BadGateway,
                "shut_down",
                "the gateway shut down while the provider was answering",
                started,
            );
        };
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.transition(p, permit.record(false, Instant::now()));
                rec.decision = Decision::UpstreamFailed;
                // Past the connection, the request may have reached the provider.
                if !e.is_connect() {
                    bill_worst_case(&mut rec, flight);
                }
                let msg = format!("{} upstream unreachable: {}", p.name(), error_chain(&e));
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadGateway,
                    "upstream_unreachable",
                    &msg,
                    started,
                );
            }
            Err(_) => {
                self.transition(p, permit.record(false, Instant::now()));
                rec.decision = Decision::UpstreamFailed;
                bill_worst_case(&mut rec, flight);
                let msg = format!(
                    "{} upstream did not answer within {}s",
                    p.name(),
                    self.timeout.as_secs()
                );
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadGateway,
                    "upstream_timeout",
                    &msg,
                    started,
                );
            }
        };
        let status = resp.status();
        rec.upstream_status = Some(status.as_u16());
        let failed = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let out_headers = response_headers(resp.headers());
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));

        if status.is_success() && is_sse && flight.is_some() {
            let flight = flight.unwrap_or_else(|| unreachable!());
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            let gw = Arc::clone(self);
            let body = resp.into_body();
            rec.status = status.as_u16();
            tokio::spawn(async move {
                gw.relay_stream(rec, flight, body, tx, permit, started)
                    .await;
            });
            let mut r = Response::builder().status(status);
            if let Some(h) = r.headers_mut() {
                *h = out_headers;
            }
            return r
                .body(GatewayBody::Channel(rx))
                .unwrap_or_else(|_| Response::new(full(Bytes::new())));
        }

        // A whole answer.
        let collected = self
            .unless_shut_down(tokio::time::timeout(
                self.timeout,
                Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect(),
            ))
            .await
            .unwrap_or_else(|| {
                Ok(Err(Box::<dyn std::error::Error + Send + Sync>::from(
                    "shut down",
                )))
            });
        let mut data = match collected {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                self.transition(p, permit.record(false, Instant::now()));
                rec.decision = Decision::UpstreamFailed;
                bill_worst_case(&mut rec, flight);
                let msg = format!("{} upstream answer could not be read", p.name());
                return self.refuse(
                    rec,
                    p,
                    ErrorKind::BadGateway,
                    "upstream_read_failed",
                    &msg,
                    started,
                );
            }
        };
        self.transition(p, permit.record(!failed, Instant::now()));
        if let Some(flight) = flight {
            let mut cost = Usd::ZERO;
            if status.is_success() {
                // An answer without usage (not JSON, no usage object) is billed at what
                // was reserved: the provider billed something we cannot see.
                cost = flight.reserved();
                if let Ok(mut v) = serde_json::from_slice::<Value>(&data) {
                    if let Some(u) = meter::usage_of_body(p, &route.endpoint, &v) {
                        cost = flight.cost_of(&u);
                        rec.usage = Some(u);
                    }
                    if let Some(rules) = &self.response_pii {
                        let c = self.scanner.apply_json(&mut v, rules, &PROTOCOL_KEYS);
                        if !c.redacted.is_empty() {
                            for (k, n) in &c.redacted {
                                *rec.pii_redacted.entry(format!("response.{k}")).or_insert(0) += n;
                            }
                            data = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                        }
                    }
                }
            } else {
                rec.reason = Some(format!("upstream answered {}", status.as_u16()));
            }
            flight.settle(cost);
            rec.cost = cost;
            rec.cost_usd = cost.to_decimal_string();
        }
        rec.status = status.as_u16();
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.record(rec);
        let mut r = Response::builder().status(status);
        if let Some(h) = r.headers_mut() {
            *h = out_headers;
        }
        r.body(full(data))
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }

    fn upstream_request(
        &self,
        route: &Route,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Bytes,
        post: bool,
    ) -> Result<Request<Full<Bytes>>, String> {
        let base = &self.upstreams[&route.provider];
        let base_path = base.path().trim_end_matches('/');
        let path = match route.provider {
            Provider::OpenAi => format!("{base_path}/{}", route.rest),
            Provider::Anthropic => format!("{base_path}/v1/{}", route.rest),
        };
        let pq = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let uri = hyper::Uri::builder()
            .scheme(base.scheme_str().unwrap_or("https"))
            .authority(base.authority().map(|a| a.as_str()).unwrap_or(""))
            .path_and_query(pq)
            .build()
            .map_err(|e| format!("upstream URL: {e}"))?;
        let mut b = Request::builder()
            .method(if post {
                hyper::Method::POST
            } else {
                hyper::Method::GET
            })
            .uri(uri);
        if let Some(h) = b.headers_mut() {
            for (name, value) in headers {
                if forwarded_request_header(name.as_str()) {
                    h.append(name.clone(), value.clone());
                }
            }
            if post {
                h.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
            }
            if let Some(key) = self.credentials.get(&route.provider) {
                let (name, value) = match route.provider {
                    Provider::OpenAi => (header::AUTHORIZATION, format!("Bearer {}", key.as_str())),
                    Provider::Anthropic => (
                        header::HeaderName::from_static("x-api-key"),
                        key.to_string(),
                    ),
                };
                let mut v = header::HeaderValue::from_str(&value).map_err(|_| {
                    format!(
                        "the stored {} key is not a valid header value",
                        route.provider.name()
                    )
                })?;
                v.set_sensitive(true);
                h.insert(name, v);
            }
            if route.provider == Provider::Anthropic && !h.contains_key("anthropic-version") {
                h.insert(
                    "anthropic-version",
                    header::HeaderValue::from_static("2023-06-01"),
                );
            }
        }
        b.body(Full::new(body))
            .map_err(|e| format!("upstream request: {e}"))
    }

    /// Relays a stream event by event, metering it; stops it with an in-band error if it
    /// crosses the budget; keeps draining (and billing) if the client goes away.
    async fn relay_stream(
        self: Arc<Self>,
        mut rec: RequestRecord,
        mut flight: Flight,
        mut body: hyper::body::Incoming,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        permit: ironcage_guard::breaker::Permit,
        started: Instant,
    ) {
        let p = flight.route.provider;
        let endpoint = flight.route.endpoint.clone();
        let mut splitter = sse::Splitter::default();
        let mut m = StreamMeter::default();
        let mut client_gone = false;
        let mut stopped = false;
        let mut failed = false;
        // The output the reservation covers; grows (by extending it) while budget remains.
        let mut covered = flight.watched;
        // One wait for shutdown for the whole stream (not one per frame).
        let mut shut_down = std::pin::pin!(crate::serve::stopped(self.shutdown.subscribe()));
        'read: loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.timeout, body.frame()) => Some(next),
                _ = &mut shut_down => None,
            };
            let Some(next) = next else {
                // The run is over: billed from what was seen (at worst, the reservation).
                failed = true;
                rec.reason = Some("cut off: the gateway shut down mid-stream".into());
                break;
            };
            let frame = match next {
                Ok(Some(Ok(f))) => f,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    failed = true;
                    break;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = match splitter.push(&data) {
                Ok(e) => e,
                Err(e) => {
                    failed = true;
                    rec.reason = Some(e.to_string());
                    break;
                }
            };
            for ev in events {
                let (name, payload) = sse::fields(&ev);
                let usage_only = meter::observe(&mut m, p, &endpoint, name, &payload);
                let mut out = ev.clone();
                if flight.include_usage_added {
                    if usage_only {
                        continue;
                    }
                    if let Some(stripped) = meter::strip_null_usage(&ev) {
                        out = Bytes::from(stripped);
                    }
                }
                if let Some(rules) = &self.response_pii {
                    if let Some(redacted) = self.redact_event(rules, name, &payload, &mut rec) {
                        out = redacted;
                    }
                }
                if let Some(cov) = covered.as_mut() {
                    if m.output_estimate() > *cov {
                        // Crossing what was reserved: reserve more, or stop here.
                        let step = (*cov / 4).max(256);
                        let more = flight
                            .price
                            .as_ref()
                            .map(|pr| {
                                pr.cost(&Usage {
                                    output_tokens: step,
                                    ..Usage::default()
                                })
                            })
                            .unwrap_or(Usd::ZERO);
                        let extended = flight
                            .reservation
                            .as_mut()
                            .map(|r| r.extend(more))
                            .unwrap_or(Ok(()));
                        match extended {
                            Ok(()) => *cov += step,
                            Err(refusal) => {
                                stopped = true;
                                let msg = format!("LLM budget exhausted mid-stream: {refusal}");
                                rec.reason = Some(msg.clone());
                                if !client_gone {
                                    let _ = tx
                                        .send(provider::stream_error_event(p, &endpoint, &msg))
                                        .await;
                                }
                                break 'read;
                            }
                        }
                    }
                }
                if !client_gone && tx.send(out).await.is_err() {
                    // The client left: keep reading so the usage arrives and is billed.
                    client_gone = true;
                }
            }
        }
        if !stopped && !failed && !client_gone {
            if let Some(rest) = splitter.rest() {
                let _ = tx.send(rest).await;
            }
        }
        drop(tx);
        drop(body);
        if failed && !m.finished {
            self.transition(p, permit.record(false, Instant::now()));
            rec.decision = Decision::UpstreamFailed;
            rec.reason
                .get_or_insert_with(|| format!("{} stream broke off", p.name()));
        } else {
            self.transition(p, permit.record(true, Instant::now()));
        }
        // Real usage when the provider sent it; what we saw when it was cut off after
        // reporting some (Anthropic's message_start); else what was reserved.
        let (usage, cost) = match m.reported {
            Some(u) if m.finished => (u, flight.cost_of(&u)),
            Some(mut u) => {
                u.output_tokens = u.output_tokens.max(m.output_estimate());
                if u.input_tokens == 0 && u.cache_read_tokens == 0 {
                    u.input_tokens = flight.input_bound;
                }
                (u, flight.cost_of(&u))
            }
            None => {
                let u = Usage {
                    input_tokens: flight.input_bound,
                    output_tokens: m.output_estimate(),
                    ..Usage::default()
                };
                (u, flight.reserved().max(flight.cost_of(&u)))
            }
        };
        rec.usage = Some(usage);
        if stopped {
            rec.decision = Decision::StoppedOverBudget;
        }
        rec.client_disconnected = client_gone;
        rec.cost = cost;
        rec.cost_usd = cost.to_decimal_string();
        flight.settle(cost);
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.record(rec);
    }
}

/// A request on its way: what it may cost and what it was allowed.
struct Flight {
    route: Route,
    price: Option<Price>,
    reservation: Option<Reservation>,
    include_usage_added: bool,
    /// Streams without an output cap: the output tokens reserved so far.
    watched: Option<u64>,
    /// Input tokens at most (the request body's bytes), billed for a stream cut off
    /// before the provider reported usage.
    input_bound: u64,
}

impl Flight {
    fn cost_of(&self, u: &Usage) -> Usd {
        self.price.as_ref().map(|p| p.cost(u)).unwrap_or(Usd::ZERO)
    }

    /// What is reserved now (the worst case, with any extensions).
    fn reserved(&self) -> Usd {
        self.reservation
            .as_ref()
            .map(|r| r.amount())
            .unwrap_or(Usd::ZERO)
    }

    fn settle(mut self, cost: Usd) {
        if let Some(r) = self.reservation.take() {
            r.settle(cost);
        }
    }
}

/// The caller's key: `Authorization: Bearer` (OpenAI SDK, Anthropic SDK >= 2) or
/// `x-api-key` (older Anthropic SDKs, curl users).
fn presented_key(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim().to_string());
        }
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn valid_agent(a: &str) -> bool {
    (1..=64).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Request headers passed upstream: content negotiation and provider API options. Keys,
/// cookies and anything else the agent adds stay behind.
fn forwarded_request_header(name: &str) -> bool {
    matches!(
        name,
        "accept"
            | "user-agent"
            | "anthropic-version"
            | "anthropic-beta"
            | "openai-beta"
            | "idempotency-key"
    ) || name.starts_with("x-stainless-")
}

/// Response headers passed back: all but hop-by-hop, lengths (recomputed), cookies and the
/// account's organisation/project ids.
fn response_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in h {
        let n = name.as_str();
        if matches!(
            n,
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "set-cookie"
                | "openai-organization"
                | "openai-project"
                | "anthropic-organization-id"
                | "upgrade"
                | "trailer"
                | "proxy-authenticate"
        ) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The request's own output cap, by endpoint.
fn output_cap(e: &Endpoint, json: &Value) -> Option<u64> {
    let keys: &[&str] = match e {
        Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Messages => &["max_tokens"],
        _ => &[],
    };
    keys.iter()
        .filter_map(|k| json.get(*k).and_then(Value::as_u64))
        .min()
}

fn set_output_cap(e: &Endpoint, json: &mut Value, cap: u64) {
    let key = match e {
        Endpoint::ChatCompletions => "max_completion_tokens",
        Endpoint::Responses => "max_output_tokens",
        Endpoint::Messages => "max_tokens",
        _ => return,
    };
    if let Some(o) = json.as_object_mut() {
        o.insert(key.into(), Value::from(cap));
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Price of a model allowed without a table entry (`allow_unpriced_models`): metered in
/// tokens, costing nothing against the budget.
fn free_price() -> Price {
    Price {
        input: Usd::ZERO,
        output: Usd::ZERO,
        cached_input: None,
        cache_write: None,
        cache_read: None,
        max_output_tokens: None,
    }
}

/// Responses are redacted, never blocked (the money is spent and the agent is waiting).
fn response_rules(r: &pii::Rules) -> pii::Rules {
    let mut out = r.clone();
    for k in pii::Kind::ALL {
        if out.action(k) == pii::Action::Block {
            out.set(k, pii::Action::Redact);
        }
    }
    out
}

/// Tokens allowed per inline image, audio clip or file: more than any provider charges for
/// one image, so the reservation stays an upper bound.
const MEDIA_TOKENS: u64 = 25_000;

/// Refuses inputs the body's size does not bound or that make the provider fetch something
/// (a stored conversation, a server-side tool, a file or URL the provider reads — also a
/// way out of a sandbox without network); returns the allowance for inline media parts.
fn unbounded_inputs(e: &Endpoint, json: &Value) -> Result<u64, String> {
    let refuse_fields: &[&str] = match e {
        Endpoint::Responses => &[
            "previous_response_id",
            "conversation",
            "prompt",
            "background",
        ],
        Endpoint::ChatCompletions => &["web_search_options", "prediction"],
        Endpoint::Messages | Endpoint::CountTokens => &["mcp_servers", "container"],
        _ => &[],
    };
    for f in refuse_fields {
        match json.get(*f) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(format!(
                    "`{f}` is not supported through the gateway: its cost is not bounded by the request (or it makes the provider fetch data)"
                ))
            }
        }
    }
    if let Some(tools) = json.get("tools").and_then(Value::as_array) {
        for t in tools {
            match t.get("type").and_then(Value::as_str) {
                None | Some("function" | "custom") => {}
                Some(other) => {
                    return Err(format!(
                        "server-side tool `{other}` is not supported through the gateway: the provider runs it (and bills it) outside the budget's bound"
                    ))
                }
            }
        }
    }
    let mut extra = 0u64;
    media_parts(json, &mut extra)?;
    Ok(extra)
}

fn media_parts(v: &Value, extra: &mut u64) -> Result<(), String> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| media_parts(x, extra)),
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
            if matches!(
                ty,
                "image_url"
                    | "input_image"
                    | "image"
                    | "document"
                    | "input_file"
                    | "file"
                    | "input_audio"
            ) {
                *extra = extra.saturating_add(MEDIA_TOKENS);
                let fetched = |u: Option<&Value>| {
                    let url = match u {
                        Some(Value::String(s)) => Some(s.as_str()),
                        Some(Value::Object(m)) => m.get("url").and_then(Value::as_str),
                        _ => None,
                    };
                    url.is_some_and(|u| !u.starts_with("data:"))
                };
                let source_ty = o
                    .get("source")
                    .and_then(|s| s.get("type"))
                    .and_then(Value::as_str);
                let by_reference = fetched(o.get("image_url"))
                    || o.contains_key("file_id")
                    || o.contains_key("file_url")
                    || o.get("file").is_some_and(|f| f.get("file_id").is_some())
                    || matches!(source_ty, Some("url" | "file"));
                if by_reference {
                    return Err(format!(
                        "a `{ty}` part that the provider would fetch (URL or file id) is not supported through the gateway; send the content inline (a data: URL or base64)"
                    ));
                }
            }
            o.values().try_for_each(|x| media_parts(x, extra))
        }
        _ => Ok(()),
    }
}

/// Characters that hide personal data from a scanner while a model reads through them:
/// zero-width characters are removed, unusual spaces become spaces, fullwidth ASCII
/// becomes ASCII. Only strings holding one are rewritten.
fn normalize_confusables(v: &mut Value) {
    fn odd(c: char) -> bool {
        matches!(c, '\u{00a0}' | '\u{00ad}' | '\u{180e}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}' | '\u{205f}'..='\u{2064}' | '\u{3000}' | '\u{feff}' | '\u{ff01}'..='\u{ff5e}')
    }
    match v {
        Value::String(s) if s.chars().any(odd) => {
            *s = s
                .chars()
                .filter_map(|c| match c {
                    '\u{200b}'..='\u{200f}'
                    | '\u{00ad}'
                    | '\u{180e}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{feff}' => None,
                    '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xff01 + 0x21),
                    c if odd(c) => Some(' '),
                    c => Some(c),
                })
                .collect();
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_confusables),
        Value::Object(o) => o.values_mut().for_each(normalize_confusables),
        _ => {}
    }
}

/// The first kind of personal data found in an object key (keys cannot be redacted without
/// changing the request's meaning, so any kind not allowed blocks).
fn pii_in_keys(scanner: &Scanner, v: &Value, rules: &pii::Rules) -> Option<String> {
    match v {
        Value::Array(a) => a.iter().find_map(|x| pii_in_keys(scanner, x, rules)),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            scanner
                .scan(k)
                .into_iter()
                .find(|f| rules.action(f.kind) != pii::Action::Allow)
                .map(|f| f.kind.to_string())
                .or_else(|| pii_in_keys(scanner, x, rules))
        }),
        _ => None,
    }
}

/// A request that may have reached the provider but whose usage is unknown (timed out,
/// broken off): billed at its reservation, the most it could have cost.
fn bill_worst_case(rec: &mut RequestRecord, flight: Option<Flight>) {
    if let Some(f) = flight {
        let cost = f.reserved();
        f.settle(cost);
        rec.cost = cost;
        rec.cost_usd = cost.to_decimal_string();
        rec.reason = Some("usage unknown: billed at the reservation".into());
    }
}
