//! The LLM gateway mounted in the service: API keys (and the agents they name) are the
//! callers, each with its own budget; spending is kept in the store per calendar period,
//! so budgets survive restarts; decisions go to the service's audit log.

use crate::app::App;
use crate::config::LlmConfig;
use crate::keys;
use crate::store::Store;
use anyhow::{anyhow, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ironcage_audit::AuditLog;
use ironcage_gateway::auth::{AuthFuture, Authorize, Caller};
use ironcage_gateway::event::Event;
use ironcage_gateway::settings::Settings;
use ironcage_gateway::{Config as GwConfig, Gateway};
use ironcage_guard::budget::{Ledger, Period, SystemClock};
use ironcage_guard::money::Usd;
use ironcage_guard::prices::PriceTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What this instance has accounted for of a scope's spending in the store, for the
/// current period: what it loaded, what it wrote itself, and what other instances wrote
/// that it has since charged to its ledger.
struct Synced {
    period: String,
    seen: i64,
}

pub struct ServiceAuth {
    store: Store,
    /// Keys of executions running now: the sandbox's virtual key -> its caller.
    virtual_keys: Mutex<std::collections::HashMap<String, Caller>>,
    execution_budget: Option<Usd>,
    ledger: Arc<Ledger>,
    key_budget: Option<Usd>,
    agent_budget: Option<Usd>,
    period: Period,
    /// Scopes whose limit and past spending this instance has loaded.
    loaded: tokio::sync::Mutex<HashMap<String, Synced>>,
}

impl Authorize for ServiceAuth {
    fn authorize<'a>(&'a self, key: &'a str, agent: Option<&'a str>) -> AuthFuture<'a> {
        Box::pin(async move {
            if key.starts_with(ironcage_gateway::auth::VIRTUAL_KEY_PREFIX) {
                let map = self.virtual_keys.lock().unwrap_or_else(|p| p.into_inner());
                return map
                    .iter()
                    .find(|(k, _)| {
                        ironcage_gateway::auth::constant_time_eq(k.as_bytes(), key.as_bytes())
                    })
                    .map(|(_, c)| c.clone());
            }
            if !key.starts_with("ick_") {
                return None;
            }
            let k = self.store.key_by_hash(&keys::hash(key)).await.ok()??;
            let mut scopes = vec![format!("key:{}", k.id)];
            if let Some(a) = agent {
                scopes.push(format!("agent:{}/{a}", k.id));
            }
            for (i, scope) in scopes.iter().enumerate() {
                let limit = if i == 0 {
                    self.key_budget
                } else {
                    self.agent_budget
                };
                self.load_scope(scope, limit).await?;
            }
            Some(Caller {
                label: scopes.last().cloned().unwrap_or_default(),
                scopes,
            })
        })
    }
}

impl ServiceAuth {
    /// The first time this instance sees a scope: its limit, and what was spent in this
    /// period (by any instance) according to the store.
    async fn load_scope(&self, scope: &str, limit: Option<Usd>) -> Option<()> {
        let mut loaded = self.loaded.lock().await;
        if loaded.contains_key(scope) {
            return Some(());
        }
        self.ledger.set_limit(scope, limit, self.period);
        let period = period_key(self.period, crate::store::now_ms() as u64);
        let spent = self.store.llm_spent(scope, &period).await.ok()?;
        if spent > 0 {
            self.ledger.charge(&[scope], Usd::from_picos(spent));
        }
        loaded.insert(
            scope.to_string(),
            Synced {
                period,
                seen: spent,
            },
        );
        Some(())
    }

    /// Our own spending, about to be written to the store: not to be charged again when
    /// the store is read back.
    async fn wrote(&self, scope: &str, period: &str, picos: i64) {
        let mut loaded = self.loaded.lock().await;
        if let Some(s) = loaded.get_mut(scope) {
            if s.period != period {
                s.period = period.to_string();
                s.seen = 0;
            }
            s.seen = s.seen.saturating_add(picos);
        }
    }

    /// Charges what other instances spent since we last looked (instances sharing a store
    /// enforce one budget, within a second of each other).
    async fn sync_from_store(&self) {
        let period = period_key(self.period, crate::store::now_ms() as u64);
        // Read the store without holding the lock (authentication waits on it).
        let scopes: Vec<String> = self.loaded.lock().await.keys().cloned().collect();
        let mut totals = Vec::with_capacity(scopes.len());
        for scope in scopes {
            if let Ok(total) = self.store.llm_spent(&scope, &period).await {
                totals.push((scope, total));
            }
        }
        let mut loaded = self.loaded.lock().await;
        for (scope, total) in totals {
            let Some(s) = loaded.get_mut(&scope) else {
                continue;
            };
            if s.period != period {
                // The ledger starts the new period from zero by itself.
                s.period = period.clone();
                s.seen = 0;
            }
            if total > s.seen {
                self.ledger
                    .charge(&[scope.as_str()], Usd::from_picos(total - s.seen));
                s.seen = total;
            }
        }
    }

    /// A virtual key for one execution of `key_id`: charged to the key and to the
    /// execution's own budget (`llm.execution_budget_usd`). Forgotten by `end_execution`.
    pub async fn start_execution(&self, key_id: &str, execution: &str) -> Option<String> {
        // Load the key's limit and past spending, as its first direct call would.
        let key_scope = format!("key:{key_id}");
        self.load_scope(&key_scope, self.key_budget).await?;
        let scope = format!("execution:{execution}");
        self.ledger
            .set_limit(&scope, self.execution_budget, Period::Never);
        let caller = Caller {
            label: scope.clone(),
            scopes: vec![key_scope, scope],
        };
        let vk = ironcage_gateway::auth::VirtualKey::generate(caller.clone()).ok()?;
        let key = vk.key().to_string();
        self.virtual_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), caller);
        Some(key)
    }

    /// The key stops working now; the execution's budget is forgotten once nothing is
    /// reserved on it any more (a request of the execution may still be settling; removing
    /// the scope under it would let it settle on a new, unlimited one).
    pub fn end_execution(&self, key: &str, execution: &str) {
        self.virtual_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let ledger = Arc::clone(&self.ledger);
        let scope = format!("execution:{execution}");
        tokio::spawn(async move {
            // Bounded by the gateway's upstream deadline.
            for _ in 0..(11 * 60 * 5) {
                if ledger.snapshot(&scope).reserved == Usd::ZERO {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            ledger.remove(&scope);
        });
    }
}

/// The calendar bucket spending is kept under (UTC, as the ledger resets).
pub fn period_key(p: Period, now_ms: u64) -> String {
    let t = ironcage_audit::entry::rfc3339_ms(now_ms);
    match p {
        Period::Never => "all".into(),
        Period::Hourly => t[..13].to_string(),
        Period::Daily => t[..10].to_string(),
        Period::Monthly => t[..7].to_string(),
        Period::Every(d) => format!(
            "every{}s:{}",
            d.as_secs(),
            now_ms / 1000 / d.as_secs().max(1)
        ),
    }
}

/// The gateway and what authenticates its callers.
pub type Mounted = (Arc<Gateway>, Arc<ServiceAuth>);

/// Builds the gateway, or None when `llm.enabled` is false.
pub fn build(
    cfg: &LlmConfig,
    profile_llm: &ironcage_policy::Llm,
    store: Store,
    audit: Arc<Mutex<AuditLog>>,
) -> Result<Option<Mounted>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let settings = Settings {
        upstreams: cfg.upstreams.clone(),
        prices: cfg.prices.clone(),
        breaker: cfg.breaker.clone(),
    };
    settings.check().map_err(|e| anyhow!("llm: {e}"))?;
    let prices = match &settings.prices {
        Some(p) => PriceTable::load(p).map_err(|e| anyhow!("{e}"))?,
        None => PriceTable::shipped().clone(),
    };
    let budget = |v: &Option<String>, field: &str| -> Result<Option<Usd>> {
        v.as_deref()
            .map(|t| Usd::parse(t).map_err(|e| anyhow!("llm.{field} `{t}`: {e}")))
            .transpose()
    };
    let period =
        Period::parse(&cfg.budget_period).map_err(|e| anyhow!("llm.budget_period: {e}"))?;
    let credentials = match &cfg.secrets_file {
        Some(path) => {
            let key_path = cfg
                .master_key_file
                .clone()
                .unwrap_or_else(|| path.with_file_name("master.key"));
            ironcage_gateway::settings::load_credentials(path, &key_path)
                .map_err(|e| anyhow!("llm: {e}"))?
        }
        None => Default::default(),
    };
    let pii = ironcage_gateway::settings::pii_rules(profile_llm).map_err(|e| anyhow!(e))?;
    let ledger = Arc::new(Ledger::new(Arc::new(SystemClock)));
    let auth = Arc::new(ServiceAuth {
        virtual_keys: Mutex::default(),
        execution_budget: budget(&cfg.execution_budget_usd, "execution_budget_usd")?,
        store: store.clone(),
        ledger: Arc::clone(&ledger),
        key_budget: budget(&cfg.key_budget_usd, "key_budget_usd")?,
        agent_budget: budget(&cfg.agent_budget_usd, "agent_budget_usd")?,
        period,
        loaded: Default::default(),
    });
    // Decisions are appended to the audit log and spending to the store by one task, in
    // batches, off the request path.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    // Other instances on the same store: their spending is read back every second.
    {
        let auth = Arc::clone(&auth);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                auth.sync_from_store().await;
            }
        });
    }
    let auth_for_sink = Arc::clone(&auth);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            let now = crate::store::now_ms() as u64;
            let mut entries = Vec::new();
            for ev in &batch {
                if let Event::Request(r) = ev {
                    if r.cost.picos() > 0 {
                        for scope in &r.scopes {
                            let key = period_key(period, now);
                            auth_for_sink.wrote(scope, &key, r.cost.picos()).await;
                            if let Err(e) = store.add_llm_spend(scope, &key, r.cost.picos()).await {
                                tracing::error!("recording LLM spending of {scope}: {e}");
                            }
                        }
                    }
                }
                let (kind, fields) = ev.audit_entry();
                entries.push(ironcage_audit::Event::new(kind, None, fields));
            }
            let audit = Arc::clone(&audit);
            let done = tokio::task::spawn_blocking(move || {
                let mut log = audit.lock().unwrap_or_else(|p| p.into_inner());
                log.append(&entries).map(|_| ())
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::error!("audit log: LLM decisions not recorded: {e}");
            }
        }
    });
    let sink: ironcage_gateway::event::Sink = Arc::new(move |ev| {
        let _ = tx.send(ev);
    });
    let gw = Gateway::new(
        GwConfig {
            upstreams: settings.upstream_map(),
            credentials,
            pii,
            pii_responses: profile_llm.pii_responses,
            allow_unpriced_models: profile_llm.allow_unpriced_models,
            breaker: settings.breaker_config(),
            ..GwConfig::default()
        },
        Arc::new(prices),
        ledger,
        Arc::clone(&auth) as Arc<dyn Authorize>,
        sink,
    )
    .map_err(|e| anyhow!("{e}"))?;
    Ok(Some((Arc::new(gw), auth)))
}

/// `/llm/{*rest}`: handed to the gateway as is.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    match app.gateway.as_ref() {
        Some(gw) => gw.handle(req).await.map(Body::new),
        None => crate::app::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "the LLM gateway is disabled on this server (llm.enabled: false)",
        )
        .into_response(),
    }
}

/// The gateway answering one execution's sandbox.
pub(crate) struct ServedGateway {
    pub key: String,
    auth: Arc<ServiceAuth>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn serve_gateway(
    gw: Arc<ironcage_gateway::Gateway>,
    auth: Arc<ServiceAuth>,
    fd: std::os::fd::OwnedFd,
    key_id: &str,
    execution: &str,
) -> Option<ServedGateway> {
    let std_listener = std::net::TcpListener::from(fd);
    std_listener.set_nonblocking(true).ok()?;
    let listener = tokio::net::TcpListener::from_std(std_listener).ok()?;
    let key = auth.start_execution(key_id, execution).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ironcage_gateway::serve::serve(gw, listener, rx));
    Some(ServedGateway {
        key,
        auth,
        stop,
        task,
    })
}

impl ServedGateway {
    pub async fn stop(self, execution: &str) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.auth.end_execution(&self.key, execution);
    }
}
