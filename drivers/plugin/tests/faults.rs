//! A plugin that crashes, hangs or talks garbage hurts only its own readers, only for a while.
//!
//! These are the promises the plugin driver exists for: the daemon never blocks past a bound
//! and never panics because of a plugin; a crashed or hung plugin is killed, its sessions fail with
//! `DriverCrashed` (not `ReaderGone`: the reader is fine), its readers (and only its readers)
//! are reported gone, and it is restarted with backoff, after which its
//! readers come back.

mod common;

use std::time::{Duration, Instant};

use cardd_plugin::{PluginError, PluginState};
use cardd_reader::{
    CardChannel, CommandApdu, HotplugEvent, Reader, ReaderError, ReaderFactory, ReaderSelector,
    StatusWord,
};
use common::{expect_restart, next_hotplug, TestPlugin};

fn open(plugin: &TestPlugin) -> Reader {
    let session = plugin
        .factory
        .open(&ReaderSelector::Id(plugin.reader_id()))
        .unwrap_or_else(|e| panic!("{e}"));
    Reader::new(session, Duration::from_secs(5))
}

fn select_adf() -> CommandApdu {
    CommandApdu::new(0x00, 0xA4, 0x00, 0x00).with_data([0x10, 0x01])
}

fn works(reader: &mut Reader) {
    let r = reader
        .transmit(&select_adf())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.sw, StatusWord::OK);
}

#[test]
fn a_crash_is_reader_gone_for_its_readers_only_and_the_plugin_comes_back() {
    let backoff_ms = 300;
    let a = TestPlugin::start_with("crash-a", |o| o.restart_backoff_initial_ms = backoff_ms);
    let b = TestPlugin::start("crash-b");
    let mut watch_a = a.factory.hotplug().unwrap();
    let mut watch_b = b.factory.hotplug().unwrap();
    let mut reader_a = open(&a);
    let mut reader_b = open(&b);
    works(&mut reader_a);
    works(&mut reader_b);

    a.control("crash_next transmit");
    let started = Instant::now();
    let err = reader_a.transmit(&select_adf()).unwrap_err();
    assert!(matches!(err, ReaderError::DriverCrashed { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile the other plugin's reader does not notice a thing.
    works(&mut reader_b);

    let down_for = expect_restart(watch_a.as_mut(), &a.reader_id());
    assert!(
        down_for >= Duration::from_millis(backoff_ms),
        "restarted after {down_for:?}, before the {backoff_ms} ms backoff"
    );
    // The old session stays gone; a new one works.
    assert!(matches!(
        reader_a.transmit(&select_adf()),
        Err(ReaderError::DriverCrashed { .. })
    ));
    assert!(matches!(
        reader_a.session().presence(),
        Err(ReaderError::DriverCrashed { .. })
    ));
    let mut reopened = open(&a);
    works(&mut reopened);
    works(&mut reader_b);

    let status = a.factory.status();
    assert_eq!(status.state, PluginState::Running);
    assert_eq!(
        (status.stats.starts, status.stats.crashes),
        (2, 1),
        "{status:?}"
    );
    assert!(
        matches!(status.last_error, Some(PluginError::Exited { ref status, .. }) if status.contains("70")),
        "{status:?}"
    );
    let status_b = b.factory.status();
    assert_eq!((status_b.stats.starts, status_b.stats.crashes), (1, 0));
    assert_eq!(
        watch_b.wait(Duration::from_millis(100)).unwrap(),
        None,
        "the other plugin's readers never left"
    );
}

#[test]
fn consecutive_crashes_back_off_exponentially() {
    let a = TestPlugin::start_with("backoff", |o| {
        o.restart_backoff_initial_ms = 100;
        o.restart_backoff_max_ms = 10_000;
    });
    let mut watch = a.factory.hotplug().unwrap();
    let mut downtimes = Vec::new();
    for _ in 0..3 {
        let mut reader = open(&a);
        a.control("crash_next transmit");
        assert!(matches!(
            reader.transmit(&select_adf()),
            Err(ReaderError::DriverCrashed { .. })
        ));
        downtimes.push(expect_restart(watch.as_mut(), &a.reader_id()));
    }
    // 100, 200 and 400 ms of backoff, plus the time python takes to start.
    for (downtime, backoff) in downtimes.iter().zip([100u64, 200, 400]) {
        assert!(*downtime >= Duration::from_millis(backoff), "{downtimes:?}");
    }
    assert!(downtimes[2] > downtimes[0], "{downtimes:?}");
    assert_eq!(a.factory.status().stats.crashes, 3);
}

#[test]
fn a_hung_plugin_times_out_within_the_bound_and_is_killed_and_restarted() {
    let grace_ms = 300;
    let a = TestPlugin::start_with("hang", |o| o.request_timeout_grace_ms = grace_ms);
    let mut watch = a.factory.hotplug().unwrap();
    let mut reader = open(&a);
    works(&mut reader);

    a.control("hang_next transmit");
    let timeout_ms = 500;
    reader.set_apdu_timeout(Duration::from_millis(timeout_ms));
    let started = Instant::now();
    let err = reader.transmit(&select_adf()).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            ReaderError::Timeout {
                timeout_ms: 500,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert!(took >= Duration::from_millis(timeout_ms), "{took:?}");
    assert!(
        took < Duration::from_millis(timeout_ms + grace_ms + 700),
        "{took:?} for a {timeout_ms} ms timeout and {grace_ms} ms grace"
    );
    // The session is not left talking to a process about to be killed.
    assert!(matches!(
        reader.session().presence(),
        Err(ReaderError::DriverCrashed { .. })
    ));

    expect_restart(watch.as_mut(), &a.reader_id());
    let mut reopened = open(&a);
    works(&mut reopened);
    let status = a.factory.status();
    assert_eq!(
        (status.stats.starts, status.stats.hangs),
        (2, 1),
        "{status:?}"
    );
    assert!(
        matches!(status.last_error, Some(PluginError::Unresponsive { ref method, .. }) if method == "transmit"),
        "{status:?}"
    );
}

#[test]
fn an_unanswered_liveness_ping_restarts_an_idle_plugin() {
    let a = TestPlugin::start_with("ping", |o| {
        o.ping_interval_ms = 200;
        o.request_timeout_ms = 300;
    });
    let mut watch = a.factory.hotplug().unwrap();
    a.control("hang_next ping");
    let started = Instant::now();
    expect_restart(watch.as_mut(), &a.reader_id());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let status = a.factory.status();
    assert!(
        matches!(status.last_error, Some(PluginError::Unresponsive { ref method, .. }) if method == "ping"),
        "{status:?}"
    );
    assert_eq!(status.stats.hangs, 1, "{status:?}");
    let mut reader = open(&a);
    works(&mut reader);
    // The restarted plugin answers its pings.
    let deadline = Instant::now() + Duration::from_millis(common::WAIT_MS_MAX);
    while a.factory.status().stats.pings == 0 {
        assert!(Instant::now() < deadline, "{:?}", a.factory.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.factory.status().stats.starts, 2);
}

#[test]
fn garbage_on_stdout_is_counted_and_survived() {
    let a = TestPlugin::start("garbage");
    let mut reader = open(&a);
    // The hook's own request is waiting while the garbage arrives, so it fails at once
    // (PROTOCOL.md §7): ignore its answer. Let cardd read all the garbage before the next
    // request, which would fail the same way.
    let _ = a.try_control("garbage");
    let deadline = Instant::now() + Duration::from_millis(common::WAIT_MS_MAX);
    while a.factory.status().stats.malformed_messages < 10 {
        assert!(Instant::now() < deadline, "{:?}", a.factory.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    works(&mut reader);
    let status = a.factory.status();
    assert_eq!(status.stats.malformed_messages, 10, "{status:?}");
    assert_eq!(status.stats.starts, 1, "{status:?}");
    assert_eq!(status.state, PluginState::Running);
    let file = reader
        .transmit(&CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(256))
        .unwrap();
    assert_eq!(file.data.len(), 43);
}

#[test]
fn a_plugin_that_keeps_misbehaving_is_restarted() {
    let a = TestPlugin::start("flood");
    let mut watch = a.factory.hotplug().unwrap();
    // cardd may kill the plugin before it gets to confirm the command: ignore the answer.
    let _ = a.try_control("flood");
    expect_restart(watch.as_mut(), &a.reader_id());
    let status = a.factory.status();
    assert_eq!(status.stats.misbehaviour_restarts, 1, "{status:?}");
    assert!(
        matches!(status.last_error, Some(PluginError::Misbehaving { .. })),
        "{status:?}"
    );
    let mut reader = open(&a);
    works(&mut reader);
}

#[test]
fn dropping_the_driver_instance_stops_the_plugin_and_its_sessions() {
    let a = TestPlugin::start("drop");
    let mut reader = open(&a);
    let mut watch = a.factory.hotplug().unwrap();
    let TestPlugin { factory, dir, .. } = a;
    let started = Instant::now();
    drop(factory);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        reader.transmit(&select_adf()),
        Err(ReaderError::ReaderGone { .. })
    ));
    assert!(matches!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Removed { .. }
    ));
    assert!(watch.wait(Duration::from_millis(10)).is_err());
    drop(dir);
}
