//! One client write for what the upstream sent in one go.
//!
//! hyper's client hands a response body over one chunk at a time (its body channel holds one
//! chunk), and its server flushes whenever the body it writes has nothing ready. Relayed as is,
//! a 9-event stream that arrived in one TCP read costs 9 `writev`s towards the client, where a
//! reverse proxy pays one. [`Coalesce`] gives the upstream connection's task one scheduler turn
//! to pass on what it has already read, and writes everything that came out of that turn
//! together. It never waits for the network: once a turn brings nothing new, what it holds goes
//! out.

use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Beyond this a batch goes out even if more is ready, so a fast upstream streams rather than
/// fills memory.
const MAX_BATCH: usize = 64 * 1024;

/// Scheduler turns to wait, after the last chunk taken, for the upstream connection's task to
/// pass on the next one. Measured with hyper 1.12 on the edge's current-thread runtimes: a chunk
/// the connection already holds arrives on the second turn, never later.
const IDLE_TURNS: u8 = 2;

pub struct Coalesce<S> {
    inner: S,
    batch: Batch,
    ended: bool,
    idle_turns: u8,
}

impl<S: Stream<Item = Bytes> + Unpin> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, batch: Batch::default(), ended: false, idle_turns: 0 }
    }

    /// Before the response head is handed to hyper: takes what is already there, the same way
    /// [`Self::poll_chunk`] does, so the head and the first events share one write. (hyper
    /// flushes its buffer whenever the body is not ready, head included.)
    pub async fn prefetch(&mut self) {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await;
    }

    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        ready!(self.poll_fill(cx));
        self.idle_turns = 0;
        // Ready from `poll_fill` means something is held, or the stream ended.
        Poll::Ready(self.batch.take())
    }

    /// Ready when the batch should go out: it is full, the stream ended, or the turns passed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ended {
            return Poll::Ready(());
        }
        loop {
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(b)) => {
                    self.batch.push(b);
                    self.idle_turns = 0;
                    if self.batch.len >= MAX_BATCH {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(());
                }
                Poll::Pending if self.batch.len > 0 && self.idle_turns < IDLE_TURNS => {
                    // Taking a chunk woke the upstream connection's task; let it run before the
                    // write, so what it already holds joins this one. Holding nothing, there is
                    // nothing to join and nothing to wait for.
                    self.idle_turns += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending if self.batch.len > 0 => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Chunks joined into one, the first without a copy.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Option<BytesMut>,
    len: usize,
}

impl Batch {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        match (&mut self.first, &mut self.more) {
            (None, _) => self.first = Some(b),
            (Some(_), Some(m)) => m.extend_from_slice(&b),
            (Some(f), None) => {
                let mut m = BytesMut::with_capacity(f.len() + b.len() * 8);
                m.extend_from_slice(f);
                m.extend_from_slice(&b);
                self.more = Some(m);
            }
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        self.len = 0;
        let first = self.first.take();
        match self.more.take() {
            Some(m) => Some(m.freeze()),
            None => first,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Yields its chunks in turns: each `None` in the script is one `Pending`.
    struct Script(VecDeque<Option<&'static str>>);

    impl Stream for Script {
        type Item = Bytes;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Bytes>> {
            match self.0.pop_front() {
                Some(Some(s)) => Poll::Ready(Some(Bytes::from_static(s.as_bytes()))),
                Some(None) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every poll's outcome (`None` for `Pending`) and how often the wrapper woke itself.
    fn drain(script: &[Option<&'static str>]) -> (Vec<Option<String>>, usize) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = count.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Script(script.iter().copied().collect()));
        let mut out = Vec::new();
        for _ in 0..100 {
            match c.poll_chunk(&mut cx) {
                Poll::Ready(Some(b)) => out.push(Some(String::from_utf8_lossy(&b).into_owned())),
                Poll::Ready(None) => return (out, count.0.load(Ordering::Relaxed)),
                Poll::Pending => out.push(None),
            }
        }
        panic!("the stream never ended: {out:?}");
    }

    #[test]
    fn what_arrives_turn_after_turn_goes_out_together() {
        let (out, wakes) = drain(&[Some("a"), None, Some("b"), None, Some("c"), None, None, None, Some("d")]);
        assert_eq!(out, [None, None, None, None, Some("abc".into()), Some("d".into())]);
        assert_eq!(wakes, 4);
    }

    #[test]
    fn nothing_is_held_once_turns_bring_nothing_and_nothing_held_means_no_spinning() {
        let (out, wakes) = drain(&[Some("a"), None, None, None, None, Some("b")]);
        assert_eq!(out, [None, None, Some("a".into()), None, Some("b".into())]);
        assert_eq!(wakes, 2, "the wait with nothing held must not wake itself");
    }

    #[test]
    fn the_end_flushes_what_is_held() {
        assert_eq!(drain(&[Some("a"), Some("b")]).0, [Some("ab".into())]);
        assert_eq!(drain(&[Some("a"), None]).0, [None, Some("a".into())]);
        assert_eq!(drain(&[]).0, Vec::<Option<String>>::new());
    }

    #[test]
    fn a_prefetch_holds_what_is_ready_for_the_first_write() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = count.clone().into();
        let mut cx = Context::from_waker(&waker);
        let script = [Some("a"), None, Some("b"), None, None, None, None, Some("c")];
        let mut c = Coalesce::new(Script(script.into_iter().collect()));
        let mut fill = 0;
        while c.poll_fill(&mut cx).is_pending() {
            fill += 1;
        }
        assert_eq!(fill, 3, "two turns after b, none left over");
        let first = c.poll_chunk(&mut cx);
        assert_eq!(first, Poll::Ready(Some(Bytes::from_static(b"ab"))), "no turn is waited twice");
        assert_eq!(c.poll_chunk(&mut cx), Poll::Ready(Some(Bytes::from_static(b"c"))));
        assert_eq!(c.poll_chunk(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_big_batch_goes_out_without_waiting_for_more() {
        let big: &'static str = Box::leak("x".repeat(MAX_BATCH).into_boxed_str());
        let (out, _) = drain(&[Some(big), Some("y"), None, None, None]);
        let lens: Vec<_> = out.iter().map(|o| o.as_ref().map(String::len)).collect();
        assert_eq!(lens, [Some(MAX_BATCH), None, None, Some(1)]);
    }
}
