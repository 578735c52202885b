//! The body of a gateway response, and the in-flight count it holds.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::Response;
use prometheus::IntGauge;

use crate::upstream::StreamedBody;

/// Counts a request in `gpuctl_gateway_in_flight_requests` while it lives.
pub(super) struct InFlight(IntGauge);

impl InFlight {
    pub(super) fn enter(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The body of a gateway response: made whole, or a replica's response streamed
/// through. A streamed body keeps its request outstanding on the replica (so a
/// draining replica is not stopped under it) and in flight until it ends or the
/// client goes away.
pub enum GatewayBody {
    Whole(Full<Bytes>),
    Streamed(Streamed),
}

/// What [`Streamed::on_frame`] calls with each data frame.
pub(super) type FrameHook = Box<dyn FnMut(&Bytes) + Send>;

pub struct Streamed {
    pub(super) body: StreamedBody,
    /// Released when the body is dropped: the request's slot on its
    /// replica, and its place in the in-flight count.
    pub(super) _held: Box<dyn Send>,
    /// For the log line when the replica breaks off.
    pub(super) endpoint: String,
    pub(super) replica: String,
    /// Called with each data frame as it passes (OpenAI routes: time to first
    /// token, and the usage of a stream that reports it).
    pub(super) on_frame: Option<FrameHook>,
}

impl From<Full<Bytes>> for GatewayBody {
    fn from(b: Full<Bytes>) -> GatewayBody {
        GatewayBody::Whole(b)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            GatewayBody::Whole(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e| match e {}))),
            GatewayBody::Streamed(s) => {
                let frame = std::pin::Pin::new(&mut s.body).poll_frame(cx);
                match &frame {
                    std::task::Poll::Ready(Some(Err(e))) => {
                        tracing::warn!(endpoint = %s.endpoint, replica = %s.replica,
                            "replica broke off a streamed response: {e}");
                    }
                    std::task::Poll::Ready(Some(Ok(f))) => {
                        if let (Some(data), Some(hook)) = (f.data_ref(), s.on_frame.as_mut()) {
                            hook(data);
                        }
                    }
                    _ => {}
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Whole(b) => b.is_end_stream(),
            GatewayBody::Streamed(s) => s.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            GatewayBody::Whole(b) => b.size_hint(),
            GatewayBody::Streamed(s) => s.body.size_hint(),
        }
    }
}

/// A gateway response made whole (errors, health, metrics).
pub(super) fn whole(resp: Response<Full<Bytes>>) -> Response<GatewayBody> {
    resp.map(GatewayBody::Whole)
}
