//! A cardd site's link to the central issuer host (后台), and the wire both ends speak.
//!
//! * [`wire`]: the host's JSON-RPC methods and messages: the two load methods
//!   (`host.authorize`, `host.confirm`) and the record methods (`records.*`);
//! * [`link`]: [`HostClient`], JSON-RPC over HTTPS with the site's client certificate, and
//!   [`HttpsLink`], the keyless load link (`cardd_authority::HostLink`) on it;
//! * [`records`]: [`RemoteRecords`], the host's recharge records as the site's
//!   `cardd_etc::IssuerHost`, and the host's side of the record methods;
//! * [`groups`]: [`RemoteGroups`], the host's group recharge (quotas, orders, top-ups) as the
//!   site's `cardd_group::GroupHost`, and the host's side of the group methods;
//! * [`operators`]: [`RemoteOperators`], the fleet's operators kept at the host: passwords
//!   checked there, and which of a site's logged-in operators were disabled or removed;
//! * [`sites`]: [`RemoteSites`], the site's periodic report to the host (alive, outbox length).
//!
//! **Architecture invariants.**
//! * A site holds no key and no record: loads are authorised and records kept at the host.
//! * Nothing that is not the host's answer is taken for one: no connection, a timeout or a
//!   malformed reply is "unreachable" ([`CallError::Unreachable`]), which refuses a load before
//!   CREDIT and is never read as a refusal or a success.
//! * The host's refusals reach the teller word for word, with their API codes.
#![forbid(unsafe_code)]

pub mod groups;
pub mod link;
pub mod operators;
pub mod records;
pub mod sites;
pub mod wire;

pub use groups::RemoteGroups;
pub use link::{
    CallError, ClientStats, HostClient, HttpsLink, LinkSetupError, HOST_CALL_TIMEOUT_MS,
};
pub use operators::{RemoteOperatorError, RemoteOperators};
pub use records::RemoteRecords;
pub use sites::RemoteSites;
