//! Reader sessions through `cardd_reader::Reader`, exactly as the daemon uses them: listing,
//! opening, commands, power and presence, card events, reader hotplug driven by the plugin, and
//! several sessions sharing one plugin that answers one request at a time.

mod common;

use std::time::Duration;

use cardd_reader::{
    CardChannel, CardEvent, CardPresence, CommandApdu, HotplugEvent, Protocol, Reader, ReaderError,
    ReaderFactory, ReaderSelector, StatusWord,
};
use common::{next_hotplug, TestPlugin};

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

#[test]
fn commands_power_and_presence_round_trip() {
    let plugin = TestPlugin::start("s1");
    let mut reader = open(&plugin);
    assert_eq!(reader.session().protocol(), Protocol::T1);
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Present);
    assert_eq!(reader.session().atr(), None);
    let atr = reader.session().power_on().unwrap();
    assert_eq!(hex::encode_upper(&atr.0), "3B0A43415244442D504C5547");
    assert_eq!(reader.session().atr(), Some(atr.clone()));
    assert_eq!(
        reader.session().presence().unwrap(),
        CardPresence::Powered { atr: atr.clone() }
    );

    assert_eq!(reader.transmit(&select_adf()).unwrap().sw, StatusWord::OK);
    let file = reader
        .transmit(&CommandApdu::new(0x00, 0xB0, 0x95, 0x00).with_le(256))
        .unwrap();
    assert_eq!((file.data.len(), file.sw), (43, StatusWord::OK));
    assert_eq!(&file.data[..4], [0xB1, 0xB1, 0xBE, 0xA9]); // 北京 in GBK
                                                           // 6Cxx from the card is re-sent by the reader layer with the card's length.
    let partial = reader
        .transmit(&CommandApdu::new(0x00, 0xB0, 0x95, 0x28).with_le(10))
        .unwrap();
    assert_eq!((partial.data.len(), partial.sw), (3, StatusWord::OK));
    let unknown = reader
        .transmit(&CommandApdu::new(0x00, 0xEE, 0x00, 0x00))
        .unwrap();
    assert_eq!(unknown.sw, StatusWord::INS_NOT_SUPPORTED);

    reader.session().power_off().unwrap();
    assert_eq!(reader.session().atr(), None);
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Present);
    assert_eq!(reader.session().reset().unwrap(), atr);
}

#[test]
fn unknown_readers_and_missing_cards_are_reported_as_such() {
    let plugin = TestPlugin::start("s2");
    for selector in [
        ReaderSelector::Id("plugin:s2:r2".into()),
        ReaderSelector::Id("plugin:other:r1".into()),
        ReaderSelector::Index(1),
    ] {
        assert!(
            matches!(
                plugin.factory.open(&selector),
                Err(ReaderError::NotFound { .. })
            ),
            "{selector}"
        );
    }
    let by_name = plugin
        .factory
        .open(&ReaderSelector::NameContains("Example".into()))
        .unwrap();
    assert_eq!(by_name.info().id, "plugin:s2:r1");

    let mut reader = open(&plugin);
    plugin.control("remove");
    assert_eq!(reader.session().presence().unwrap(), CardPresence::Absent);
    assert!(matches!(
        reader.transmit(&select_adf()),
        Err(ReaderError::NoCard { .. })
    ));
    assert!(matches!(
        reader.session().power_on(),
        Err(ReaderError::NoCard { .. })
    ));
}

#[test]
fn card_events_arrive_in_order_on_every_session_of_the_reader() {
    let plugin = TestPlugin::start("s3");
    let mut a = plugin
        .factory
        .open(&ReaderSelector::Id(plugin.reader_id()))
        .unwrap();
    let mut b = plugin
        .factory
        .open(&ReaderSelector::Id(plugin.reader_id()))
        .unwrap();
    let wait = Duration::from_millis(common::WAIT_MS_MAX);
    assert_eq!(
        a.events()
            .unwrap()
            .wait_for_change(Duration::from_millis(50))
            .unwrap(),
        None
    );
    plugin.control("remove");
    plugin.control("insert");
    for session in [&mut a, &mut b] {
        let events = session.events().unwrap();
        assert_eq!(
            events.wait_for_change(wait).unwrap(),
            Some(CardEvent::Removed)
        );
        match events.wait_for_change(wait).unwrap() {
            Some(CardEvent::Inserted { atr }) => assert!(!atr.0.is_empty()),
            other => panic!("expected an insertion, got {other:?}"),
        }
    }
}

#[test]
fn readers_the_plugin_unplugs_and_plugs_are_hotplug_events() {
    let plugin = TestPlugin::start("s4");
    let mut watch = plugin.factory.hotplug().unwrap();
    let mut reader = open(&plugin);
    plugin.control("unplug");
    assert_eq!(
        next_hotplug(watch.as_mut()),
        HotplugEvent::Removed {
            reader_id: plugin.reader_id()
        }
    );
    assert!(plugin.factory.list().unwrap().is_empty());
    assert!(matches!(
        reader.transmit(&select_adf()),
        Err(ReaderError::ReaderGone { .. })
    ));
    plugin.control("plug");
    match next_hotplug(watch.as_mut()) {
        HotplugEvent::Added { reader } => assert_eq!(reader.id, plugin.reader_id()),
        other => panic!("{other:?}"),
    }
    // The reader that came back is a new one: the old session stays gone, a new one works.
    assert!(matches!(
        reader.transmit(&select_adf()),
        Err(ReaderError::ReaderGone { .. })
    ));
    let mut again = open(&plugin);
    assert_eq!(again.transmit(&select_adf()).unwrap().sw, StatusWord::OK);
}

#[test]
fn sessions_on_several_threads_share_a_one_request_at_a_time_plugin() {
    let plugin = TestPlugin::start("s5");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut reader = open(&plugin);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let r = reader.transmit(&select_adf()).unwrap();
                    assert_eq!(r.sw, StatusWord::OK);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let status = plugin.factory.status();
    assert_eq!(status.stats.starts, 1, "{status:?}");
    assert_eq!(status.stats.hangs, 0, "{status:?}");
}
