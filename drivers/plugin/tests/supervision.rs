//! Supervision as an operator sees it: a garbled reply fails the waiting request at once and
//! in plain words, a crash is worded as a crash (not as an unplugged reader), a restart can be
//! asked for and skips the backoff, and the status carries what `hello` declared.
//!
//! These tests run a small standard-library Python plugin of their own (below), so they do not
//! depend on the example plugin's test hooks.
#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use cardd_plugin::{PluginFactory, PluginOptions};
use cardd_reader::{
    CardChannel, CommandApdu, HotplugEvent, Reader, ReaderError, ReaderFactory, ReaderSelector,
    StatusWord, Supervised, SupervisedState,
};
use common::{next_hotplug, python3, ScratchDir, WAIT_MS_MAX};

/// A minimal plugin with one reader `r1` holding a card. `transmit` answers `9000`, except:
/// `00000001` prints a garbled line, then (a moment later) the real answer; `00000002` exits
/// with status 9 (a crash).
const PLUGIN: &str = r#"
import json, sys, time
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    if not line.strip():
        continue
    req = json.loads(line)
    i, m, p = req["id"], req["method"], req.get("params", {})
    if m == "hello":
        send({"id": i, "result": {"protocol": "cardd-plugin/1", "name": "mini", "version": "0.3",
              "features": ["presence_events", 7, "trace"]}})
    elif m == "list":
        send({"id": i, "result": {"readers": [{"id": "r1", "name": "Mini",
              "capabilities": {"contact": True, "contactless": False, "events": True}}]}})
    elif m == "open":
        send({"id": i, "result": {"protocol": "t1"}})
    elif m in ("power_on", "reset"):
        send({"id": i, "result": {"atr": "3B00"}})
    elif m == "presence":
        send({"id": i, "result": {"state": "powered", "atr": "3B00"}})
    elif m == "transmit":
        if p["apdu"] == "00000001":
            sys.stdout.write("Traceback (most recent call last): SDK error\n"); sys.stdout.flush()
            time.sleep(0.2)
        if p["apdu"] == "00000002":
            sys.exit(9)
        send({"id": i, "result": {"response": "9000"}})
    else:
        send({"id": i, "result": {}})
"#;

struct Mini {
    factory: PluginFactory,
    _dir: ScratchDir,
}

fn mini(name: &str, adjust: impl FnOnce(&mut PluginOptions)) -> Mini {
    let dir = ScratchDir::new();
    let script = dir.0.join("mini.py");
    std::fs::write(&script, PLUGIN).expect("write the plugin");
    let mut options = PluginOptions::new(name, python3());
    options.args = vec![script.display().to_string()];
    options.restart_backoff_initial_ms = 100;
    options.restart_backoff_max_ms = 1_000;
    options.ping_interval_ms = 0;
    adjust(&mut options);
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    Mini { factory, _dir: dir }
}

fn open(m: &Mini, name: &str) -> Reader {
    let session = m
        .factory
        .open(&ReaderSelector::Id(format!("plugin:{name}:r1")))
        .unwrap_or_else(|e| panic!("{e}"));
    // A long APDU timeout: a failure that came only at the timeout would show.
    Reader::new(session, Duration::from_secs(30))
}

fn apdu(ins_p1_p2: u8) -> CommandApdu {
    CommandApdu::new(0x00, 0x00, 0x00, ins_p1_p2)
}

fn works(reader: &mut Reader) {
    let r = reader.transmit(&apdu(0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.sw, StatusWord::OK);
}

#[test]
fn a_garbled_reply_fails_the_waiting_request_at_once_and_its_late_answer_is_dropped() {
    let m = mini("garbled", |_| {});
    let mut reader = open(&m, "garbled");
    works(&mut reader);
    let started = Instant::now();
    let err = reader.transmit(&apdu(1)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed only after {:?} (the APDU timeout is 30 s)",
        started.elapsed()
    );
    match &err {
        ReaderError::DriverMalformed {
            reader, program, ..
        } => {
            assert_eq!(reader, "plugin:garbled:r1");
            assert_eq!(program, "garbled");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.outcome_unknown(),
        "the command may have reached the card"
    );
    assert!(err.to_string().contains("malformed reply"), "{err}");
    // The real answer that follows is dropped quietly; the session goes on.
    works(&mut reader);
    let status = Supervised::status(&m.factory);
    assert_eq!(status.malformed_lines, 1, "{status:?}");
    assert_eq!(status.state, SupervisedState::Running, "{status:?}");
    assert_eq!(status.restarts, 0, "{status:?}");
}

#[test]
fn a_crash_is_worded_as_one_and_the_status_counts_the_restart() {
    let m = mini("crashy", |_| {});
    let mut watch = m.factory.hotplug().unwrap();
    let mut reader = open(&m, "crashy");
    works(&mut reader);
    let err = reader.transmit(&apdu(2)).unwrap_err();
    match &err {
        ReaderError::DriverCrashed { program, .. } => assert_eq!(program, "crashy"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("ended unexpectedly"), "{err}");
    assert!(!err.to_string().contains("reconnect"), "{err}");
    assert!(matches!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Removed { .. }
    ));
    assert!(matches!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Added { .. }
    ));
    let status = Supervised::status(&m.factory);
    assert_eq!(status.state, SupervisedState::Running, "{status:?}");
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("exited unexpectedly")),
        "{status:?}"
    );
}

#[test]
fn an_operator_restart_skips_the_backoff() {
    // A backoff far longer than the test's bound: only a restart "now" can bring it back.
    let m = mini("restart", |o| {
        o.restart_backoff_initial_ms = 60_000;
        o.restart_backoff_max_ms = 60_000;
    });
    let mut watch = m.factory.hotplug().unwrap();
    let mut reader = open(&m, "restart");
    works(&mut reader);
    let started = Instant::now();
    Supervised::restart_now(&m.factory, "operator admin asked");
    assert!(matches!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Removed { .. }
    ));
    assert!(matches!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Added { .. }
    ));
    assert!(
        started.elapsed() < Duration::from_millis(WAIT_MS_MAX),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        reader.transmit(&apdu(0)),
        Err(ReaderError::DriverCrashed { .. })
    ));
    let mut again = open(&m, "restart");
    works(&mut again);
    let status = Supervised::status(&m.factory);
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("restarted by an operator (operator admin asked)")),
        "{status:?}"
    );
}

#[test]
fn a_restart_during_the_backoff_starts_at_once() {
    // Exits at once, then waits a long backoff; a restart now cuts the wait short.
    let mut options = PluginOptions::new("waiting", python3());
    options.args = vec!["-c".into(), "import sys; sys.exit(4)".into()];
    options.restart_backoff_initial_ms = 60_000;
    options.restart_backoff_max_ms = 60_000;
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    let status = Supervised::status(&factory);
    assert_eq!(status.state, SupervisedState::Backoff, "{status:?}");
    assert_eq!(status.backoff_ms, 60_000, "{status:?}");
    Supervised::restart_now(&factory, "test");
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while factory.status().stats.starts < 2 {
        assert!(Instant::now() < deadline, "{:?}", factory.status());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_status_carries_what_hello_declared() {
    let m = mini("features", |_| {});
    let status = Supervised::status(&m.factory);
    assert_eq!(status.instance, "features");
    assert_eq!(status.state, SupervisedState::Running);
    assert_eq!(status.name.as_deref(), Some("mini"));
    assert_eq!(status.version.as_deref(), Some("0.3"));
    // Strings only; anything else in the list is ignored.
    assert_eq!(status.features, ["presence_events", "trace"]);
    assert_eq!((status.readers, status.backoff_ms), (1, 0));
    assert_eq!(status.last_error, None);
    assert!(m.factory.supervised().is_some());
}

#[test]
fn a_plugin_too_slow_to_say_hello_backs_off_longer_each_time() {
    // An SDK that initialises before the plugin reads its first request.
    let mut options = PluginOptions::new("slow", python3());
    options.args = vec![
        "-c".into(),
        "import sys, time\ntime.sleep(30)\nsys.stdin.readline()\n".into(),
    ];
    options.hello_timeout_ms = 100;
    options.request_timeout_grace_ms = 10;
    options.restart_backoff_initial_ms = 50;
    options.restart_backoff_max_ms = 200;
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    let mut waits: Vec<u64> = Vec::new();
    while factory.status().restarts < 4 {
        assert!(Instant::now() < deadline, "{:?}", factory.status());
        let wait = Supervised::status(&factory).backoff_ms;
        if wait > 0 && waits.last() != Some(&wait) {
            waits.push(wait);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The waits grow to the maximum and stay there: never a tight loop.
    assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
    assert_eq!(waits.last(), Some(&200), "{waits:?}");
    let status = Supervised::status(&factory);
    assert!(
        status.last_error.as_deref().is_some_and(|e| e
            .contains("did not answer hello within 110 ms")
            && e.contains("Slow SDKs")),
        "{status:?}"
    );
}
