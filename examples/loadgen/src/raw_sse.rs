//! An `/sse` response read straight off its TCP socket, for `http://` servers: the request is
//! written by hand, the response head is parsed with `httparse`, and the chunked body is decoded
//! into the caller's buffer. A `fanout` run reads 100,000s of frames a second on the same cores as
//! the server; through reqwest each frame crossed a connection task, a body channel and three body
//! adapters (about 40 % of the subscriber side's CPU in `perf`), which measured the load generator
//! rather than the server. `https://` servers are still read through reqwest.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
const READ_SIZE: usize = 16 * 1024;

/// A chunked HTTP/1.1 response body being decoded.
pub struct ChunkedBody {
    socket: TcpStream,
    /// Bytes read from the socket and not yet decoded start at `at`.
    raw: Vec<u8>,
    at: usize,
    state: Chunk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// The last (zero-size) chunk was read.
    Done,
}

impl ChunkedBody {
    /// Sends `GET path` to `host_port` with the `authorization` header and reads the response head;
    /// fails unless the answer is a 200 with a chunked body.
    pub async fn get(host_port: &str, path: &str, authorization: &str) -> anyhow::Result<Self> {
        let mut socket = TcpStream::connect(host_port)
            .await
            .with_context(|| format!("connecting to {host_port}"))?;
        socket.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: {authorization}\r\n\
             Accept: text/event-stream\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut raw = Vec::with_capacity(READ_SIZE);
        let head_length = loop {
            if socket.read_buf(&mut raw).await? == 0 {
                bail!("{path}: connection closed before the response head");
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(length) = response.parse(&raw)? {
                if response.code != Some(200) {
                    bail!("{path}: status {}", response.code.unwrap_or_default());
                }
                let chunked = response.headers.iter().any(|header| {
                    header.name.eq_ignore_ascii_case("transfer-encoding")
                        && header.value.eq_ignore_ascii_case(b"chunked")
                });
                if !chunked {
                    bail!("{path}: the response body is not chunked");
                }
                break length;
            }
            if raw.len() > MAX_HEAD {
                bail!("{path}: response head over {MAX_HEAD} bytes");
            }
        };
        Ok(Self {
            socket,
            raw,
            at: head_length,
            state: Chunk::Size,
        })
    }

    /// Appends at least one byte of body data to `out`; false once the body (or the connection)
    /// has ended, or on malformed chunk framing.
    pub async fn read_into(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        loop {
            self.decode(out);
            if out.len() > before {
                return true;
            }
            if self.state == Chunk::Done {
                return false;
            }
            // Everything buffered is decoded: keep any partial line and read more.
            self.raw.drain(..self.at);
            self.at = 0;
            self.raw.reserve(READ_SIZE);
            match self.socket.read_buf(&mut self.raw).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Decodes as much of the buffered bytes as is complete. Malformed framing ends the body, as
    /// its last chunk would.
    fn decode(&mut self, out: &mut Vec<u8>) {
        loop {
            let rest = &self.raw[self.at..];
            match self.state {
                Chunk::Done => return,
                Chunk::Size => match httparse::parse_chunk_size(rest) {
                    Err(_) => self.state = Chunk::Done,
                    Ok(httparse::Status::Partial) => return,
                    Ok(httparse::Status::Complete((length, 0))) => {
                        self.at += length;
                        self.state = Chunk::Done;
                    }
                    Ok(httparse::Status::Complete((length, size))) => {
                        self.at += length;
                        self.state = Chunk::Data(size);
                    }
                },
                Chunk::Data(left) => {
                    if rest.is_empty() {
                        return;
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    self.at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataEnd => {
                    if rest.len() < 2 {
                        return;
                    }
                    if &rest[..2] == b"\r\n" {
                        self.at += 2;
                        self.state = Chunk::Size;
                    } else {
                        self.state = Chunk::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `response` (head and body, written in `pieces`) to one connection.
    async fn serve_once(pieces: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            for piece in pieces {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn decodes_chunks_split_anywhere() {
        let address = serve_once(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r",
            b"\n6\r\n world\r\n0\r\n\r\n",
        ])
        .await;
        let mut body = ChunkedBody::get(&address, "/sse", "Bearer x").await.unwrap();
        let mut out = Vec::new();
        while body.read_into(&mut out).await {}
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn refuses_an_error_status_and_a_body_that_is_not_chunked() {
        let address = serve_once(vec![b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"]).await;
        let error = ChunkedBody::get(&address, "/sse", "Bearer x")
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("401"), "{error}");
        let address = serve_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"]).await;
        assert!(ChunkedBody::get(&address, "/sse", "Bearer x").await.is_err());
    }

    #[tokio::test]
    async fn stops_at_bad_framing() {
        let address = serve_once(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX",
        ])
        .await;
        let mut body = ChunkedBody::get(&address, "/sse", "Bearer x").await.unwrap();
        let mut out = Vec::new();
        assert!(body.read_into(&mut out).await);
        assert!(!body.read_into(&mut out).await, "a chunk must end with CRLF");
        assert_eq!(out, b"ab");
    }
}
