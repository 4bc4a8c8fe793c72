//! `system.*`: what the daemon is and the vocabulary its clients show.

use crate::rpc::{Access, Methods, NoParams, ALL_OPERATORS};
use cardd_api::system::Version;

/// Adds these methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::system::VersionInfo, _, _>(
        "The daemon's name and version.",
        Access::Public,
        false,
        |_, _, _: NoParams| async {
            Ok(Version {
                name: "cardd".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                api_version: crate::rpc::openrpc::API_VERSION.into(),
            })
        },
    );

    m.method::<cardd_api::system::GetVocabulary, _, _>(
        "Every code clients show with its zh-CN label: roles, plate colours, order and top-up statuses, query periods.",
        ALL_OPERATORS,
        false,
        |_, _, _: NoParams| async { Ok(cardd_api::vocab::Vocabulary::current()) },
    );
}
