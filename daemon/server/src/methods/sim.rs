//! `sim.*`: the 模拟读卡器 panel's methods, registered only on the embedded default
//! (`--demo`); the panel's state is [`crate::sim_panel`].

use cardd_api::Role;

use crate::daemon::Daemon;
use crate::errors::ApiError;
use crate::rpc::{audit_as_json, Access, AuditDetail, Methods, NoParams};
use crate::sim_panel::{SimCardParams, SimPanel, SimPullParams, SimReaderParams, SimView};
use cardd_api::sim::{SimBringParams, SimCarried, SimCarryParams};

/// Who may use the panel: administrators (the console page) and the kiosk account (the kiosk's
/// own demo page, `/kiosk/demo`).
const PANEL_USERS: Access = Access::Roles(&[Role::Admin, Role::Kiosk]);

audit_as_json!(SimCardParams, reader_id);
audit_as_json!(SimReaderParams, reader_id);
audit_as_json!(SimPullParams, reader_id);
audit_as_json!(SimCarryParams, card);

impl AuditDetail for SimBringParams {
    fn audit_detail(&self) -> serde_json::Value {
        serde_json::json!({ "reader_id": self.reader_id, "card_json_bytes": self.card_json.len() })
    }
    fn audit_target(&self) -> Option<String> {
        Some(self.reader_id.clone())
    }
}

fn panel(d: &Daemon) -> Result<&SimPanel, ApiError> {
    // Registered only with a panel; a daemon without one never reaches here.
    d.sim_panel
        .as_ref()
        .ok_or_else(|| ApiError::internal("no simulated-reader panel in this daemon"))
}

/// The `sim.*` methods; called only for a daemon with a panel (the embedded default).
/// Adds these methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::sim::Readers, _, _>(
        "Demo only (`cardd --demo`): the simulated readers, their cards and the demo cards outside them.",
        PANEL_USERS,
        false,
        |d, _, _: NoParams| async move { Ok::<SimView, ApiError>(panel(&d)?.state()) },
    );
    m.method::<cardd_api::sim::Insert, _, _>(
        "Demo only: insert one of the demo cards (etc, etc_sm4, city, obu) into an empty simulated reader (插入卡片).",
        PANEL_USERS,
        true,
        |d, _, p: SimCardParams| async move { Ok::<SimView, ApiError>(panel(&d)?.insert(&p.reader_id, &p.card)?) },
    );
    m.method::<cardd_api::sim::Remove, _, _>(
        "Demo only: take the card out of a simulated reader (取出卡片).",
        PANEL_USERS,
        true,
        |d, _, p: SimReaderParams| async move {
            Ok::<SimView, ApiError>(panel(&d)?.remove(&p.reader_id)?)
        },
    );
    m.method::<cardd_api::sim::Swap, _, _>(
        "Demo only: take the reader's card out and insert another demo card (更换卡片).",
        PANEL_USERS,
        true,
        |d, _, p: SimCardParams| async move {
            Ok::<SimView, ApiError>(panel(&d)?.swap(&p.reader_id, &p.card)?)
        },
    );
    m.method::<cardd_api::sim::PullDuringNextLoad, _, _>(
        "Demo only: pull the reader's card right after it executes its next CREDIT FOR LOAD (圈存中拔卡), or with before_write just before it (写卡前拔卡: a 写卡失败); put it back with sim.insert to see the load settled.",
        PANEL_USERS,
        true,
        |d, _, p: SimPullParams| async move {
            Ok::<SimView, ApiError>(panel(&d)?.pull_during_next_load(&p.reader_id, p.before_write)?)
        },
    );
    m.method::<cardd_api::sim::Carry, _, _>(
        "Simulated cards only: take a demo card from outside the readers away from this site, as JSON for another site's sim.bring (a customer carrying the card to another counter).",
        PANEL_USERS,
        true,
        |d, _, p: SimCarryParams| async move {
            let (card_json, view) = panel(&d)?.carry(&p.card)?;
            Ok::<SimCarried, ApiError>(SimCarried { card_json, view })
        },
    );
    m.method::<cardd_api::sim::Bring, _, _>(
        "Simulated cards only: put a card another site's sim.carry gave into an empty simulated reader.",
        PANEL_USERS,
        true,
        |d, _, p: SimBringParams| async move {
            Ok::<SimView, ApiError>(panel(&d)?.bring(&p.reader_id, &p.card_json)?)
        },
    );
}
