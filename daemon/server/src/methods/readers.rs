//! `readers.*`, `card.*` and `reader.transmit`: leasing readers, reading a card's summary and
//! balance, and raw APDUs for the administrator.

use std::time::Duration;

use crate::errors::ApiError;
use crate::readers::ReaderStatus;
use crate::rpc::{audit_as_json, AuditDetail, Methods, NoParams, ADMIN, ALL_OPERATORS};
use cardd_api::reader::{TransmitParams, TransmitResult};
use cardd_api::readers::{
    LeaseParams, PluginStatus, ReaderParams, ReleaseParams, RenewParams, RestartPluginParams,
};
use cardd_api::Done;

audit_as_json!(ReaderParams, reader_id);
audit_as_json!(cardd_api::card::SummaryParams, reader_id);

audit_as_json!(LeaseParams, reader_id);

audit_as_json!(RenewParams);

audit_as_json!(ReleaseParams);

audit_as_json!(RestartPluginParams, instance);

audit_as_json!(TransmitParams, reader_id);

/// Adds these methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::readers::List, _, _>(
        "Readers with driver, capabilities, card presence and lease.",
        ALL_OPERATORS,
        false,
        |d, _, _: NoParams| async move { Ok::<Vec<ReaderStatus>, ApiError>(d.readers.list()) },
    );

    m.method::<cardd_api::readers::Plugins, _, _>(
        "The configured reader plugins with their health, including plugins with no reader now.",
        ALL_OPERATORS,
        false,
        |d, _, _: NoParams| async move { Ok::<Vec<PluginStatus>, ApiError>(d.readers.plugins()) },
    );

    m.method::<cardd_api::readers::RestartPlugin, _, _>(
        "Kill a reader plugin and start it again at once, skipping its backoff (administrators; audited).",
        ADMIN,
        true,
        |d, c, p: RestartPluginParams| async move {
            let holder = c.holder()?;
            d.readers
                .restart_plugin(&p.instance, &format!("readers.restart_plugin by {}", holder.operator))
        },
    );

    m.method::<cardd_api::readers::Lease, _, _>(
        "Hold a reader for a flow, for a bounded time; others find it busy.",
        ALL_OPERATORS,
        true,
        |d, c, p: LeaseParams| async move {
            let holder = c.holder()?;
            let purpose = p.purpose.unwrap_or_else(|| "业务办理".into());
            d.readers.lease(
                &p.reader_id,
                holder,
                p.duration_ms.map(Duration::from_millis),
                &purpose,
            )
        },
    );

    m.method::<cardd_api::readers::Renew, _, _>(
        "Extend a lease you hold.",
        ALL_OPERATORS,
        true,
        |d, c, p: RenewParams| async move {
            d.readers.renew(
                &p.lease_id,
                &c.holder()?,
                p.duration_ms.map(Duration::from_millis),
            )
        },
    );

    m.method::<cardd_api::readers::Release, _, _>(
        "Release a lease you hold.",
        ALL_OPERATORS,
        true,
        |d, c, p: ReleaseParams| async move {
            d.readers.release(&p.lease_id, &c.holder()?)?;
            Ok(Done {
                ok: true,
                message: "读卡器已释放".into(),
            })
        },
    );

    m.method::<cardd_api::card::Summary, _, _>(
        "Read the card in a reader: type, card number, plate, balance, validity (SELECT, READ BINARY, GET BALANCE: no PIN, no load). With online_counter, also the online counter (ETC: VERIFY PIN and a probing INITIALIZE FOR LOAD of 1 fen).",
        ALL_OPERATORS,
        false,
        |d, c, p: cardd_api::card::SummaryParams| async move {
            let holder = c.holder()?;
            let terminal = d.config.terminal_id;
            let (counters, context) = if p.online_counter {
                (crate::summary::Counters::online(&d)?, "card.summary online_counter")
            } else {
                (crate::summary::Counters::None, c.method)
            };
            d.readers
                .run(&p.reader_id, &holder, context, move |reader| {
                    crate::summary::read(reader, terminal, counters)
                })
                .await?
        },
    );

    m.method::<cardd_api::card::Balance, _, _>(
        "Read the purse balance of the card in a reader (one GET BALANCE while the application is selected).",
        ALL_OPERATORS,
        false,
        |d, c, p: ReaderParams| async move {
            d.readers
                .run(&p.reader_id, &c.holder()?, c.method, crate::summary::balance)
                .await?
        },
    );

    m.method::<cardd_api::reader::Transmit, _, _>(
        "Send one raw APDU (administrators only; audited).",
        ADMIN,
        true,
        |d, c, p: TransmitParams| async move {
            let bytes = hex::decode(p.apdu.trim())
                .map_err(|_| ApiError::invalid_params("apdu must be hexadecimal"))?;
            let command = cardd_reader::CommandApdu::parse(&bytes)
                .map_err(|e| ApiError::invalid_params(e.to_string()))?;
            let response = d
                .readers
                .run(&p.reader_id, &c.holder()?, c.method, move |reader| {
                    use cardd_reader::CardChannel;
                    reader.transmit(&command)
                })
                .await??;
            Ok(TransmitResult {
                data: hex::encode_upper(&response.data),
                sw: format!("{:04X}", response.sw.0),
                sw_meaning: response.sw.description().into(),
            })
        },
    );
}
