//! A full 圈存 (load) on the simulated ETC card through the reader trait, TAC verified.
//!
//! `cargo run -p cardd-tests --example full_load` prints each step. It is the shortest complete
//! picture of the reader stack: a driver (the simulator) behind `CardReader`, the reader layer's
//! chaining and timeout (`Reader`), the card-application layer (`Purse`) and the host
//! cryptography (`SoftSam`, holding the demo master keys).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cardd_purse::{CardKeyContext, LoadPlan, LoadSession, MemoryPinRefusals, Pin, Purse, SoftSam};
use cardd_reader::{Reader, ReaderFactory, ReaderSelector};
use cardd_sim::{SimFactory, SimReaderConfig, SimReaderKind, SimWorld};

fn main() -> Result<()> {
    // A simulated contact reader holding the demo ETC card (T=0, so chaining is exercised).
    let world = SimWorld::new();
    world.add_reader(
        SimReaderConfig::new("etc", SimReaderKind::Contact)
            .with_card(cardd_sim::demo::demo_etc_card())
            .with_t0(true),
    )?;
    let factory = SimFactory::new(world.clone());
    let session = factory.open(&ReaderSelector::Id("sim:etc".into()))?;
    let mut reader = Reader::new(session, Duration::from_millis(5_000));
    let sam = SoftSam::demo();

    let mut purse = Purse::new(&mut reader);
    purse.select_etc_adf()?;
    let info = purse.read_etc_issue_info()?;
    println!(
        "card {} plate {} ({})",
        info.card_number(),
        info.plate_text(),
        info.plate_colour.code()
    );
    let before = purse.balance()?;
    println!("balance before: {before} fen");
    // A PIN the card refused once is never presented to it again (cardd_purse::pin).
    let refused_pins = MemoryPinRefusals::default();
    purse.verify_pin(&info.card_number(), &Pin::ascii("123456")?, &refused_pins)?;

    let amount = 5_000; // 50.00 yuan
    let plan = LoadPlan::new(
        CardKeyContext::etc(&info),
        amount,
        [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
        cardd_crypto::bcd::date(2026, 11, 22),
        cardd_crypto::bcd::time(9, 30, 0),
    );
    let init = purse.init_load_for(&plan)?;
    println!(
        "INITIALIZE FOR LOAD: old balance {} online ATC {}",
        init.old_balance, init.online_atc
    );
    let load = LoadSession::start(plan, init, &sam).context("MAC1 verification")?;
    println!("MAC1 verified; MAC2 {}", hex::encode_upper(load.mac2));
    let tac = purse.credit_for(&load)?;
    load.verify_tac(&sam, tac).context("TAC verification")?;
    println!("CREDIT FOR LOAD: TAC {} verified", hex::encode_upper(tac));
    let after = purse.balance()?;
    println!("balance after: {after} fen");
    ensure!(
        after == before + amount,
        "balance is {after}, expected {}",
        before + amount
    );
    Ok(())
}
