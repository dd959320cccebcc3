//! The one outgoing call the simulator makes: a decode server asking its prefill server's
//! bootstrap endpoint whether a room is ready (SGLang hand-off). Plain HTTP/1.1 over loopback,
//! so the simulator needs no HTTP client library.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `GET http://host:port/path` and return the status code.
pub async fn get_status(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> std::io::Result<u16> {
    let call = async {
        let mut s = TcpStream::connect((host, port)).await?;
        s.set_nodelay(true)?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}
