//! A request body as a blocking `std::io::Read`, for the engine and image
//! calls that consume archives (`load`, `import`, `cp` into a container)
//! on blocking threads: the body streams through a small bounded channel,
//! so an archive of any size never sits in memory whole.

use std::io::{self, Read};

use axum::body::Body;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;

/// Reads a request body on a blocking thread.
#[derive(Debug)]
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

/// How much of a body the pump still reads, and discards, after its reader
/// went away (the archive ended, or its consumer failed), so the client's
/// last writes (tar's end-of-archive padding, say) land and it reads the
/// response instead of a broken pipe. A client that keeps sending past
/// this gets its response anyway and the connection is closed.
const DRAIN_CAP: usize = 16 << 20;

/// The longest a response waits for the rest of its request body.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Completes once the pump is done with the request body: all of it read,
/// or the drain cap reached, or the client gone, or [`DRAIN_WAIT`] passed
/// (a client that stalls mid-body does not hold its response forever).
/// Await it before responding.
#[derive(Debug)]
pub struct BodyDone(tokio::task::JoinHandle<()>);

impl BodyDone {
    /// Waits for the pump.
    pub async fn wait(self) {
        let _ = tokio::time::timeout(DRAIN_WAIT, self.0).await;
    }
}

/// Starts pumping `body` (from the async side) into a [`BodyReader`].
pub fn blocking_reader(body: Body) -> (BodyReader, BodyDone) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let pump = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut tx = Some(tx);
        let mut drained = 0usize;
        while let Some(chunk) = stream.next().await {
            let Some(sender) = &tx else {
                drained += chunk.map(|c| c.len()).unwrap_or(DRAIN_CAP);
                if drained >= DRAIN_CAP {
                    return;
                }
                continue;
            };
            let item = chunk.map_err(io::Error::other);
            if item.is_err() {
                let _ = sender.send(item).await;
                return;
            }
            // The reader went away (it failed or finished): drain the rest.
            if sender.send(item).await.is_err() {
                tx = None;
            }
        }
    });
    (BodyReader { rx, cur: Bytes::new() }, BodyDone(pump))
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
