//! Start-up, shutdown, and the key-management commands, as blocking functions for the CLI.

use crate::app::{router, App};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::{Build, Pool};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().context("starting the async runtime")
}

fn say(msg: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "ironcage serve: {msg}");
}

fn create_data_dir(cfg: &Config) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))
}

/// Opens the store named by the configuration (for `ironcage key ...`).
pub fn with_store<T>(cfg: &Config, f: impl AsyncFnOnce(&Store) -> Result<T>) -> Result<T> {
    runtime(false)?.block_on(async {
        if cfg.database_url.is_none() {
            create_data_dir(cfg)?;
        }
        let store = Store::open(&cfg.database_url()).await?;
        let r = f(&store).await;
        store.close().await;
        r
    })
}

/// `ironcage serve`: runs until SIGINT or SIGTERM.
pub fn serve(cfg: Config) -> Result<()> {
    let level = match cfg.log_level.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
    runtime(true)?.block_on(serve_async(cfg))
}

async fn serve_async(cfg: Config) -> Result<()> {
    create_data_dir(&cfg)?;
    let store = Store::open(&cfg.database_url()).await?;
    let node = cfg.node();

    // What a previous instance of this node left: executions it was running are recorded
    // as failed, and sandbox cgroups whose host died are removed.
    let interrupted = serde_json::json!({
        "status": "failed",
        "error": "the server stopped before this execution finished",
    })
    .to_string();
    let n = store.fail_interrupted(&node, &interrupted).await?;
    if n > 0 {
        say(format!(
            "{n} execution(s) interrupted by the previous instance recorded as failed"
        ));
    }
    let facts = ironcage_sandbox::probe::host_facts();
    if let Ok(parent) = &facts.cgroup {
        ironcage_sandbox::cgroup::sweep_stale(parent);
    }

    let names: Vec<String> = if cfg.profiles.is_empty() {
        ironcage_policy::list_profiles()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    } else {
        cfg.profiles.clone()
    };
    let mut profiles = BTreeMap::new();
    for name in &names {
        let loaded =
            ironcage_policy::find_profile(name).map_err(|e| anyhow!("profile {name}: {e}"))?;
        profiles.insert(name.clone(), loaded.policy);
    }
    if !profiles.contains_key(&cfg.default_profile) {
        bail!(
            "default profile {:?} is not among the served profiles ({})",
            cfg.default_profile,
            names.join(", ")
        );
    }
    let languages = cfg.languages();
    if languages.is_empty() {
        bail!("no language is available: none of the built-in interpreters exists and the config file adds none");
    }

    // The audit log lives in the store; the key that signs it on disk (instances sharing a
    // store share the key: `audit_key`).
    let key_path = cfg
        .audit_key
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("audit.key"));
    let (key, _) = ironcage_audit::note::load_or_create_key(&key_path)
        .map_err(|e| anyhow!("audit signing key {}: {e}", key_path.display()))?;
    let audit = ironcage_audit::AuditLog::new(
        Box::new(crate::audit_store::SqlAuditStore::new(
            store.clone(),
            tokio::runtime::Handle::current(),
            &crate::store::redact_url(&cfg.database_url()),
        )),
        Some(key),
    );

    let metrics = Arc::new(Metrics::default());
    let exe = std::env::current_exe().context("finding the ironcage binary")?;
    let l = &cfg.limits;
    let warm_profiles = if cfg.pool.warm_profiles.is_empty() {
        vec![cfg.default_profile.clone()]
    } else {
        cfg.pool.warm_profiles.clone()
    };
    let pool = Pool::new(
        Build {
            exe,
            memory_limit_bytes: l.max_memory_bytes,
            timeout_ms: l.max_timeout_ms,
            max_file_size: l.max_file_size,
            pids_limit: l.pids_limit,
            scratch_size: l.scratch_size,
            node: node.clone(),
            llm_profiles: if cfg.llm.enabled {
                profiles
                    .iter()
                    .filter(|(_, p)| p.llm.enabled)
                    .map(|(n, _)| n.clone())
                    .collect()
            } else {
                Vec::new()
            },
        },
        cfg.pool.size,
        warm_profiles.clone(),
        Arc::clone(&metrics),
    );
    // One sandbox of each warmed profile is built now: a profile this host cannot enforce
    // stops the server here, with the reason, rather than failing every request.
    for p in &warm_profiles {
        if !profiles.contains_key(p) {
            bail!("pool.warm_profiles: {p:?} is not a served profile");
        }
        let w = pool.spawn(p).await.map_err(|e| anyhow!("{e}"))?;
        drop(w);
        pool.refill(p);
    }

    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.pool.max_running));
    let audit = Arc::new(Mutex::new(audit));
    let llm_profile = cfg
        .llm
        .profile
        .clone()
        .unwrap_or_else(|| cfg.default_profile.clone());
    let profile_llm = match profiles.get(&llm_profile) {
        Some(p) => p.llm.clone(),
        None if cfg.llm.profile.is_none() => ironcage_policy::Llm::default(),
        None => bail!("llm.profile: {llm_profile:?} is not a served profile"),
    };
    let mounted = crate::llm::build(&cfg.llm, &profile_llm, store.clone(), Arc::clone(&audit))?;
    let (gateway, llm_auth) = match mounted {
        Some((g, a)) => (Some(g), Some(a)),
        None => (None, None),
    };
    let app = Arc::new(App {
        gateway,
        llm_auth,
        languages,
        profiles,
        warm_profiles,
        store: store.clone(),
        pool: Arc::clone(&pool),
        metrics,
        limiter: Arc::default(),
        slots: Arc::clone(&slots),
        node,
        audit,
        sandbox_locks: Mutex::default(),
        audit_broken: Mutex::default(),
        cfg: cfg.clone(),
    });
    // Expired long-lived sandboxes are removed every few seconds; cgroups of sandbox hosts
    // that were killed (a host past its deadline) every minute.
    {
        let store = store.clone();
        let parent = facts.cgroup.clone().ok();
        let retention_ms = cfg.execution_retention_hours as i64 * 3_600_000;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = store.reap_sandboxes().await {
                    tracing::warn!("reaping expired sandboxes: {e}");
                }
                n += 1;
                if retention_ms > 0 && n.is_multiple_of(12) {
                    if let Err(e) = store
                        .reap_executions(crate::store::now_ms() - retention_ms)
                        .await
                    {
                        tracing::warn!("forgetting old executions: {e}");
                    }
                }
                if let (Some(p), 0) = (parent.clone(), n % 12) {
                    let _ = tokio::task::spawn_blocking(move || {
                        ironcage_sandbox::cgroup::sweep_stale(&p)
                    })
                    .await;
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    say(format!(
        "listening on http://{} (store {}, data {})",
        listener
            .local_addr()
            .map_or(cfg.listen.clone(), |a| a.to_string()),
        crate::store::redact_url(&cfg.database_url()),
        cfg.data_dir.display()
    ));
    let drain = std::time::Duration::from_millis(cfg.limits.max_timeout_ms + 30_000);
    crate::http::serve(listener, router(app), shutdown_signal(), drain).await;
    // Executions whose clients went away still run in their own tasks: let them finish
    // (and be recorded) before the runtime goes, for at most the longest timeout.
    let wait = std::time::Duration::from_millis(cfg.limits.max_timeout_ms + 30_000);
    let all = u32::try_from(cfg.pool.max_running).unwrap_or(u32::MAX);
    if tokio::time::timeout(wait, slots.acquire_many(all))
        .await
        .is_err()
    {
        say("shutting down with executions still running: they are recorded as failed on the next start");
    }
    say("shutting down: releasing the warm pool");
    pool.close().await;
    store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
