//! The APDU path: GET BALANCE through cardd's JSON-RPC against the same APDU sent directly
//! through PC/SC by a native program.
//!
//! The card is a simulated ETC card served to the real pcscd by vsmartcard's vpcd
//! (`cardd_pcsc::vpcd::VpcdBridge`, on vpcd's second slot so the PC/SC tests, which use the
//! first, are not disturbed). The direct client is the `pcsc` crate (SCardTransmit, what a
//! vendor's native teller program does). cardd's path is `card.balance` over HTTP and over
//! WebSocket with an operator's token; the in-process reader worker without JSON-RPC is
//! measured too, so the overhead can be split between the RPC layer and the reader layer.
//! The three paths run in interleaved rounds so that a busy machine slows each alike. A plain
//! TCP round trip on loopback (5 bytes out, 6 back, Nagle off) is measured alongside: it is the
//! floor under any local service's overhead, whatever its protocol.

use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cardd::config::ReaderInstance;
use cardd::readers::Holder;
use cardd_pcsc::vpcd::VpcdBridge;
use cardd_pcsc::{PcscFactory, PcscOptions};
use jsonrpsee::core::client::ClientT;
use serde_json::{json, Value};

use crate::client::{self, BenchDaemon};
use crate::report::{self, Samples};

/// vpcd's second slot (TCP port 35964); the PC/SC tests use the first.
const READER: &str = "Virtual PCD 00 01";
const READER_ID: &str = "pcsc:Virtual PCD 00 01";
const VPCD_PORT: u16 = 35_964;
const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
/// How long pcscd may take to see the card come or go (it polls vpcd every 400 ms).
const SEEN_WAIT: Duration = Duration::from_secs(5);
const SELECT_ADF: [u8; 7] = [0x00, 0xA4, 0x00, 0x00, 0x02, 0x10, 0x01];
const GET_BALANCE: [u8; 5] = [0x80, 0x5C, 0x00, 0x02, 0x04];
/// Interleaved rounds of each path.
const ROUNDS: usize = 5;

pub fn run(runtime: &tokio::runtime::Runtime, samples: usize) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(PCSCD_SOCKET).is_err() {
        bail!("pcscd does not answer on {PCSCD_SOCKET}: run `cargo xtask bench`, which starts it");
    }
    let factory = PcscFactory::new(PcscOptions {
        readers: vec![READER.into()],
        ..PcscOptions::default()
    })?;
    if factory
        .wait_for_card(READER_ID, false, None, SEEN_WAIT)?
        .is_none()
    {
        bail!("a card is already in {READER}: stop whatever serves it (a cardd-vpcd-bridge?)");
    }
    let mut bridge = VpcdBridge::new(cardd_sim::demo::demo_etc_card())
        .with_addr(std::net::SocketAddr::from(([127, 0, 0, 1], VPCD_PORT)));
    bridge
        .insert()
        .context("plugging the simulated card into vpcd")?;
    let seen = factory.wait_for_card(READER_ID, true, None, SEEN_WAIT)?;
    if seen.is_none() {
        bridge.remove();
        bail!("pcscd did not see the card in {READER}");
    }
    let result = runtime.block_on(measure(samples));
    bridge.remove();
    let _ = factory.wait_for_card(READER_ID, false, None, SEEN_WAIT);
    result
}

async fn measure(samples: usize) -> Result<()> {
    let d = BenchDaemon::start(|config, _| {
        config.readers = vec![ReaderInstance {
            driver: "pcsc".into(),
            options: json!({ "readers": [READER] }),
            trace: None,
        }];
    })
    .await?;
    let token = d.login("teller", "teller123").await?;
    let http = client::http(d.addr(), &token)?;
    let ws = client::ws(d.addr(), &token).await?;
    let holder = Holder {
        operator: "teller".into(),
        session: token.clone(),
    };
    let mut direct = Direct::connect()?;
    let mut echo = Echo::start()?;
    // Warm up every path (and let cardd select the application once).
    let mut warm_up = Samples::default();
    for _ in 0..20 {
        direct.balance()?;
    }
    time_rpc(&http, 20, &mut warm_up).await?;
    time_rpc(&ws, 20, &mut warm_up).await?;
    let per_round = (samples / ROUNDS).max(1);
    let mut s_direct = Samples::default();
    let mut s_worker = Samples::default();
    let mut s_http = Samples::default();
    let mut s_ws = Samples::default();
    let mut s_tcp = Samples::default();
    for _ in 0..ROUNDS {
        time_n(&mut s_direct, per_round, || direct.balance().map(|_| ()))?;
        time_n(&mut s_tcp, per_round, || echo.round_trip())?;
        for _ in 0..per_round {
            let started = Instant::now();
            let daemon = d.daemon().clone();
            daemon
                .readers
                .run(READER_ID, &holder, "bench", cardd::summary::balance)
                .await??;
            s_worker.push(started.elapsed());
        }
        time_rpc(&http, per_round, &mut s_http).await?;
        time_rpc(&ws, per_round, &mut s_ws).await?;
    }
    report::figure(
        "apdu.samples_per_path",
        s_direct.len() as f64,
        "round trips",
    );
    s_direct.print("apdu.direct_pcsc");
    s_tcp.print("apdu.loopback_tcp_round_trip");
    s_worker.print("apdu.cardd_reader_worker");
    s_http.print("apdu.cardd_http");
    s_ws.print("apdu.cardd_ws");
    report::ratio("apdu.ws_vs_direct.p50", s_ws.median(), s_direct.median());
    report::ratio(
        "apdu.http_vs_direct.p50",
        s_http.median(),
        s_direct.median(),
    );
    report::ratio(
        "apdu.worker_vs_direct.p50",
        s_worker.median(),
        s_direct.median(),
    );
    report::figure(
        "apdu.ws_overhead_per_apdu.p50",
        s_ws.median() - s_direct.median(),
        "us",
    );
    report::figure(
        "apdu.http_overhead_per_apdu.p50",
        s_http.median() - s_direct.median(),
        "us",
    );
    report::figure(
        "apdu.worker_overhead_per_apdu.p50",
        s_worker.median() - s_direct.median(),
        "us",
    );
    report::ratio(
        "apdu.floor_vs_direct.p50",
        s_direct.median() + s_tcp.median(),
        s_direct.median(),
    );
    drop(direct);
    d.stop().await;
    Ok(())
}

/// `n` calls of `card.balance`, each timed.
async fn time_rpc(rpc: &impl ClientT, n: usize, samples: &mut Samples) -> Result<()> {
    for _ in 0..n {
        let started = Instant::now();
        let _: Value = rpc
            .request("card.balance", client::reader_params(READER_ID))
            .await?;
        samples.push(started.elapsed());
    }
    Ok(())
}

fn time_n(samples: &mut Samples, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..n {
        let started = Instant::now();
        f()?;
        samples.push(started.elapsed());
    }
    Ok(())
}

/// A native PC/SC client: what a vendor's teller program does without cardd.
struct Direct {
    card: pcsc::Card,
    buf: Vec<u8>,
}

impl Direct {
    fn connect() -> Result<Direct> {
        let ctx = pcsc::Context::establish(pcsc::Scope::User).context("SCardEstablishContext")?;
        let name = CString::new(READER)?;
        let card = ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
            .context("SCardConnect")?;
        let mut direct = Direct {
            card,
            buf: vec![0; pcsc::MAX_BUFFER_SIZE],
        };
        let sw = direct.transmit(&SELECT_ADF)?;
        if !sw.ends_with(&[0x90, 0x00]) && sw.first() != Some(&0x61) {
            bail!("SELECT ADF answered {}", hex::encode(sw));
        }
        Ok(direct)
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let response = self
            .card
            .transmit(apdu, &mut self.buf)
            .context("SCardTransmit")?;
        Ok(response.to_vec())
    }

    fn balance(&mut self) -> Result<u32> {
        let r = self.transmit(&GET_BALANCE)?;
        match r.as_slice() {
            [a, b, c, e, 0x90, 0x00] => Ok(u32::from_be_bytes([*a, *b, *c, *e])),
            other => bail!("GET BALANCE answered {}", hex::encode(other)),
        }
    }
}

/// A TCP echo on loopback: the cheapest possible local service (5 bytes in, 6 out).
struct Echo {
    stream: std::net::TcpStream,
}

impl Echo {
    fn start() -> Result<Echo> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 5];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&[0, 0, 0x27, 0x10, 0x90, 0x00]).is_err() {
                    return;
                }
            }
        });
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Echo { stream })
    }

    fn round_trip(&mut self) -> Result<()> {
        use std::io::{Read, Write};
        self.stream.write_all(&GET_BALANCE)?;
        let mut buf = [0u8; 6];
        self.stream.read_exact(&mut buf)?;
        Ok(())
    }
}
