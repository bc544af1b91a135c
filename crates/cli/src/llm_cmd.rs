//! `ironcage secret` (provider keys, encrypted at rest) and `ironcage gateway` (the LLM
//! gateway on a port of its own).

use crate::cli::{GatewayArgs, SecretCmd};
use crate::commands::{fail, out, say};
use crate::governance;
use anyhow::{anyhow, Result};
use ironcage_guard::money::Usd;
use ironcage_guard::secrets::{MasterKey, SecretStore};
use ironcage_sandbox::exit_code;
use std::io::Read;
use std::sync::Arc;
use zeroize::Zeroizing;

fn open_store(create: bool) -> Result<SecretStore> {
    let is_root = crate::paths::is_root();
    let path = governance::secrets_path(is_root)?;
    let key_path = governance::master_key_path(is_root)?;
    let key = MasterKey::from_env_or_file(&key_path, create).map_err(|e| anyhow!("{e}"))?;
    SecretStore::open(&path, key).map_err(|e| anyhow!("{e}"))
}

pub fn secret(cmd: SecretCmd) -> Result<i32> {
    match cmd {
        SecretCmd::Set {
            name,
            from_env,
            from_file,
        } => {
            let mut value = Zeroizing::new(String::new());
            match (from_env, from_file) {
                (Some(var), None) => match std::env::var(&var) {
                    Ok(v) => *value = v,
                    Err(_) => return Err(fail(exit_code::USAGE, format!("environment variable {var} is not set (or not UTF-8)"))),
                },
                (None, Some(path)) => {
                    let r = if path.as_os_str() == "-" {
                        std::io::stdin().read_to_string(&mut value)
                    } else {
                        std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut value))
                    };
                    r.map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
                    if value.ends_with('\n') {
                        value.pop();
                        if value.ends_with('\r') {
                            value.pop();
                        }
                    }
                }
                _ => return Err(fail(exit_code::USAGE, "say where the value comes from: --from-env VAR or --from-file FILE (- for stdin); never on the command line")),
            }
            let store = open_store(true)?;
            store.set(&name, value).map_err(|e| anyhow!("{e}"))?;
            say!(
                "ironcage: secret `{name}` stored in {}",
                store.path().display()
            );
            Ok(0)
        }
        SecretCmd::List { json } => {
            let store = open_store(false)?;
            let list = store.list().map_err(|e| anyhow!("{e}"))?;
            if json {
                out!("{}", serde_json::to_string(&list)?);
            } else {
                for s in list {
                    out!("{}\tupdated {}", s.name, s.updated);
                }
            }
            Ok(0)
        }
        SecretCmd::Rm { name } => {
            let store = open_store(false)?;
            if store.remove(&name).map_err(|e| anyhow!("{e}"))? {
                Ok(0)
            } else {
                Err(fail(1, format!("no secret named `{name}`")))
            }
        }
    }
}

/// `ironcage gateway`: prints one JSON line (address, base URLs, key) and serves until
/// SIGINT/SIGTERM.
pub fn gateway(args: GatewayArgs) -> Result<i32> {
    let is_root = crate::paths::is_root();
    let llm = match (&args.profile, &args.policy) {
        (None, None) => ironcage_policy::Llm::default(),
        (profile, policy) => {
            crate::commands::load_policy(profile.as_deref(), policy.as_deref())?.llm
        }
    };
    let budget = Usd::parse(&args.budget_usd).map_err(|e| {
        fail(
            exit_code::USAGE,
            format!("--budget-usd `{}`: {e}", args.budget_usd),
        )
    })?;
    let log: governance::SharedLog = Arc::new(std::sync::Mutex::new(match &args.audit_log {
        Some(p) => Some((crate::commands::open_audit_log(p, is_root)?, p.clone())),
        None => None,
    }));
    let (tx, writer) = if args.audit_log.is_some() {
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::clone(&log);
        (
            Some(tx),
            Some(std::thread::spawn(move || {
                governance::audit_writer(log, rx)
            })),
        )
    } else {
        (None, None)
    };
    let sink = governance::audit_sink(tx, None);
    let (gw, key, _) =
        governance::gateway_for(&llm, is_root, &args.llm_upstream, "gateway", budget, sink)?;
    let gw = Arc::new(gw);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| fail(exit_code::USAGE, format!("--listen {}: {e}", args.listen)))?;
        let addr = listener.local_addr()?;
        out!(
            "{}",
            serde_json::json!({
                "listen": addr.to_string(),
                "openai_base_url": format!("http://{addr}/llm/openai/v1"),
                "anthropic_base_url": format!("http://{addr}/llm/anthropic"),
                "api_key": key,
                "budget_usd": budget.to_decimal_string(),
            })
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(ironcage_gateway::serve::serve(
            Arc::clone(&gw),
            listener,
            stop_rx,
        ));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        governance::drain(&gw).await;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(gw);
    drop(rt);
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(0)
}
