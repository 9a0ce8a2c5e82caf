//! The health variables: where the probes are served, who sees details,
//! and the commit they show.

use super::parse::{LongSecret, PathPrefix, Reader};
use super::VarSpec;

pub(super) const HEALTH_PREFIX: VarSpec = VarSpec::new(
    "OPSKIT_HEALTH_PREFIX",
    "a path prefix such as /_ops, or empty",
    None,
    "Prefix of the probe paths (`/livez`, `/readyz`, `/startupz`, `/health`).",
);
pub(super) const HEALTH_TOKEN: VarSpec = VarSpec::new(
    "OPSKIT_HEALTH_TOKEN",
    "a secret of at least 16 characters",
    None,
    "When set, `/health` shows service details and check messages only to `Authorization: Bearer <token>`; status codes stay public.",
)
.secret();
pub(super) const COMMIT: VarSpec = VarSpec::new(
    "OPSKIT_COMMIT",
    "a version-control commit id",
    None,
    "Commit shown in `/health`. Unset: the one given in code, else `unknown`.",
);

/// The health part of [`super::Settings`] (flat fields there).
pub(super) struct Health {
    pub(super) prefix: String,
    pub(super) token: Option<crate::Secret>,
    pub(super) commit: Option<String>,
}

/// Reads every health variable through `r` (each problem is recorded
/// there). None has a default that could be invalid, so this always gives
/// settings; the caller refuses them when the report is not empty.
pub(super) fn read(r: &mut Reader<'_>) -> Option<Health> {
    let prefix: Option<PathPrefix> = r.read(&HEALTH_PREFIX);
    let token: Option<LongSecret> = r.read(&HEALTH_TOKEN);
    let commit = r.read(&COMMIT);
    Some(Health {
        prefix: prefix.map(|p| p.0).unwrap_or_default(),
        token: token.map(|t| t.0),
        commit,
    })
}
