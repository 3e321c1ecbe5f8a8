//! A bare HTTP/1.1 client over one kept-alive connection, like `wrk`: the request is written
//! as bytes, the answer read back by its `content-length`. The ceiling uses it so that what
//! it measures is the network and the sink, not a client library; the drivers use it so that
//! the load they put on the machine stays small beside the gateway's.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, addr, buf: Vec::with_capacity(4096) })
    }

    /// Sends a request made by [`request`] and reads its answer.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.stream.write_all(request).await.with_context(|| format!("write to {}", self.addr))?;
        loop {
            if let Some(head) = find(&self.buf, b"\r\n\r\n") {
                let (status, length) = parse_head(&self.buf[..head])?;
                let end = head + 4 + length;
                while self.buf.len() < end {
                    self.fill().await?;
                }
                let body = self.buf[head + 4..end].to_vec();
                self.buf.drain(..end);
                return Ok(Answer { status, body });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.with_context(|| format!("read from {}", self.addr))?;
        if n == 0 {
            bail!("{} closed the connection", self.addr);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// A request's bytes: `method path`, the given headers, and `body` (with its length).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status and `content-length` of an answer's head (the servers it talks to, the sink
/// and the gateway's API, always send one; anything else is an error, not a guess).
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let head = std::str::from_utf8(head).context("an answer's head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().with_context(|| format!("bad content-length `{value}`"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("the answer is `transfer-encoding: {}`; this client reads only content-length", value.trim());
        }
    }
    Ok((status, length.unwrap_or(0)))
}
