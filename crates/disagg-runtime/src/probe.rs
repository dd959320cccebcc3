//! A tiny HTTP/1.1 health probe: is `GET /health` answered with 200? Used while waiting for an
//! engine or the router; a plain socket keeps it independent of any server's client stack.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `Ok(true)` on a 200, `Ok(false)` on another status; `Err` when nobody answers.
pub async fn health(addr: &str, timeout: Duration) -> std::io::Result<bool> {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut head[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        // "HTTP/1.1 200 ..."
        Ok(head.get(9..12) == Some(b"200".as_slice()))
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer to GET /health",
        )),
    }
}
