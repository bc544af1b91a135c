//! Serving the gateway on a listener of its own (`ironcage run`, `ironcage gateway`).

use crate::Gateway;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Connections served at once on one listener.
pub const MAX_CONNECTIONS: usize = 512;

/// Accepts connections until `stop` turns true, then lets open requests finish (streams
/// included) before returning.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(a) => a,
                    // Out of descriptors or memory: back off rather than spin on it.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A sandbox opening connection after connection costs the supervisor a
                // descriptor and a task each: past the cap, new ones are closed at once.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let gw = Arc::clone(&gw);
                let stop = stop.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    let svc = service_fn(move |req| {
                        let gw = Arc::clone(&gw);
                        async move { Ok::<_, Infallible>(gw.handle(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .header_read_timeout(std::time::Duration::from_secs(30))
                        .timer(hyper_util::rt::TokioTimer::new())
                        .serve_connection(TokioIo::new(tcp), svc);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stopped(stop.clone()) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = stopped(stop.clone()) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}
