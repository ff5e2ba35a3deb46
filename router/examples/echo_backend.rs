//! A minimal, fast HTTP backend for benchmarking the router: answers every request with a small
//! JSON body after reading the request body, optionally after a fixed delay that stands in for a
//! model's inference time.
//!
//! ```text
//! cargo run --release -p atrium-router --example echo_backend -- 127.0.0.1:18081 [delay_ms] [threads]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"result":[0.5]}"#;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:18081").parse()?;
    let delay = Duration::from_millis(args.next().map(|d| d.parse()).transpose()?.unwrap_or(0));
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(addr, delay))
}

async fn serve(addr: SocketAddr, delay: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("echo_backend listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service_fn(move |request: Request<Incoming>| async move {
            // Read the body as a real scoring server would.
            let _ = request.into_body().collect().await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
