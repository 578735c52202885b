//! The V2 inference protocol over gRPC (`inference.GRPCInferenceService`, KServe's
//! `grpc_predict_v2.proto`), on the gateway and on the model server.
//!
//! Each call is answered by the same code that answers the HTTP protocol: it is
//! turned into the V2 HTTP request (`convert`), handed to the gateway's or the model
//! server's request handler, and the answer turned back. Through the gateway a gRPC
//! request is therefore routed, queued, woken from zero, balanced and counted exactly
//! as an HTTP one, and it reaches the replica as HTTP with binary tensors.
//!
//! ```text
//! ModelInfer ─► POST /v2/models/m/infer (binary inputs, binary outputs asked)
//!            ─► Gateway::handle_request | ModelServer::handle_request
//!            ─► raw_output_contents (or the HTTP error as a gRPC status)
//! ```

pub mod convert;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use gpuctl_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use gpuctl_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use tonic::{Response, Status};

use crate::gateway::Gateway;
use crate::model_server::ModelServer;
use crate::protocol::HEADER_LENGTH;

/// What answers V2 HTTP requests: the gateway or a model server.
pub trait V2Http: Send + Sync + 'static {
    /// The status, headers and whole body of the answer to `req`.
    fn call(
        &self,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = (StatusCode, HeaderMap, Bytes)> + Send;
}

impl V2Http for Gateway {
    async fn call(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = self.handle_request(req).await.into_parts();
        match body.collect().await {
            Ok(b) => (parts.status, parts.headers, b.to_bytes()),
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                Bytes::from(crate::protocol::error_body(&format!(
                    "the replica broke off its response: {e}"
                ))),
            ),
        }
    }
}

impl V2Http for ModelServer {
    async fn call(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = self.handle_request(req).await.into_parts();
        // A Full body cannot fail.
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (parts.status, parts.headers, bytes)
    }
}

/// The headers a gRPC caller's metadata carries over to the HTTP request: the
/// endpoint's API key or bearer token (the gateway checks and strips them).
const FORWARDED: [&str; 2] = ["authorization", crate::gateway::API_KEY_HEADER];

/// `GRPCInferenceService` in front of `B`.
pub struct InferenceService<B> {
    backend: Arc<B>,
}

impl<B> InferenceService<B> {
    pub fn new(backend: Arc<B>) -> InferenceService<B> {
        InferenceService { backend }
    }
}

impl<B: V2Http> InferenceService<B> {
    async fn http<T>(
        &self,
        from: &tonic::Request<T>,
        method: Method,
        path: &str,
        body: Vec<u8>,
        header_length: Option<usize>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = method;
        *req.uri_mut() = match path.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    HeaderMap::new(),
                    Bytes::from(crate::protocol::error_body(&format!("bad path {path:?}"))),
                )
            }
        };
        let headers = req.headers_mut();
        for name in FORWARDED {
            if let Some(v) = from.metadata().get(name).and_then(|v| v.to_str().ok()) {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            }
        }
        if let Some(n) = header_length {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        self.backend.call(req).await
    }

    async fn get<T>(&self, from: &tonic::Request<T>, path: &str) -> Result<Bytes, Status> {
        let (status, _, body) = self.http(from, Method::GET, path, Vec::new(), None).await;
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(convert::status_of(status, &body))
        }
    }
}

#[tonic::async_trait]
impl<B: V2Http> GrpcInferenceService for InferenceService<B> {
    async fn server_live(
        &self,
        _: tonic::Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        req: tonic::Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let (status, _, _) = self
            .http(&req, Method::GET, "/v2/health/ready", Vec::new(), None)
            .await;
        Ok(Response::new(ServerReadyResponse {
            ready: status == StatusCode::OK,
        }))
    }

    async fn model_ready(
        &self,
        req: tonic::Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let m = req.get_ref();
        let path = convert::model_path(&m.name, &m.version, "/ready")?;
        let (status, _, body) = self.http(&req, Method::GET, &path, Vec::new(), None).await;
        match status {
            StatusCode::OK => Ok(Response::new(ModelReadyResponse { ready: true })),
            // An unknown model (or version) is an error naming it, as over HTTP;
            // a known one that cannot serve yet is "not ready".
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => {
                Err(convert::status_of(status, &body))
            }
            _ => Ok(Response::new(ModelReadyResponse { ready: false })),
        }
    }

    async fn server_metadata(
        &self,
        req: tonic::Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let body = self.get(&req, "/v2").await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Status::internal(format!("server metadata: invalid JSON: {e}")))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let extensions = v
            .get("extensions")
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(ServerMetadataResponse {
            name: s("name"),
            version: s("version"),
            extensions,
        }))
    }

    async fn model_metadata(
        &self,
        req: tonic::Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let m = req.get_ref();
        let path = convert::model_path(&m.name, &m.version, "")?;
        let body = self.get(&req, &path).await?;
        Ok(Response::new(convert::metadata_response(&body)?))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let m = req.get_ref();
        let path = convert::model_path(&m.model_name, &m.model_version, "/infer")?;
        let (body, header) = convert::infer_body(m)?;
        let (status, headers, body) = self
            .http(&req, Method::POST, &path, body, Some(header))
            .await;
        if status != StatusCode::OK {
            return Err(convert::status_of(status, &body));
        }
        let header = headers
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Response::new(convert::infer_response(&body, header)?))
    }
}

/// Serves `GRPCInferenceService` for `backend` on `listener` (TLS when `tls` is
/// given) until `shutdown`; messages up to `max_message` bytes.
pub async fn serve<B: V2Http>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    tls: Option<&gpuctl_security::tls::Tls>,
    max_message: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder =
            builder.tls_config(t.server_config(gpuctl_security::tls::ClientAuth::Optional)?)?;
    }
    let service = GrpcInferenceServiceServer::new(InferenceService::new(backend))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
