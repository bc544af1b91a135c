//! Which provider endpoint a request is for, and the key check in front of them. Pure: a
//! method, path, headers and body in, an [`Answer`] out.

use serde_json::Value;

use crate::answer::Answer;
use crate::{anthropic, openai};

/// A request as the router sees it.
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
}

/// Which provider's shapes an answer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    /// Anthropic for `/v1/messages...` and for any request carrying `anthropic-version`
    /// (the Anthropic SDK always sends it), OpenAI otherwise.
    pub fn of(req: &Incoming<'_>) -> Provider {
        if req.path.starts_with("/v1/messages") || (req.header)("anthropic-version").is_some() {
            Provider::Anthropic
        } else {
            Provider::OpenAi
        }
    }

    fn error(self, status: u16, message: &str) -> Answer {
        match self {
            Provider::OpenAi => openai::error(status, message, None),
            Provider::Anthropic => anthropic::error(status, message),
        }
    }
}

/// The key a client sent: `Authorization: Bearer KEY`, else `x-api-key: KEY`.
pub fn presented_key(header: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(auth) = header("authorization") {
        if let Some(key) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            return Some(key.trim().to_string());
        }
    }
    header("x-api-key").map(|k| k.trim().to_string())
}

/// Answers one provider request. `require_key`: when set, any other key gets a 401.
pub fn route(req: &Incoming<'_>, require_key: Option<&str>) -> Answer {
    let provider = Provider::of(req);
    if let Some(want) = require_key {
        if presented_key(req.header).as_deref() != Some(want) {
            let message = match provider {
                Provider::OpenAi => "Incorrect API key provided. You can find your API key at \
                                     https://platform.openai.com/account/api-keys."
                    .to_string(),
                Provider::Anthropic => "invalid x-api-key".to_string(),
            };
            return provider.error(401, &message);
        }
    }
    let json_body = || -> Result<Value, Answer> {
        serde_json::from_slice(req.body).map_err(|e| {
            provider.error(
                400,
                &format!("We could not parse the JSON body of your request: {e}"),
            )
        })
    };
    let post = |f: fn(&Value) -> Answer| match json_body() {
        Ok(v) => f(&v),
        Err(a) => a,
    };
    match (req.method, req.path) {
        ("POST", "/v1/chat/completions") => post(openai::chat),
        ("POST", "/v1/responses") => post(openai::responses),
        ("POST", "/v1/embeddings") => post(openai::embeddings),
        ("POST", "/v1/messages") => post(anthropic::messages),
        ("POST", "/v1/messages/count_tokens") => post(anthropic::count_tokens),
        ("GET", "/v1/models") => match provider {
            Provider::OpenAi => openai::models(),
            Provider::Anthropic => anthropic::models(),
        },
        ("GET", p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            match provider {
                Provider::OpenAi => openai::model(id),
                Provider::Anthropic => anthropic::model(id),
            }
        }
        (
            _,
            "/v1/chat/completions"
            | "/v1/responses"
            | "/v1/embeddings"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/models",
        ) => provider.error(
            405,
            &format!("method {} not allowed on {}", req.method, req.path),
        ),
        _ => provider.error(
            404,
            &format!("unknown path {} {} (fakellm)", req.method, req.path),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Body;

    fn call(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let req = Incoming {
            method,
            path,
            header: &lookup,
            body: body.as_bytes(),
        };
        route(&req, Some("sk-right"))
    }

    fn json_of(a: &Answer) -> Value {
        match &a.body {
            Body::Full(b) => serde_json::from_slice(b).unwrap(),
            Body::Stream { .. } => panic!("stream"),
        }
    }

    #[test]
    fn wrong_key_is_401_in_each_shape() {
        let a = call(
            "POST",
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-wrong")],
            "{}",
        );
        assert_eq!(a.status, 401);
        assert_eq!(json_of(&a)["error"]["code"], "invalid_api_key");
        let a = call("POST", "/v1/messages", &[("x-api-key", "nope")], "{}");
        assert_eq!(a.status, 401);
        assert_eq!(json_of(&a)["error"]["type"], "authentication_error");
    }

    #[test]
    fn both_auth_styles_pass() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let a = call(
            "POST",
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-right")],
            body,
        );
        assert_eq!(a.status, 200);
        let a = call(
            "POST",
            "/v1/messages/count_tokens",
            &[("x-api-key", "sk-right")],
            body,
        );
        assert_eq!(a.status, 200);
    }

    #[test]
    fn models_shape_follows_anthropic_version() {
        let key = ("x-api-key", "sk-right");
        let a = call("GET", "/v1/models", &[key], "");
        assert_eq!(json_of(&a)["object"], "list");
        let a = call(
            "GET",
            "/v1/models",
            &[key, ("anthropic-version", "2023-06-01")],
            "",
        );
        assert_eq!(json_of(&a)["has_more"], false);
    }

    #[test]
    fn unknown_paths_and_bad_json() {
        let key = ("x-api-key", "sk-right");
        assert_eq!(call("GET", "/v2/nothing", &[key], "").status, 404);
        assert_eq!(call("GET", "/v1/chat/completions", &[key], "").status, 405);
        let a = call("POST", "/v1/messages", &[key], "{not json");
        assert_eq!(a.status, 400);
        assert_eq!(json_of(&a)["type"], "error");
    }
}
