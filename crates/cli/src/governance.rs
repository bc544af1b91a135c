//! What `ironcage run` hosts for its sandbox besides the sandbox itself: the LLM gateway
//! (`llm.enabled`) and the egress proxy (`network.mode: proxy`), served from a runtime
//! thread on listeners that live inside the sandbox's network namespace, with every
//! decision appended to the run's audit log as it happens.

use crate::commands::say;
use anyhow::{anyhow, Result};
use ironcage_audit::Event as AuditEvent;
use ironcage_gateway::auth::{Caller, VirtualKey};
use ironcage_gateway::provider::Provider;
use ironcage_gateway::settings::Settings;
use ironcage_gateway::{Config, Gateway};
use ironcage_guard::budget::{Ledger, Period, SystemClock};
use ironcage_guard::money::Usd;
use ironcage_guard::prices::PriceTable;
use ironcage_policy::Policy;
use ironcage_sandbox::plan::{Listener, Plan};
use ironcage_sandbox::report::{RunReport, Violation};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The audit log shared by the supervisor (run.start / run.end) and the writer thread
/// (gateway and proxy decisions while the run goes on).
pub type SharedLog = Arc<Mutex<Option<(ironcage_audit::AuditLog, PathBuf)>>>;

/// How long in-flight gateway requests may take to finish (and be billed) after the
/// sandbox has ended.
const DRAIN: Duration = Duration::from_secs(10);

/// Flags of `ironcage run` that concern the gateway.
pub struct Flags<'a> {
    pub budget_usd: Option<&'a str>,
    pub llm_upstream: &'a [String],
}

/// Egress refusals by (host, port, reason) -> count, for the report.
type Denials = BTreeMap<(String, u16, String), u64>;

pub struct Hosted {
    run_id: String,
    gateway: Option<Arc<Gateway>>,
    egress: Option<Arc<ironcage_egress::Rules>>,
    budget: Usd,
    budget_default: bool,
    denials: Arc<Mutex<Denials>>,
    audit_tx: Option<mpsc::Sender<AuditEvent>>,
    /// Taken by `start`, which runs the writer.
    audit_rx: Mutex<Option<(mpsc::Receiver<AuditEvent>, SharedLog)>>,
    audit_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    providers_with_keys: Vec<&'static str>,
}

/// `$IRONCAGE_LLM_CONFIG`, else `llm.yaml` next to the audit key's directory
/// (/etc/ironcage or ~/.config/ironcage).
pub fn settings_path(is_root: bool) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCAGE_LLM_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    Ok(config_dir(is_root)?.join("llm.yaml"))
}

pub fn config_dir(is_root: bool) -> Result<PathBuf> {
    let key = crate::paths::default_audit_key(is_root).map_err(|e| anyhow!(e))?;
    Ok(key
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// `$IRONCAGE_SECRETS`, else `secrets.json` in the config directory.
pub fn secrets_path(is_root: bool) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCAGE_SECRETS").filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    Ok(config_dir(is_root)?.join("secrets.json"))
}

/// `$IRONCAGE_MASTER_KEY_FILE`, else `master.key` in the config directory (the key itself
/// may instead be given in `$IRONCAGE_MASTER_KEY`).
pub fn master_key_path(is_root: bool) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCAGE_MASTER_KEY_FILE").filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    Ok(config_dir(is_root)?.join("master.key"))
}

/// Settings file, then `--llm-upstream`.
pub fn load_settings(is_root: bool, upstream_flags: &[String]) -> Result<Settings> {
    let path = settings_path(is_root)?;
    let mut s = Settings::load(&path).map_err(|e| anyhow!("{e}"))?;
    for spec in upstream_flags {
        s.set_upstream(spec).map_err(|e| anyhow!(e))?;
    }
    Ok(s)
}

/// The shipped price table, extended by `prices:` from the settings.
pub fn load_prices(settings: &Settings) -> Result<PriceTable> {
    match &settings.prices {
        Some(p) => PriceTable::load(p).map_err(|e| anyhow!("{e}")),
        None => Ok(PriceTable::shipped().clone()),
    }
}

/// Provider keys from the secret store at the default (or configured) paths.
pub fn load_credentials(is_root: bool) -> Result<HashMap<Provider, zeroize::Zeroizing<String>>> {
    ironcage_gateway::settings::load_credentials(
        &secrets_path(is_root)?,
        &master_key_path(is_root)?,
    )
    .map_err(|e| anyhow!(e))
}

/// Writes audit events in batches as they come, each batch one durable append.
pub fn audit_writer(log: SharedLog, rx: mpsc::Receiver<AuditEvent>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        if let Ok(mut guard) = log.lock() {
            if let Some((log, path)) = guard.as_mut() {
                if let Err(e) = log.append(&batch) {
                    say!("ironcage: audit log {}: {e}", path.display());
                }
            }
        }
    }
}

impl Hosted {
    /// Sets up what the plan's listeners need, and gives the sandbox its virtual key.
    pub fn prepare(
        policy: &Policy,
        plan: &mut Plan,
        run_id: &str,
        is_root: bool,
        flags: &Flags<'_>,
        audit: &SharedLog,
    ) -> Result<Option<Hosted>> {
        if plan.listeners.is_empty() {
            return Ok(None);
        }
        // The writer thread starts with the services, after the sandbox is cloned: no
        // thread of ours may exist while the clone copies the process (see `start`).
        let has_audit = audit.lock().map(|g| g.is_some()).unwrap_or(false);
        let (audit_tx, audit_rx) = if has_audit {
            let (tx, rx) = mpsc::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (budget_text, budget_default) = match flags.budget_usd {
            Some(b) => (b.to_string(), false),
            None => (
                policy.llm.budget_usd.clone(),
                policy.llm.budget_usd == ironcage_policy::DEFAULT_LLM_BUDGET_USD,
            ),
        };
        let budget =
            Usd::parse(&budget_text).map_err(|e| anyhow!("--budget-usd `{budget_text}`: {e}"))?;
        let mut hosted = Hosted {
            run_id: run_id.to_string(),
            gateway: None,
            egress: None,
            budget,
            budget_default,
            denials: Arc::default(),
            audit_tx,
            audit_rx: Mutex::new(audit_rx.map(|rx| (rx, Arc::clone(audit)))),
            audit_thread: Mutex::new(None),
            stop: Mutex::new(None),
            thread: Mutex::new(None),
            providers_with_keys: Vec::new(),
        };
        if plan.listeners.contains(&Listener::LlmGateway) {
            if let Some(why) = secret_exposure(plan, is_root)? {
                return Err(anyhow!(why));
            }
            let scope = format!("run:{run_id}");
            let sink = hosted.audit_sink();
            let (gw, key, with_keys) = gateway_for(
                &policy.llm,
                is_root,
                flags.llm_upstream,
                &scope,
                budget,
                sink,
            )?;
            hosted.providers_with_keys = with_keys;
            set_env(plan, "OPENAI_API_KEY", &key);
            set_env(plan, "ANTHROPIC_API_KEY", &key);
            hosted.gateway = Some(Arc::new(gw));
        }
        if plan.listeners.contains(&Listener::EgressProxy) {
            let rules = ironcage_egress::Rules::new(
                &policy.network.allow_domains,
                &policy.network.deny_domains,
            )
            .map_err(|e| anyhow!("{e}"))?;
            // In mode proxy, allow_outgoing names the ports the proxy may reach (80 and
            // 443 when empty).
            let ports: Vec<u16> = policy.network.allow_outgoing.iter().map(|p| p.0).collect();
            let rules = if ports.is_empty() {
                rules
            } else {
                rules.with_ports(&ports)
            };
            hosted.egress = Some(Arc::new(rules));
        }
        Ok(Some(hosted))
    }

    /// An audit sink for gateway events.
    fn audit_sink(&self) -> ironcage_gateway::event::Sink {
        audit_sink(self.audit_tx.clone(), Some(self.run_id.clone()))
    }

    /// Starts serving the listeners (called by the supervisor once init opened them).
    pub fn start(&self, fds: Vec<(Listener, OwnedFd)>) {
        if let Some((rx, log)) = self.audit_rx.lock().ok().and_then(|mut r| r.take()) {
            let t = std::thread::spawn(move || audit_writer(log, rx));
            if let Ok(mut slot) = self.audit_thread.lock() {
                *slot = Some(t);
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let gateway = self.gateway.clone();
        let egress = self.egress.clone();
        let denials = Arc::clone(&self.denials);
        let audit_tx = self.audit_tx.clone().map(Mutex::new);
        let run = self.run_id.clone();
        let thread = std::thread::Builder::new()
            .name("ironcage-services".into())
            .spawn(move || {
                // One thread: a run's agent makes few requests at once, and every thread
                // started here is paid for by every run.
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        say!("ironcage: cannot start the gateway runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (which, fd) in fds {
                        let std_listener = std::net::TcpListener::from(fd);
                        let _ = std_listener.set_nonblocking(true);
                        let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                            continue;
                        };
                        match which {
                            Listener::LlmGateway => {
                                if let Some(gw) = gateway.clone() {
                                    tasks.spawn(ironcage_gateway::serve::serve(
                                        gw,
                                        listener,
                                        stop_rx.clone(),
                                    ));
                                }
                            }
                            Listener::EgressProxy => {
                                if let Some(rules) = egress.clone() {
                                    let denials = Arc::clone(&denials);
                                    let audit_tx = audit_tx
                                        .as_ref()
                                        .and_then(|m| m.lock().ok().map(|t| Mutex::new(t.clone())));
                                    let run = run.clone();
                                    let proxy = ironcage_egress::Proxy::new(rules, move |ev| {
                                        egress_event(&run, &denials, audit_tx.as_ref(), ev)
                                    });
                                    tasks.spawn(proxy.serve(
                                        listener,
                                        ironcage_gateway::serve::stopped(stop_rx.clone()),
                                    ));
                                }
                            }
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                    // Requests still being answered (a stream being drained to bill it) get
                    // DRAIN to finish; then they are cut off, billed at what they may have
                    // cost, and recorded.
                    if let Some(gw) = gateway.as_ref() {
                        drain(gw).await;
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            });
        match thread {
            Ok(t) => {
                if let Ok(mut s) = self.thread.lock() {
                    *s = Some(t);
                }
                if let Ok(mut s) = self.stop.lock() {
                    *s = Some(stop_tx);
                }
            }
            Err(e) => say!("ironcage: cannot start the gateway thread: {e}"),
        }
    }

    /// Stops the services, waits for their records, and adds their account to the report.
    pub fn finish(mut self, mut report: Option<&mut RunReport>) {
        if let Ok(mut s) = self.stop.lock() {
            if let Some(tx) = s.take() {
                let _ = tx.send(true);
            }
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        if let (Ok(d), Some(report)) = (self.denials.lock(), report.as_mut()) {
            for ((host, port, reason), count) in d.iter() {
                report.violations.push(Violation::Network {
                    syscall: "proxy".into(),
                    address: host.clone(),
                    port: *port,
                    count: *count,
                    reason: reason.clone(),
                });
            }
        }
        if let Some(gw) = self.gateway.take() {
            let scope = format!("run:{}", self.run_id);
            let snap = gw.ledger().snapshot(&scope);
            let s = &gw.stats;
            let by: BTreeMap<&str, u64> = ironcage_gateway::event::Decision::ALL
                .into_iter()
                .map(|d| (d.name(), s.count(d)))
                .filter(|(_, n)| *n > 0)
                .collect();
            let requests = s.requests();
            let summary = serde_json::json!({
                "requests": requests,
                "decisions": by,
                "input_tokens": s.input_tokens.load(std::sync::atomic::Ordering::Relaxed),
                "output_tokens": s.output_tokens.load(std::sync::atomic::Ordering::Relaxed),
                "spent_usd": snap.spent.to_decimal_string(),
                "budget_usd": self.budget.to_decimal_string(),
                "budget_is_default": self.budget_default,
                "provider_keys": self.providers_with_keys,
            });
            if let Some(report) = report.as_mut() {
                report.llm = Some(summary);
            }
            if requests > 0 {
                let refused = s.count(ironcage_gateway::event::Decision::OverBudget)
                    + s.count(ironcage_gateway::event::Decision::StoppedOverBudget);
                say!(
                    "ironcage: LLM gateway: {requests} request(s), {} spent of a {} budget{}{}",
                    snap.spent,
                    self.budget,
                    if self.budget_default {
                        " (the default; set another with --budget-usd)"
                    } else {
                        ""
                    },
                    if refused > 0 {
                        format!("; {refused} refused or stopped at the budget")
                    } else {
                        String::new()
                    },
                );
            }
        }
        // Every record is in the log before run.end is appended.
        drop(self.audit_tx.take());
        if let Some(t) = self.audit_thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn egress_event(
    run: &str,
    denials: &Mutex<Denials>,
    audit: Option<&Mutex<mpsc::Sender<AuditEvent>>>,
    ev: ironcage_egress::Event,
) {
    use ironcage_egress::Event as E;
    let kind = match &ev {
        E::Allowed { .. } => "egress.allowed",
        E::Denied {
            host, port, reason, ..
        } => {
            if let Ok(mut d) = denials.lock() {
                if d.len() < 256 || d.contains_key(&(host.clone(), *port, reason.clone())) {
                    *d.entry((host.clone(), *port, reason.clone())).or_insert(0) += 1;
                }
            }
            "egress.denied"
        }
        E::Failed { .. } => "egress.failed",
        E::Rejected { .. } => "egress.rejected",
    };
    if let Some(tx) = audit.and_then(|m| m.lock().ok()) {
        let mut fields = serde_json::to_value(&ev).unwrap_or_default();
        if let Some(o) = fields.as_object_mut() {
            o.remove("event");
        }
        let _ = tx.send(AuditEvent::new(kind, Some(run), fields));
    }
}

fn set_env(plan: &mut Plan, name: &str, value: &str) {
    plan.env.retain(|(k, _)| k != name);
    plan.env.push((name.to_string(), value.to_string()));
}

/// An audit sink for gateway events: `llm.request` and `llm.breaker` entries.
pub fn audit_sink(
    tx: Option<mpsc::Sender<AuditEvent>>,
    run: Option<String>,
) -> ironcage_gateway::event::Sink {
    let tx = tx.map(Mutex::new);
    Arc::new(move |ev: ironcage_gateway::event::Event| {
        let Some(tx) = tx.as_ref() else { return };
        let (kind, fields) = ev.audit_entry();
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(AuditEvent::new(kind, run.as_deref(), fields));
        }
    })
}

/// A gateway charging `scope` (limited to `budget`), with the policy's PII rules, the
/// settings file's upstreams and prices, and the stored provider keys. Returns it with
/// the virtual key that opens it and the providers that have a stored key.
pub fn gateway_for(
    llm: &ironcage_policy::Llm,
    is_root: bool,
    upstream_flags: &[String],
    scope: &str,
    budget: Usd,
    sink: ironcage_gateway::event::Sink,
) -> Result<(Gateway, String, Vec<&'static str>)> {
    let settings = load_settings(is_root, upstream_flags)?;
    let prices = load_prices(&settings)?;
    let credentials = load_credentials(is_root)?;
    let with_keys = Provider::ALL
        .into_iter()
        .filter(|p| credentials.contains_key(p))
        .map(Provider::name)
        .collect();
    let pii = ironcage_gateway::settings::pii_rules(llm).map_err(|e| anyhow!(e))?;
    let ledger = Arc::new(Ledger::new(Arc::new(SystemClock)));
    ledger.set_limit(scope, Some(budget), Period::Never);
    let key = VirtualKey::generate(Caller {
        label: scope.to_string(),
        scopes: vec![scope.to_string()],
    })?;
    let key_text = key.key().to_string();
    let cfg = Config {
        upstreams: settings.upstream_map(),
        credentials,
        pii,
        pii_responses: llm.pii_responses,
        allow_unpriced_models: llm.allow_unpriced_models,
        breaker: settings.breaker_config(),
        ..Config::default()
    };
    let gw = Gateway::new(cfg, Arc::new(prices), ledger, Arc::new(key), sink)
        .map_err(|e| anyhow!("{e}"))?;
    Ok((gw, key_text, with_keys))
}

/// Whether the sandbox could get at the provider keys: the master key in its environment,
/// or (rootless, where it runs as the key file's owner) a bind containing the master key
/// file. The store alone is ciphertext.
fn secret_exposure(plan: &Plan, is_root: bool) -> Result<Option<String>> {
    if plan
        .env
        .iter()
        .any(|(k, _)| k == ironcage_guard::secrets::MASTER_KEY_ENV)
    {
        return Ok(Some(format!(
            "{} would be passed into the sandbox, which could then decrypt the provider keys",
            ironcage_guard::secrets::MASTER_KEY_ENV
        )));
    }
    if is_root {
        return Ok(None);
    }
    let key = master_key_path(false)?;
    Ok(crate::paths::bind_containing(plan, &key, false).map(|(host, key)| {
        format!(
            "the bind {} contains the secret store's master key {}, which the sandbox (running as you) could read and use to decrypt the provider keys (bind a narrower directory, or keep the key elsewhere with IRONCAGE_MASTER_KEY_FILE)",
            host.display(),
            key.display()
        )
    }))
}

/// Waits for the gateway's requests to finish, up to DRAIN; then shuts it down and waits
/// for the records of those it cut off.
pub async fn drain(gw: &Gateway) {
    let deadline = Instant::now() + DRAIN;
    while gw.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.shut_down();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
