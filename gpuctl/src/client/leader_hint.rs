//! The replica a follower names as the leader (its `gpuctl-leader` response
//! header, on every answer): a [`super::Conn`]'s connections note it, so
//! that the command's next calls go to the leader directly instead of being
//! forwarded by the follower.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codegen::http;

/// The leader URL the last answer named, if any; shared by the clones of
/// every connection of one [`super::Conn`].
#[derive(Clone, Default, Debug)]
pub struct LeaderNote(Arc<Mutex<Option<String>>>);

impl LeaderNote {
    /// The URL noted since the last take.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn set(&self, leader: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader);
    }
}

/// A service (a gRPC channel) that notes the leader header of its answers.
#[derive(Clone, Debug)]
pub struct Noting<S> {
    inner: S,
    note: LeaderNote,
}

impl<S> Noting<S> {
    pub fn new(inner: S, note: LeaderNote) -> Noting<S> {
        Noting { inner, note }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Noting<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let note = self.note.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            if let Some(leader) = resp
                .headers()
                .get(gpuctl_proto::LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                note.set(leader.to_string());
            }
            Ok(resp)
        })
    }
}

/// Which of `urls` the next call goes to after an answer from `urls[i]`
/// that named `leader`: the leader's, when it is one of them; else `i`.
pub fn next_replica(urls: &[String], i: usize, leader: Option<&str>) -> usize {
    leader
        .and_then(|l| urls.iter().position(|u| gpuctl_proto::same_replica(u, l)))
        .unwrap_or(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request with `header` (if any) set to `value`.
    #[derive(Clone)]
    struct Answer(Option<&'static str>);

    impl tower::Service<http::Request<()>> for Answer {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<()>, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut r = http::Response::new(());
            if let Some(v) = self.0 {
                r.headers_mut()
                    .insert(gpuctl_proto::LEADER_HEADER, v.parse().unwrap());
            }
            std::future::ready(Ok(r))
        }
    }

    #[tokio::test]
    async fn a_followers_answer_notes_the_leader_and_a_leaders_notes_nothing() {
        use tower::Service as _;
        let note = LeaderNote::default();
        let mut leader = Noting::new(Answer(None), note.clone());
        leader.call(http::Request::new(())).await.unwrap();
        assert_eq!(note.take(), None);
        let mut follower = Noting::new(Answer(Some("https://127.0.0.1:7200")), note.clone());
        follower.call(http::Request::new(())).await.unwrap();
        assert_eq!(note.take().as_deref(), Some("https://127.0.0.1:7200"));
        assert_eq!(note.take(), None, "taken once");
    }

    #[test]
    fn the_next_call_goes_to_the_named_leader_when_it_is_known() {
        let urls: Vec<String> = ["https://127.0.0.1:7100", "https://127.0.0.1:7200/"]
            .map(String::from)
            .into();
        assert_eq!(next_replica(&urls, 0, Some("https://127.0.0.1:7200")), 1);
        // The membership's form of the URL (no scheme) names it too.
        assert_eq!(next_replica(&urls, 0, Some("127.0.0.1:7200")), 1);
        assert_eq!(next_replica(&urls, 0, Some("https://10.0.0.9:7000")), 0);
        assert_eq!(next_replica(&urls, 1, None), 1);
    }
}
