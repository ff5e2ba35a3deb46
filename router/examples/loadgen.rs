//! An open-loop load generator for measuring latency at a fixed request rate.
//!
//! `wrk` keeps every connection busy (closed loop), which on a small machine measures CPU
//! contention between the load generator, the router and the backend as much as the router's own
//! cost. This sends requests on a fixed schedule instead, so the machine is not saturated and the
//! latency difference between two targets is what the extra hop costs.
//!
//! ```text
//! loadgen URL RATE SECONDS [HEADER:VALUE ...]
//! ```
//! POSTs a small JSON body to URL, RATE requests per second for SECONDS, and prints one line:
//! `sent=… errors=… non2xx=… late=… p50_us=… p90_us=… p99_us=… p999_us=… max_us=…`, where `late`
//! counts requests sent more than 2 ms behind schedule (the generator itself falling behind; tokio
//! timers have a 1 ms resolution). Latency is measured from the moment a request is sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BODY: &str = r#"{"data": [[1.0, 2.0, 3.0, 4.0]]}"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, rate, seconds, headers @ ..] = args.as_slice() else {
        anyhow::bail!("usage: loadgen URL RATE SECONDS [HEADER:VALUE ...]");
    };
    let rate: u32 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|h| h.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("headers are NAME:VALUE"))?;
    // One worker: the generator must not take more of the machine than it needs.
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?.block_on(run(
        url.clone(),
        rate,
        Duration::from_secs(seconds),
        headers,
    ))
}

#[derive(Default)]
struct Results {
    latencies_us: Vec<u64>,
    errors: u64,
    non_2xx: u64,
}

async fn run(url: String, rate: u32, duration: Duration, headers: Vec<(String, String)>) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let results = Arc::new(Mutex::new(Results::default()));
    let period = Duration::from_secs(1) / rate.max(1);
    let total = u64::from(rate) * duration.as_secs();
    let start = Instant::now();
    let mut late = 0u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + period * u32::try_from(n)?;
        tokio::time::sleep_until(scheduled.into()).await;
        if scheduled.elapsed() > Duration::from_millis(2) {
            late += 1;
        }
        let mut request = Request::post(url.as_str());
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request =
            request.header("content-type", "application/json").body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
        let (client, results) = (client.clone(), Arc::clone(&results));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = match client.request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    response.into_body().collect().await.map(|_| ok).map_err(|_| ())
                }
                Err(_) => Err(()),
            };
            let elapsed = sent.elapsed();
            let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(true) => results.latencies_us.push(elapsed.as_micros() as u64),
                Ok(false) => results.non_2xx += 1,
                Err(()) => results.errors += 1,
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
    results.latencies_us.sort_unstable();
    let lat = &results.latencies_us;
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "sent={total} errors={} non2xx={} late={late} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        results.errors,
        results.non_2xx,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
