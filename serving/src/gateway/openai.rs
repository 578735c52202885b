//! OpenAI-compatible routes on the gateway, for endpoints whose replicas run an
//! OpenAI-compatible server (`protocol: openai`: vLLM, llama.cpp's server, SGLang).
//!
//! ```text
//! GET  /v1/models                 ─► the endpoints that speak OpenAI's API
//! POST /v1/chat/completions       ─► read body, its "model" names the endpoint
//!      /v1/completions            ─► routed as any request (queue, wake from zero,
//!      /v1/embeddings                p2c, API key), path and body unchanged
//!      streamed answers (SSE)     ─► passed through chunk by chunk; the first chunk
//!                                    times the first token, a `usage` counts tokens
//! ```

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::body::whole;
use super::{Gateway, GatewayBody};
use crate::http;

/// The paths routed by the body's `model`.
const ROUTED: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// An error in OpenAI's shape, which its clients read.
fn error(status: StatusCode, message: &str, param: Option<&str>) -> Response<GatewayBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        404 => "not_found_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    whole(http::json_value(
        status,
        &serde_json::json!({"error": {
            "message": message, "type": kind, "param": param, "code": Value::Null,
        }}),
    ))
}

/// The `model` of a request body, or why there is none.
fn model_of(body: &[u8]) -> Result<(String, bool), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let model = match v.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err("`model` must be a non-empty string: an endpoint's name".into()),
        None => return Err("missing `model`: the name of the endpoint to call".into()),
    };
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Ok((model, stream))
}

/// Tokens from a `usage` object: (prompt, completion).
fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some((n("prompt_tokens"), n("completion_tokens")))
}

impl Gateway {
    /// Marks whether `endpoint`'s replicas speak OpenAI's API (`/v1/...` goes to
    /// them) or the V2 protocol.
    pub fn set_openai(&self, endpoint: &str, openai: bool) {
        if let Some(e) = self.lock().get_mut(endpoint) {
            e.openai = openai;
        }
    }

    /// Answers a request under `/v1/`.
    pub(super) async fn openai<B>(&self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if path == "/v1/models" {
            if method != Method::GET {
                let m = "/v1/models: only GET is allowed";
                return error(StatusCode::METHOD_NOT_ALLOWED, m, None);
            }
            let mut names: Vec<String> = (self.lock().iter())
                .filter(|(_, e)| e.openai)
                .map(|(n, _)| n.clone())
                .collect();
            names.sort();
            let data: Vec<Value> = names
                .iter()
                .map(|n| serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": "gpuctl"}))
                .collect();
            return whole(http::json_value(
                StatusCode::OK,
                &serde_json::json!({"object": "list", "data": data}),
            ));
        }
        if !ROUTED.contains(&path.as_str()) {
            let m = format!(
                "no route {path}: the gateway serves /v1/models, {}",
                ROUTED.join(", ")
            );
            return error(StatusCode::NOT_FOUND, &m, None);
        }
        if method != Method::POST {
            let m = format!("{path}: only POST is allowed");
            return error(StatusCode::METHOD_NOT_ALLOWED, &m, None);
        }
        let start = Instant::now();
        let limits = (self.config.max_body_bytes, self.config.body_read_timeout);
        let (parts, body) = match http::read_body(req, limits.0, limits.1).await {
            Ok(x) => x,
            Err(e) => return whole(e.response()),
        };
        let (model, stream) = match model_of(&body) {
            Ok(m) => m,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why, Some("model")),
        };
        let speaks = |gw: &Gateway| gw.lock().get(&model).map(|e| e.openai);
        let mut found = speaks(self);
        if found.is_none() && self.known_after_lookup(&model).await {
            found = speaks(self);
        }
        match found {
            None => {
                let m = format!("The model `{model}` does not exist: no endpoint named {model}");
                return error(StatusCode::NOT_FOUND, &m, Some("model"));
            }
            Some(false) => {
                let m = format!(
                    "endpoint {model} speaks the V2 protocol (/v2/models/{model}/infer), not OpenAI's; an OpenAI-compatible server is declared with spec.protocol: openai"
                );
                return error(StatusCode::BAD_REQUEST, &m, Some("model"));
            }
            Some(true) => {}
        }
        let req = Request::from_parts(parts, Full::new(body));
        let mut resp = self.serve_endpoint(model.clone(), req).await;
        if resp.status() == StatusCode::OK {
            self.observe(&model, stream, start, resp.body_mut()).await;
        }
        resp
    }

    /// Time to first token of a streamed answer, and the tokens its `usage` reports.
    async fn observe(&self, endpoint: &str, stream: bool, start: Instant, body: &mut GatewayBody) {
        let m = &self.metrics;
        let prompt = m.tokens.with_label_values(&[endpoint, "prompt"]);
        let completion = m.tokens.with_label_values(&[endpoint, "completion"]);
        let tps = m.tokens_per_second.with_label_values(&[endpoint]);
        let count = move |(p, c): (u64, u64)| {
            prompt.inc_by(p);
            completion.inc_by(c);
            let secs = start.elapsed().as_secs_f64();
            if c > 0 && secs > 0.0 {
                tps.observe(c as f64 / secs);
            }
        };
        match body {
            GatewayBody::Streamed(s) => {
                let ttft = m.ttft.with_label_values(&[endpoint]);
                let mut first = stream;
                let mut line = Vec::new();
                s.on_frame = Some(Box::new(move |data: &Bytes| {
                    if std::mem::take(&mut first) {
                        ttft.observe(start.elapsed().as_secs_f64());
                    }
                    if !stream {
                        // A whole JSON answer sent in chunks: read its usage once
                        // it parses (bounded).
                        if line.len() + data.len() <= 1 << 20 {
                            line.extend_from_slice(data);
                            if line.trim_ascii_end().ends_with(b"}") {
                                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                                    line = Vec::new();
                                    if let Some(u) = usage_of(&v) {
                                        count(u);
                                    }
                                }
                            }
                        }
                        return;
                    }
                    // Server-sent events: `data: {json}` lines; the chunk that
                    // carries `usage` (stream_options.include_usage) counts tokens.
                    for &b in data.iter() {
                        if b != b'\n' {
                            if line.len() < 1 << 16 {
                                line.push(b);
                            }
                            continue;
                        }
                        let text = std::mem::take(&mut line);
                        let Some(json) = text.strip_prefix(b"data:") else {
                            continue;
                        };
                        if let Ok(v) = serde_json::from_slice::<Value>(json.trim_ascii()) {
                            if let Some(u) = usage_of(&v) {
                                count(u);
                            }
                        }
                    }
                }));
            }
            GatewayBody::Whole(full) => {
                let taken = std::mem::replace(full, Full::new(Bytes::new()));
                let bytes = match taken.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(never) => match never {},
                };
                if let Some(u) = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| usage_of(&v))
                {
                    count(u);
                }
                *full = Full::new(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_comes_from_the_body() {
        assert_eq!(
            model_of(br#"{"model": "llama", "stream": true}"#).unwrap(),
            ("llama".to_string(), true)
        );
        assert_eq!(
            model_of(br#"{"messages": []}"#).unwrap_err(),
            "missing `model`: the name of the endpoint to call"
        );
        assert!(model_of(br#"{"model": 3}"#)
            .unwrap_err()
            .contains("non-empty string"));
        assert!(model_of(b"{")
            .unwrap_err()
            .starts_with("the request body is not valid JSON"));
        let usage = serde_json::json!({"usage": {"prompt_tokens": 5, "completion_tokens": 7}});
        assert_eq!(usage_of(&usage), Some((5, 7)));
        assert_eq!(usage_of(&serde_json::json!({"usage": null})), None);
    }
}
