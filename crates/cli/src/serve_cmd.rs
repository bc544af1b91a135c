//! `ironcage serve` and `ironcage key`: configuration from file, environment and flags,
//! then the server crate does the work.

use crate::cli::{KeyCmd, ServeArgs, StoreArgs};
use crate::commands::{fail, out};
use anyhow::Result;
use ironcage_sandbox::exit_code;
use ironcage_server::{Config, Overrides};

fn config(store: &StoreArgs, more: Overrides) -> Result<Config> {
    let file = store
        .config
        .clone()
        .or_else(|| std::env::var_os("IRONCAGE_CONFIG").map(Into::into));
    let flags = Overrides {
        data_dir: store.data_dir.clone(),
        database_url: store.database_url.clone(),
        ..more
    };
    Config::load(file.as_deref(), &|k| std::env::var(k).ok(), &flags)
        .map_err(|e| fail(exit_code::USAGE, e))
}

pub fn serve(args: ServeArgs) -> Result<i32> {
    let cfg = config(
        &args.store,
        Overrides {
            listen: args.listen,
            port: args.port,
            pool_size: args.pool_size,
            log_level: args.log_level,
            ..Overrides::default()
        },
    )?;
    let mut cfg = cfg;
    // The provider keys `ironcage secret set` stored, unless the config names another store.
    let is_root = crate::paths::is_root();
    // (No home directory to find them in: no stored keys, as with no store.)
    if cfg.llm.secrets_file.is_none() {
        cfg.llm.secrets_file = crate::governance::secrets_path(is_root).ok();
    }
    if cfg.llm.master_key_file.is_none() {
        cfg.llm.master_key_file = crate::governance::master_key_path(is_root).ok();
    }
    ironcage_server::serve::serve(cfg)
        .map_err(|e| fail(exit_code::SETUP_FAILED, format!("{e:#}")))?;
    Ok(0)
}

pub fn key(cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::Create {
            store,
            name,
            rate_limit,
            max_concurrent,
            json,
        } => {
            let cfg = config(&store, Overrides::default())?;
            let created = ironcage_server::serve::with_store(&cfg, async |s| {
                Ok(ironcage_server::keys::create(s, &name, rate_limit, max_concurrent).await?)
            })
            .map_err(|e| fail(exit_code::USAGE, format!("{e:#}")))?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({"id": created.key.id, "name": created.key.name, "key": created.secret})
                );
            } else {
                out!("{}", created.secret);
                crate::commands::say!(
                    "ironcage: created key {} ({}); it is shown only now: store it safely",
                    created.key.id,
                    created.key.name
                );
            }
            Ok(0)
        }
        KeyCmd::List { store, json } => {
            let cfg = config(&store, Overrides::default())?;
            let keys =
                ironcage_server::serve::with_store(&cfg, async |s| Ok(s.list_keys().await?))
                    .map_err(|e| fail(exit_code::USAGE, format!("{e:#}")))?;
            if json {
                out!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                out!(
                    "{:<16} {:<24} {:<12} {:<8} NAME",
                    "ID",
                    "CREATED",
                    "PREFIX",
                    "STATE"
                );
                for k in keys {
                    out!(
                        "{:<16} {:<24} {:<12} {:<8} {}",
                        k.id,
                        k.created_ms,
                        k.prefix,
                        if k.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        k.name
                    );
                }
            }
            Ok(0)
        }
        KeyCmd::Revoke { store, key } => {
            let cfg = config(&store, Overrides::default())?;
            let n =
                ironcage_server::serve::with_store(&cfg, async |s| Ok(s.revoke_key(&key).await?))
                    .map_err(|e| fail(exit_code::USAGE, format!("{e:#}")))?;
            if n == 0 {
                return Err(fail(
                    exit_code::USAGE,
                    format!("no active key with id or name {key:?}"),
                ));
            }
            crate::commands::say!("ironcage: revoked {n} key(s) named {key:?}");
            Ok(0)
        }
    }
}
