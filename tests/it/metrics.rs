//! `GET /metrics` after real activity: card reads over JSON-RPC, flows that succeed and fail, a
//! card pulled out of its reader. The series must count exactly what happened, and the
//! endpoint must sit behind the same Host check as the API.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use cardd::events::EventKind;
use common::TestDaemon;
use serde_json::json;

const PROBE_OK: &str = r#"
return {
  name = "probe.balance", version = "1.0.0", title = "余额", role = { "teller" }, params = {},
  run = function(ctx, params) return { balance = card.balance() } end,
}
"#;

const PROBE_FAIL: &str = r#"
return {
  name = "probe.fail", version = "1.0.0", title = "失败", role = { "teller" }, params = {},
  run = function(ctx, params) error("故意失败") end,
}
"#;

/// The samples of an OpenMetrics text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v)))
        .collect()
}

fn value(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    *all.get(key)
        .unwrap_or_else(|| panic!("{key} is not among the series: {all:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reads_flows_removals_and_flushes() {
    let flows = tempfile::tempdir().expect("flows dir");
    std::fs::write(flows.path().join("probe_balance.lua"), PROBE_OK).expect("write flow");
    std::fs::write(flows.path().join("probe_fail.lua"), PROBE_FAIL).expect("write flow");
    let world_name = format!("metrics-{}", std::process::id());
    let (name, dir) = (world_name.clone(), flows.path().to_path_buf());
    let d = TestDaemon::start_with(move |c| {
        c.readers[0].options = json!({ "world": name });
        c.flows.dir = Some(dir);
    })
    .await;
    let world = cardd_sim::named_world(&world_name).expect("the daemon's simulated world");
    let teller = d.login("teller", "teller123").await;

    for _ in 0..2 {
        let b = d
            .ok(
                "card.balance",
                json!({"reader_id": "sim:etc"}),
                Some(&teller),
            )
            .await;
        assert_eq!(b["balance"], "100.00", "{b}");
    }
    let engine = d.daemon().flows.as_ref().expect("flow engine");
    for (flow, expected) in [("probe.balance", "succeeded"), ("probe.fail", "failed")] {
        let run = d
            .ok(
                "flows.start",
                json!({"flow": flow, "idempotency_key": flow, "reader_id": "sim:etc"}),
                Some(&teller),
            )
            .await;
        let done = engine
            .wait_finished(run["run_id"].as_str().unwrap(), Duration::from_secs(30))
            .await
            .expect("run record");
        assert_eq!(format!("{:?}", done.state).to_lowercase(), expected);
    }

    // The monitor has counted the removal once the bus carries it.
    let mut bus = d.daemon().events.subscribe();
    world.remove_card("sim:etc").expect("the demo ETC card");
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = bus.recv().await {
            if matches!(event.kind, EventKind::CardRemoved { .. }) {
                return;
            }
        }
        panic!("the event bus closed");
    })
    .await
    .expect("the removal is announced");
    let (code, _) = d
        .err(
            "card.balance",
            json!({"reader_id": "sim:etc"}),
            Some(&teller),
        )
        .await;
    let refused = cardd_api::ErrorCode::ALL
        .iter()
        .find(|c| c.code() as i64 == code)
        .expect("a known error code")
        .name();

    let reply = d
        .raw(format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            d.host()
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.headers
    );
    assert!(reply.body.trim_end().ends_with("# EOF"), "{}", reply.body);
    let all = samples(&reply.body);
    // Two balance reads over JSON-RPC, one refused once the card was gone.
    assert_eq!(
        value(
            &all,
            r#"cardd_rpc_requests_total{method="card.balance",outcome="ok"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            &format!(r#"cardd_rpc_requests_total{{method="card.balance",outcome="{refused}"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"cardd_rpc_duration_seconds_count{method="card.balance"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &all,
            r#"cardd_rpc_requests_total{method="auth.login",outcome="ok"}"#
        ),
        1.0
    );
    // The reads and the successful flow reached the card: APDUs were timed on its reader.
    assert!(
        value(
            &all,
            r#"cardd_apdu_duration_seconds_count{reader="sim:etc"}"#
        ) >= 3.0
    );
    assert_eq!(
        value(
            &all,
            r#"cardd_flow_runs_total{flow="probe.balance",outcome="succeeded"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"cardd_flow_runs_total{flow="probe.fail",outcome="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"cardd_flow_duration_seconds_count{flow="probe.fail"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&all, r#"cardd_card_removals_total{reader="sim:etc"}"#),
        1.0
    );
    // The read after the removal found no card in the reader.
    assert_eq!(
        value(
            &all,
            r#"cardd_apdu_failures_total{reader="sim:etc",kind="no_card"}"#
        ),
        1.0
    );
    // The login's audit record and each run's record were made durable.
    assert!(value(&all, "cardd_journal_flush_duration_seconds_count") >= 3.0);

    // Behind the Host check like everything else on the listener.
    let foreign = d
        .raw("GET /metrics HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".into())
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    d.stop().await;
}
