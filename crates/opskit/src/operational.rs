//! The operational endpoints, for every adapter: where each is served and
//! what answers it. An adapter routes each [`Endpoint`] with its framework's
//! router and hands [`Endpoint::answer`] the request's `{check}` segment,
//! query and `Authorization`; the rules (which probes take a check, which
//! read the token) are here, once.

use crate::health::{Health, Probe, ProbeResponse};
use crate::Ops;

/// One operational endpoint.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The route, in the `{check}` syntax both routers take.
    pub(crate) path: String,
    answer: Answer,
}

#[derive(Clone)]
enum Answer {
    /// `/{probe}`: the probe, `?verbose`/`?exclude=`, and the token for
    /// `/health`'s details.
    Probe(Health, Probe),
    /// `/{probe}/{check}`: one check.
    Check(Health, Probe),
    /// `/metrics`, behind its token when one is set.
    #[cfg(feature = "prometheus")]
    Metrics(crate::metrics::Endpoint),
}

impl Endpoint {
    /// The answer to a GET: `check` is the route's `{check}` segment,
    /// `query` the raw query, `authorization` the header's value.
    pub(crate) async fn answer(
        &self,
        check: Option<&str>,
        query: Option<&str>,
        authorization: Option<&[u8]>,
    ) -> ProbeResponse {
        let query = query.filter(|q| !q.is_empty());
        match &self.answer {
            Answer::Probe(health, probe) => {
                health.respond(*probe, None, query, authorization).await
            }
            Answer::Check(health, probe) => health.respond(*probe, check, query, None).await,
            #[cfg(feature = "prometheus")]
            Answer::Metrics(endpoint) => endpoint.respond(authorization),
        }
    }
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// `/livez`, `/readyz`, `/startupz` (each also `/{probe}/{check}`) and
    /// `/health` under `OPSKIT_HEALTH_PREFIX`; `/metrics` at
    /// `OPSKIT_METRICS_PATH` when this service serves it.
    pub(crate) fn operational_endpoints(&self) -> Vec<Endpoint> {
        let prefix = &self.settings().health_prefix;
        let mut endpoints = Vec::new();
        for probe in Probe::ALL {
            let name = probe.path_segment();
            endpoints.push(Endpoint {
                path: format!("{prefix}/{name}"),
                answer: Answer::Probe(self.health().clone(), probe),
            });
            if probe != Probe::Report {
                endpoints.push(Endpoint {
                    path: format!("{prefix}/{name}/{{check}}"),
                    answer: Answer::Check(self.health().clone(), probe),
                });
            }
        }
        #[cfg(feature = "prometheus")]
        if let Some(endpoint) = self.metrics_endpoint() {
            endpoints.push(Endpoint {
                path: self.settings().metrics.path.clone(),
                answer: Answer::Metrics(endpoint.clone()),
            });
        }
        endpoints
    }
}
