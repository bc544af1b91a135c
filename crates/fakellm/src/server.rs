//! The HTTP/1.1 server (hyper): accepts connections with `TCP_NODELAY`, keeps them alive,
//! logs provider requests, serves the `/_fake/` control endpoints and puts [`Answer`]s on the
//! wire, including the stream steps that drop the connection on purpose. Decides nothing
//! about providers.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::answer::{self, Answer, Step};
use crate::reqlog::RequestLog;
use crate::router::{self, Incoming};

/// Largest request body accepted.
pub const MAX_BODY: usize = 32 << 20;

/// How long a cut waits after sending its partial bytes, so they reach the socket before the
/// connection is dropped.
const CUT_PAUSE: Duration = Duration::from_millis(30);

/// Server-wide state.
pub struct State {
    /// When set, provider requests with any other key get a 401.
    pub require_key: Option<String>,
    pub log: RequestLog,
}

/// Serves `listener` until the future is dropped. Accept errors (such as running out of file
/// descriptors) are reported and retried, never fatal.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("fakellm: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("fakellm: set TCP_NODELAY: {e}");
        }
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            // Errors here are clients going away or our own deliberate cuts.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<OutBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let a = answer::Answer::json(
                400,
                &json!({"error": {"message": format!("could not read the request body: {e}"), "type": "invalid_request_error", "param": null, "code": null}}),
            );
            return Ok(deliver(a).await);
        }
    };
    let path = parts.uri.path();
    if path.starts_with("/_fake/") {
        return Ok(deliver(control(&state, parts.method.as_str(), path)).await);
    }
    let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
    state.log.record(
        parts.method.as_str(),
        path_and_query,
        parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
        &body,
    );
    let answer = {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let incoming = Incoming {
            method: parts.method.as_str(),
            path,
            header: &header,
            body: &body,
        };
        router::route(&incoming, state.require_key.as_deref())
    };
    Ok(deliver(answer).await)
}

/// `/_fake/health`, `/_fake/requests` (GET lists, DELETE clears).
fn control(state: &State, method: &str, path: &str) -> Answer {
    match (method, path) {
        ("GET", "/_fake/health") => Answer::json(200, &json!({"status": "ok"})),
        ("GET", "/_fake/requests") => Answer::json(200, &state.log.snapshot()),
        ("DELETE", "/_fake/requests") => Answer::json(200, &json!({"cleared": state.log.clear()})),
        _ => Answer::json(
            404,
            &json!({"error": {"message": format!("unknown control endpoint {method} {path}"), "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    }
}

/// Waits out the answer's delay, then builds the response; a streamed body is fed by a task
/// that owns the timing of its steps.
async fn deliver(answer: Answer) -> Response<OutBody> {
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let body = match answer.body {
        answer::Body::Full(bytes) => OutBody::Full(Some(bytes)),
        answer::Body::Stream { steps, gap } => {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(feed(steps, gap, tx));
            OutBody::Channel(rx)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            response.headers_mut().append(name, v);
        }
    }
    response
}

async fn feed(steps: Vec<Step>, gap: Duration, tx: mpsc::Sender<io::Result<Bytes>>) {
    for (i, step) in steps.into_iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        match step {
            Step::Send(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
            }
            Step::Cut(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
                // Let hyper flush the partial bytes; then an error makes it drop the
                // connection without finishing the body.
                tokio::time::sleep(CUT_PAUSE).await;
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "fake cut");
                let _ = tx.send(Err(cut)).await;
                return;
            }
        }
    }
}

/// A response body: whole, or fed through a channel by [`feed`].
pub enum OutBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<io::Result<Bytes>>),
}

impl hyper::body::Body for OutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            OutBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            OutBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, OutBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            OutBody::Full(None) => SizeHint::with_exact(0),
            OutBody::Channel(_) => SizeHint::default(),
        }
    }
}
