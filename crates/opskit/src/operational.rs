//! The operational endpoints, for every adapter: where each is served, which
//! methods it answers and what answers it. An adapter routes each
//! [`Endpoint`] for every method with its framework's router and hands
//! [`Endpoint::answer`] the request as a [`Call`]; the rules (the methods
//! and the 405, which probes take a check, which read the token, the
//! log-filter changes) are here, once.

use crate::health::{bearer_matches, Health, Probe, ProbeResponse};
use crate::response_headers::HeaderMapLike;
use crate::Ops;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest body `PUT /loggers` reads (a filter and a ttl).
pub(crate) const MAX_BODY: usize = 4096;

/// One request to an operational endpoint, as an adapter finds it.
pub(crate) struct Call<'a, M> {
    /// The request method.
    pub(crate) method: &'a str,
    /// The route's `{check}` segment.
    pub(crate) check: Option<&'a str>,
    /// The raw query.
    pub(crate) query: Option<&'a str>,
    /// The request headers (`Authorization`, and the forwarded client).
    pub(crate) headers: &'a M,
    /// The socket peer.
    pub(crate) peer: Option<IpAddr>,
    /// The body, at most [`MAX_BODY`] bytes (`None`: it was longer).
    pub(crate) body: Option<&'a [u8]>,
}

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
    /// `/loggers`: the log filter, behind `OPSKIT_ADMIN_TOKEN`.
    Loggers(Arc<Admin>),
}

impl Answer {
    /// The methods it answers, as the `Allow` header of a 405 lists them
    /// (HEAD is answered as GET; the server leaves the body out).
    fn allow(&self) -> &'static str {
        match self {
            Self::Loggers(_) => "GET, HEAD, PUT, DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// What `/loggers` needs: the token, who is the client, the filter.
struct Admin {
    token: crate::Secret,
    proxies: crate::ratelimit::TrustedProxies,
    levels: &'static crate::logging::LogLevels,
}

impl Endpoint {
    /// The answer to `call`: 405 (with `Allow`) for a method the endpoint
    /// does not answer, else the endpoint's own.
    pub(crate) async fn answer<M: HeaderMapLike>(&self, call: Call<'_, M>) -> ProbeResponse {
        let allow = self.answer.allow();
        if !allow.split(", ").any(|m| m == call.method) {
            // A method outside RFC 9110's: the 501 every route answers.
            if let Some(p) = crate::problem::replace_unrouted(call.method, 405, true) {
                return ProbeResponse::problem(&p);
            }
            return ProbeResponse {
                allow: Some(allow),
                ..ProbeResponse::problem(
                    &crate::Problem::new(405).detail("this endpoint does not answer that method"),
                )
            };
        }
        let query = call.query.filter(|q| !q.is_empty());
        let authorization = call.headers.get_str("authorization");
        match &self.answer {
            Answer::Probe(health, probe) => {
                health.respond(*probe, None, query, authorization).await
            }
            Answer::Check(health, probe) => health.respond(*probe, call.check, query, None).await,
            #[cfg(feature = "prometheus")]
            Answer::Metrics(endpoint) => endpoint.respond(authorization),
            Answer::Loggers(admin) => admin.respond(&call, authorization),
        }
    }
}

impl Admin {
    /// `GET`: the filter in force; `PUT`: a new one (for a ttl); `DELETE`:
    /// the start-up filter back. Each change is logged with the client's
    /// address; a refused token too.
    fn respond<M: HeaderMapLike>(
        &self,
        call: &Call<'_, M>,
        authorization: Option<&[u8]>,
    ) -> ProbeResponse {
        let client = self.proxies.client(call.peer, |name| {
            let name = M::static_name(if name == "forwarded" {
                "forwarded"
            } else {
                "x-forwarded-for"
            });
            call.headers.lines(&name).collect::<Vec<_>>()
        });
        let client = client.map(crate::decimal::IpText::new);
        let who = client.as_ref().map(crate::decimal::IpText::as_str);
        if !bearer_matches(authorization, &self.token) {
            tracing::event!(target: "opskit::admin", tracing::Level::WARN, client.address = who, method = call.method, "log filter request refused: missing or wrong bearer token");
            return ProbeResponse::unauthorized();
        }
        // A refusal: its status and what the caller is told (and the log says).
        let changed: Result<_, (u16, String)> = match call.method {
            "PUT" => match call.body.map(parse_change) {
                None => Err((413, format!("the body is over {MAX_BODY} bytes"))),
                Some(Err(detail)) => Err((400, detail.to_owned())),
                Some(Ok((filter, ttl))) => self
                    .levels
                    .set(&filter, ttl)
                    .map(|c| (c, ttl))
                    .map_err(|e| (400, e)),
            },
            "DELETE" => self.levels.reset().map(|c| (c, None)).map_err(|e| (500, e)),
            _ => return self.current(),
        };
        match changed {
            Ok((change, ttl)) => {
                tracing::event!(
                    target: "opskit::admin",
                    tracing::Level::WARN,
                    client.address = who,
                    filter = %change.filter,
                    previous = %change.previous,
                    ttl_ms = ttl.map(|t| t.as_millis() as u64),
                    "log filter changed"
                );
                self.current()
            }
            Err((status, detail)) => {
                tracing::event!(target: "opskit::admin", tracing::Level::WARN, client.address = who, method = call.method, reason = %detail, "log filter change refused");
                ProbeResponse::problem(&crate::Problem::new(status).detail(detail))
            }
        }
    }

    fn current(&self) -> ProbeResponse {
        ProbeResponse {
            content_type: "application/json",
            ..ProbeResponse::text(200, self.levels.describe().to_string())
        }
    }
}

/// `{"filter": "<RUST_LOG>", "ttl": "30s"}` (the ttl is optional, in the
/// configuration's duration syntax, up to 24 h).
fn parse_change(body: &[u8]) -> Result<(String, Option<Duration>), &'static str> {
    use crate::config::FromVar;
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        "the body is not JSON such as {\"filter\": \"info,my_crate=debug\", \"ttl\": \"30s\"}"
    })?;
    let filter = v["filter"]
        .as_str()
        .filter(|f| !f.trim().is_empty())
        .ok_or("`filter` (a RUST_LOG directive such as info,my_crate=debug) is missing")?;
    let ttl = match &v["ttl"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(t) => Some(
            Duration::from_var(t)
                .ok()
                .filter(|t| !t.is_zero() && *t <= crate::logging::MAX_TTL)
                .ok_or("`ttl` is not a duration from 1ms to 24h such as 30s or 5m")?,
        ),
        _ => return Err("`ttl` is not a duration such as \"30s\""),
    };
    Ok((filter.to_owned(), ttl))
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// `/livez`, `/readyz`, `/startupz` (each also `/{probe}/{check}`) and
    /// `/health` under `OPSKIT_HEALTH_PREFIX`; `/metrics` at
    /// `OPSKIT_METRICS_PATH` when this service serves it; `/loggers` under
    /// the prefix when `OPSKIT_ADMIN_TOKEN` is set (and opskit installed the
    /// log subscriber).
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
        let levels = crate::logging::LogLevels::global();
        if let (Some(token), Some(levels)) = (&self.settings().admin_token, levels) {
            endpoints.push(Endpoint {
                path: format!("{prefix}/loggers"),
                answer: Answer::Loggers(Arc::new(Admin {
                    token: token.clone(),
                    proxies: self.rate_limiter().trusted_proxies().clone(),
                    levels,
                })),
            });
        }
        endpoints
    }
}
