//! [`RemoteSites`]: a fleet site reporting to the issuer host (`sites.report`): that it is
//! alive, and how many changes wait in its outbox. The back office shows both.

use std::sync::Arc;

use crate::link::{CallError, HostClient};
use crate::wire::{SiteReport, SITES_REPORT};

/// The host's site directory, seen from a site.
#[derive(Debug, Clone)]
pub struct RemoteSites {
    client: Arc<HostClient>,
}

impl RemoteSites {
    pub fn new(client: Arc<HostClient>) -> RemoteSites {
        RemoteSites { client }
    }

    /// Tells the host this site is alive with `outbox_pending` changes waiting for it.
    pub fn report(&self, outbox_pending: u64) -> Result<(), CallError> {
        self.client
            .call::<_, serde_json::Value>(SITES_REPORT, &SiteReport { outbox_pending })
            .map(|_| ())
    }
}
