//! The back office (后台) over real HTTP on a real PostgreSQL (`cargo xtask pg -- cargo test
//! -p cardd-host --test backoffice`): the guard (Host, Origin, content type, body size, the
//! policy on every answer), logins (tellers refused, failures throttled), sessions and role
//! checks, the refund evidence rule from the host's own ledger (a booked load is never
//! refunded, a load the host never authorised is; two people), a top-up approved growing the
//! quota, and every change in the `host` audit chain before it acts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use cardd_api::operators::NewOperator;
use cardd_api::Role;
use cardd_group::model::{OrderStatus, PaymentOutcome, ReserveRequest};
use cardd_group::GroupHost;
use cardd_host::backoffice::pages::Stores;
use cardd_host::backoffice::BackOffice;
use cardd_journal::clock::SystemClock;
use cardd_store_pg::{Database, PgAudit, PgGroupHost, PgHost, PgLedger, PgOperators, PgSites};
use serde_json::{json, Value};

#[path = "../../store-pg/tests/common/mod.rs"]
mod common;

/// An HTTP answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str, host: &str) -> Answer {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

fn post(addr: SocketAddr, body: &str, extra: &str) -> Answer {
    request(
        addr,
        &format!(
            "POST /rpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    )
}

/// One call as `token`: the whole reply.
fn call(addr: SocketAddr, token: Option<&str>, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\nOrigin: http://{addr}\r\n"))
        .unwrap_or_default();
    let a = post(addr, &body, &auth);
    assert_eq!(a.status, 200, "{method}: {}", a.body);
    a.json()
}

fn ok(addr: SocketAddr, token: &str, method: &str, params: Value) -> Value {
    let r = call(addr, Some(token), method, params);
    r.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("{method} failed: {r}"))
}

fn refused(addr: SocketAddr, token: Option<&str>, method: &str, params: Value) -> (String, String) {
    let r = call(addr, token, method, params);
    let e = r
        .get("error")
        .unwrap_or_else(|| panic!("{method} succeeded: {r}"));
    (
        e["data"]["name"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn login(addr: SocketAddr, user: &str, password: &str) -> String {
    let r = call(
        addr,
        None,
        "auth.login",
        json!({"username": user, "password": password}),
    );
    r["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{user}: {r}"))
        .to_owned()
}

#[test]
fn the_back_office_over_http_on_postgresql() {
    let fresh = common::FreshDatabase::create();
    let db = Arc::new(Database::open(&fresh.url).expect("database"));
    let clock = Arc::new(SystemClock);
    let operators = Arc::new(PgOperators::new(db.clone(), clock.clone()));
    let groups = Arc::new(PgGroupHost::new(db.clone(), clock.clone()));
    groups.seed_demo().expect("demo groups");
    for (user, role, group) in [
        ("admin1", Role::Admin, None),
        ("auditor1", Role::Auditor, None),
        ("auditor2", Role::Auditor, None),
        ("super1", Role::Supervisor, None),
        ("teller1", Role::Teller, None),
        ("group1", Role::GroupOperator, Some("G001".to_owned())),
    ] {
        operators
            .create(
                &NewOperator {
                    username: user.into(),
                    display_name: user.into(),
                    role,
                    group_id: group,
                    password: format!("{user}-pass-1"),
                },
                "test",
            )
            .expect(user);
    }
    let stores = Stores {
        operators,
        audit: Arc::new(PgAudit::new(db.clone(), clock.clone())),
        groups: groups.clone(),
        ledger: Arc::new(PgLedger::new(db.clone(), clock.clone())),
        sites: Arc::new(PgSites::new(db.clone(), clock.clone())),
        records: Arc::new(PgHost::new(db.clone(), clock.clone())),
        review: Arc::new(cardd_store_pg::PgReview::new(db.clone(), clock.clone())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let backoffice = BackOffice::new(addr, stores);
    runtime.spawn(backoffice.serve(listener, std::future::pending()));

    // The guard: pages with the policy; foreign hosts and origins refused; JSON posts only.
    let page = get(addr, "/", &addr.to_string());
    assert_eq!(page.status, 200);
    assert!(page.body.contains("一卡通后台"), "{}", page.body);
    let csp = page.header("content-security-policy").expect("policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        get(addr, "/web/host/backoffice.js", "localhost:0").status,
        403
    );
    assert_eq!(get(addr, "/", "evil.example").status, 403);
    let port = addr.port();
    assert_eq!(
        get(
            addr,
            "/web/host/backoffice.js",
            &format!("localhost:{port}")
        )
        .status,
        200
    );
    assert_eq!(
        get(addr, "/web/../Cargo.toml", &addr.to_string()).status,
        404
    );
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "auth.login",
                      "params": {"username": "admin1", "password": "admin1-pass-1"}})
    .to_string();
    let foreign = post(addr, &body, "Origin: http://evil.example\r\n");
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(foreign.body.contains("evil.example"));
    assert!(foreign.header("content-security-policy").is_some());
    let plain = request(
        addr,
        &format!(
            "POST /rpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    assert_eq!(plain.status, 415);
    let big = "x".repeat(cardd_host::backoffice::BODY_BYTES_MAX + 1);
    assert_eq!(post(addr, &big, "").status, 413);
    let preflight = request(
        addr,
        &format!("OPTIONS /rpc HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(preflight.status, 403);

    // Logins: tellers and group operators are sent to their console; failures throttled.
    for user in ["teller1", "group1"] {
        let (name, message) = refused(
            addr,
            None,
            "auth.login",
            json!({"username": user, "password": format!("{user}-pass-1")}),
        );
        assert_eq!(name, "NotBackOfficeRole", "{message}");
        assert!(message.contains("控制台"), "{message}");
    }
    for _ in 0..cardd_host::backoffice::session::LOGIN_FAILURES_MAX {
        let (name, _) = refused(
            addr,
            None,
            "auth.login",
            json!({"username": "super1", "password": "wrong-password"}),
        );
        assert_eq!(name, "InvalidCredentials");
    }
    let (name, message) = refused(
        addr,
        None,
        "auth.login",
        json!({"username": "super1", "password": "super1-pass-1"}),
    );
    assert_eq!(name, "Throttled", "{message}");
    assert!(message.contains("分钟后再试"), "{message}");

    // Sessions and roles.
    let (name, _) = refused(addr, None, "operators.list", json!({}));
    assert_eq!(name, "NotLoggedIn");
    let (name, _) = refused(addr, Some("0123"), "operators.list", json!({}));
    assert_eq!(name, "SessionEnded");
    let admin = login(addr, "admin1", "admin1-pass-1");
    let auditor1 = login(addr, "auditor1", "auditor1-pass-1");
    let auditor2 = login(addr, "auditor2", "auditor2-pass-1");
    let (name, message) = refused(addr, Some(&auditor1), "operators.list", json!({}));
    assert_eq!(name, "Forbidden", "{message}");
    assert!(message.contains("需要管理员"), "{message}");
    let (name, _) = refused(addr, Some(&admin), "topups.pending", json!({}));
    assert_eq!(name, "Forbidden");
    let me = ok(addr, &auditor1, "auth.whoami", json!({}));
    assert_eq!(me["role"], "auditor");
    assert!(me["methods"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "refunds.refund"));

    // 待核对: auditors (and supervisors) see it, administrators do not; a verdict names a load
    // the host authorised (its two-person rules: daemon/host/tests/review.rs).
    assert_eq!(ok(addr, &auditor1, "review.pending", json!({})), json!([]));
    let (name, _) = refused(addr, Some(&admin), "review.pending", json!({}));
    assert_eq!(name, "Forbidden");
    let (name, message) = refused(
        addr,
        Some(&auditor1),
        "review.propose",
        json!({"txn_id": "NO-SUCH-TXN", "landed": false, "reason": "核对"}),
    );
    assert_eq!(name, "NotFound", "{message}");
    let (name, _) = refused(
        addr,
        Some(&auditor1),
        "review.propose",
        json!({"txn_id": "NO-SUCH-TXN", "landed": false, "reason": "  "}),
    );
    assert_eq!(name, "InvalidParams");

    // A paid top-up approved: the group's quota grows by its amount.
    let before = groups.group("G001").unwrap().unwrap().available_fen;
    let topup = groups
        .create_topup("G001", "group1", 20_000, "测试转账")
        .unwrap();
    groups
        .record_payment(
            &topup.topup_id,
            &PaymentOutcome::Paid {
                bank_serial: "SANDBOX-1".into(),
            },
        )
        .unwrap();
    let pending = ok(addr, &auditor1, "topups.pending", json!({}));
    assert!(pending
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["topup_id"] == topup.topup_id.as_str()));
    let (name, message) = refused(
        addr,
        Some(&auditor1),
        "topups.audit",
        json!({"topup_id": topup.topup_id, "approve": false, "reason": ""}),
    );
    assert_eq!(
        name, "InvalidParams",
        "a rejection needs a reason: {message}"
    );
    ok(
        addr,
        &auditor1,
        "topups.audit",
        json!({"topup_id": topup.topup_id, "approve": true, "reason": "款已到账"}),
    );
    assert_eq!(
        groups.group("G001").unwrap().unwrap().available_fen,
        before + 20_000
    );

    // Refund evidence: a load the host booked (TAC verified) is never refunded.
    let order = |txn: &str, card: &str, failed_by: &str| {
        let o = groups
            .reserve(&ReserveRequest {
                group_id: "G001".into(),
                operator: "group1".into(),
                card_number: card.into(),
                card_balance_fen: 5_000,
                amount_fen: 1_000,
                txn_id: txn.into(),
                batch: None,
            })
            .expect("reserve");
        groups
            .fail(&o.order_id, failed_by, "写卡未完成")
            .expect("fail")
            .order_id
    };
    let landed = order("TXN-LANDED-1", "61010000000000010001", "group1");
    common::admin(
        &fresh.url,
        "INSERT INTO load_authorizations (txn_id, site_id, card_number, card_key, online_atc, \
           amount_fen, balance_before_fen, funding_kind, funding_id, request, mac2, state, tac, \
           authorized_at, settled_at, settled_by) \
         SELECT 'TXN-LANDED-1', 'S01', '61010000000000010001', 'k', 7, 1000, 5000, \
           'group_order', order_id, '{}'::jsonb, '0A0B0C0D', 'booked', '11223344', now(), now(), \
           'cardd-host@S01' FROM group_orders WHERE txn_id = 'TXN-LANDED-1'",
    );
    let never = order("TXN-NEVER-1", "61010000000000010002", "auditor2");
    let rows = ok(addr, &auditor1, "refunds.pending", json!({}));
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["order_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not pending: {rows}"))
    };
    let l = row(&landed);
    assert_eq!(l["evidence"]["verdict"], "landed", "{l}");
    assert_eq!(l["evidence"]["site_id"], "S01");
    assert_eq!(l["evidence"]["balance_before"], "50.00");
    assert_eq!(l["evidence"]["balance_after"], "60.00");
    assert_eq!(
        (l["may_refund"].as_bool(), l["may_resolve"].as_bool()),
        (Some(false), Some(true))
    );
    let (name, message) = refused(
        addr,
        Some(&auditor1),
        "refunds.refund",
        json!({"order_id": landed, "reason": "客户要求"}),
    );
    assert_eq!(name, "Refused", "{message}");
    assert!(message.contains("不能退款"), "{message}");
    assert_eq!(
        groups.order(&landed).unwrap().unwrap().status,
        OrderStatus::Failed
    );
    let n = row(&never);
    assert_eq!(n["evidence"]["verdict"], "not_landed", "{n}");
    assert_eq!(n["evidence"]["state"], "none");
    let (name, message) = refused(
        addr,
        Some(&auditor1),
        "refunds.resolve",
        json!({"order_id": never, "reason": "x"}),
    );
    assert_eq!(name, "Refused", "{message}");
    // Two people: auditor2 declared it failed, so auditor2 does not refund it.
    let (name, message) = refused(
        addr,
        Some(&auditor2),
        "refunds.refund",
        json!({"order_id": never, "reason": "未到账"}),
    );
    assert_eq!(name, "Refused");
    assert!(message.contains("另一位审核员"), "{message}");
    let quota = groups.group("G001").unwrap().unwrap().available_fen;
    ok(
        addr,
        &auditor1,
        "refunds.refund",
        json!({"order_id": never, "reason": "未到账"}),
    );
    assert_eq!(
        groups.order(&never).unwrap().unwrap().status,
        OrderStatus::Refunded
    );
    assert_eq!(
        groups.group("G001").unwrap().unwrap().available_fen,
        quota + 1_000
    );
    ok(
        addr,
        &auditor1,
        "refunds.resolve",
        json!({"order_id": landed, "reason": "卡内已到账"}),
    );
    assert_eq!(
        groups.order(&landed).unwrap().unwrap().status,
        OrderStatus::Succeeded
    );

    // Sites: enrolled from their own certificate only; revoked and enabled again.
    let ca_dir = tempfile::tempdir().expect("temp dir");
    cardd_fleet::FleetCa::init(ca_dir.path(), 30).expect("CA");
    let ca = cardd_fleet::FleetCa::open(ca_dir.path()).expect("CA");
    let s05: cardd_fleet::SiteId = "S05".parse().unwrap();
    ca.issue_site(&s05, 30, false).expect("S05's certificate");
    let pem = std::fs::read_to_string(cardd_fleet::ca::site_files(ca_dir.path(), &s05).cert)
        .expect("PEM");
    let (name, message) = refused(
        addr,
        Some(&admin),
        "sites.enrol",
        json!({"site_id": "S06", "cert_pem": pem}),
    );
    assert_eq!(name, "Refused", "{message}");
    assert!(message.contains("这是站点 S05 的证书"), "{message}");
    let (name, _) = refused(
        addr,
        Some(&admin),
        "sites.enrol",
        json!({"site_id": "S05", "cert_pem": "not a certificate"}),
    );
    assert_eq!(name, "InvalidParams");
    let (name, _) = refused(
        addr,
        Some(&auditor1),
        "sites.enrol",
        json!({"site_id": "S05", "cert_pem": pem}),
    );
    assert_eq!(name, "Forbidden");
    let enrolled = ok(
        addr,
        &admin,
        "sites.enrol",
        json!({"site_id": "S05", "cert_pem": pem}),
    );
    assert_eq!(
        enrolled["cert_fingerprint"].as_str().map(str::len),
        Some(64)
    );
    ok(
        addr,
        &admin,
        "sites.set_enabled",
        json!({"site_id": "S05", "enabled": false}),
    );
    let sites = ok(addr, &admin, "sites.list", json!({}));
    assert_eq!(sites[0]["site_id"], "S05");
    assert_eq!(sites[0]["enabled"], false);
    let (name, _) = refused(
        addr,
        Some(&admin),
        "sites.set_enabled",
        json!({"site_id": "S09", "enabled": false}),
    );
    assert_eq!(name, "NotFound");

    // Operators: created by an administrator (a group operator with its group).
    ok(
        addr,
        &admin,
        "operators.create",
        json!({"username": "group2", "display_name": "集团二", "role": "group_operator",
               "group_id": "G001", "password": "group2-pass-1"}),
    );
    let listed = ok(addr, &admin, "operators.list", json!({}));
    assert!(listed["operators"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["username"] == "group2" && o["group_id"] == "G001"));

    // Operators: disabling one ends their sessions; they cannot log in.
    ok(
        addr,
        &admin,
        "operators.set_disabled",
        json!({"username": "auditor2", "disabled": true}),
    );
    let (name, _) = refused(addr, Some(&auditor2), "refunds.pending", json!({}));
    assert_eq!(name, "SessionEnded");
    let (name, _) = refused(
        addr,
        None,
        "auth.login",
        json!({"username": "auditor2", "password": "auditor2-pass-1"}),
    );
    assert_eq!(name, "InvalidCredentials");
    let (name, message) = refused(
        addr,
        Some(&admin),
        "operators.set_disabled",
        json!({"username": "admin1", "disabled": true}),
    );
    assert_eq!(name, "Refused", "{message}");

    // Every change is in the host chain, by 后台:<user>, and the log verifies.
    let log = ok(addr, &auditor1, "audit.list", json!({"chain": "host"}));
    let actions: Vec<(String, String)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap_or_default().to_owned(),
                r["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (actor, action) in [
        ("后台:auditor1", "topups.audit"),
        ("后台:auditor1", "refunds.refund"),
        ("后台:auditor1", "refunds.resolve"),
        ("后台:admin1", "operators.set_disabled"),
        ("后台:admin1", "sites.enrol"),
        ("后台:admin1", "operators.create"),
    ] {
        assert!(
            actions.iter().any(|(a, b)| a == actor && b == action),
            "{actor} {action} not in {actions:?}"
        );
    }
    assert!(
        !log.to_string().contains("pass-1"),
        "no password in the log"
    );
    let verified = ok(addr, &admin, "audit.verify", json!({}));
    assert_eq!(verified["intact"], true, "{verified}");

    // Logging out ends the session.
    ok(addr, &admin, "auth.logout", json!({}));
    let (name, _) = refused(addr, Some(&admin), "sites.list", json!({}));
    assert_eq!(name, "SessionEnded");
    drop(runtime);
}
