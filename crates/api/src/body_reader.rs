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

/// Starts pumping `body` (from the async side) into a [`BodyReader`].
pub fn blocking_reader(body: Body) -> BodyReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(io::Error::other);
            let stop = item.is_err();
            // The reader went away (it failed or finished): stop reading.
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    BodyReader { rx, cur: Bytes::new() }
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
