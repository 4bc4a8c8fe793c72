//! The Lua bindings of the services: the modules a flow sees besides the engine's own `ui` and
//! `log`: `card` (the run's reader, journaled loads), `host` (ETC records), `group` (group
//! recharge) and `obu` (OBU issuance). The composition root registers them with the flow
//! engine ([`DaemonModules`]); the engine itself knows none of them.

pub mod card;
pub mod group;
pub mod host;
pub mod obu;

use std::sync::Weak;

use cardd_script::LuaModule;

use crate::daemon::Daemon;
use crate::flows::{RunModules, RunScope};

/// The service modules of this daemon, as the flow engine builds them for each run.
#[derive(Debug)]
pub struct DaemonModules(pub Weak<Daemon>);

impl RunModules for DaemonModules {
    fn for_run(&self, run: &RunScope) -> Vec<Box<dyn LuaModule>> {
        let Some(daemon) = self.0.upgrade() else {
            return Vec::new();
        };
        let card = card::CardModule::for_run(self.0.clone(), run);
        let mut modules: Vec<Box<dyn LuaModule>> = vec![Box::new(obu::ObuModule::new(
            self.0.clone(),
            run.flow.clone(),
            run.holder.clone(),
            run.reader_id.clone(),
            run.runtime.clone(),
        ))];
        if let Some(host) = daemon.host.clone() {
            modules.push(Box::new(host::HostModule {
                host,
                operator: run.holder.operator.clone(),
            }));
        }
        if let Some(group) = group::GroupModule::for_run(&daemon, &card) {
            modules.push(Box::new(group));
        }
        modules.insert(0, Box::new(card));
        modules
    }
}
