//! The configuration of an instance, and the parsers of its setting values.
//!
//! Every setting is a flag with a `DESKHOOK_*` environment equivalent (see [`crate::cli`] and
//! the README's table). Values are parsed once, at start; a bad value stops the start with a
//! message naming the setting. Nothing here reads the environment after start, and nothing
//! here may print a secret.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use ipnet::IpNet;

/// Connection limits (settings `DESKHOOK_MAX_CONNECTIONS`, `DESKHOOK_HEADER_READ_TIMEOUT`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long open connections may finish their requests after shutdown begins.
    pub drain_timeout: Duration,
}

/// The parts of Deskhook one instance runs (`--roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// `/v1`, `/openapi.json`, `/docs`.
    pub api: bool,
    /// The delivery worker pool (and the lease reaper, which rescues dead workers' rows).
    pub workers: bool,
    /// The SLA timer and the maintenance loops (retention; the lease reaper too).
    pub timers: bool,
}

impl Roles {
    /// Every role: the default.
    pub const ALL: Self = Self {
        api: true,
        workers: true,
        timers: true,
    };
}

impl FromStr for Roles {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut roles = Self {
            api: false,
            workers: false,
            timers: false,
        };
        for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "api" => roles.api = true,
                "workers" => roles.workers = true,
                "timers" => roles.timers = true,
                "all" => roles = Self::ALL,
                other => {
                    return Err(format!(
                        "unknown role `{other}` (expected api, workers, timers)"
                    ));
                }
            }
        }
        if !(roles.api || roles.workers || roles.timers) {
            return Err("at least one role is needed (api, workers, timers)".into());
        }
        Ok(roles)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.api, "api"),
            (self.workers, "workers"),
            (self.timers, "timers"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The per-key API rate limit (`--rate-limit`): requests per minute, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No limit (the benchmark and the demo).
    Off,
    /// Requests per minute per key; the burst is 1.67 × this.
    PerMinute(u32),
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        match text.parse::<u32>() {
            Ok(0) | Err(_) => Err(format!(
                "`{text}` is not a positive number of requests per minute or `off`"
            )),
            Ok(n) => Ok(Self::PerMinute(n)),
        }
    }
}

/// Delays between attempts (`--retry-schedule`): attempts before a delivery is dead are
/// `1 + delays.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The delay before attempt `i + 2`.
    pub delays: Vec<Duration>,
}

impl RetrySchedule {
    /// The most retries a schedule may hold.
    pub const MAX_ENTRIES: usize = 20;
}

impl Default for RetrySchedule {
    fn default() -> Self {
        "5s,30s,2m,10m,30m,1h,3h,6h,12h,24h"
            .parse()
            .expect("the default schedule parses")
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > Self::MAX_ENTRIES {
            return Err(format!(
                "{} delays given; at most {} are allowed",
                delays.len(),
                Self::MAX_ENTRIES
            ));
        }
        Ok(Self { delays })
    }
}

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d` (`15s`, `250ms`, `2h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use ms, s, m, h or d)"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Parses a comma-separated list of CIDRs (`127.0.0.0/8,::1/128`); a bare address is a /32 or
/// /128.
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{entry}` is not a network in CIDR form (like 10.0.0.0/8)"))
        })
        .collect()
}

/// Everything `serve` needs, validated.
#[derive(Clone)]
pub struct Config {
    /// The HTTP listen address.
    pub listen: SocketAddr,
    /// The database URL (the private server's when none was configured).
    pub database_url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Which roles run.
    pub roles: Roles,
    /// Networks exempt from the SSRF guard.
    pub allow_networks: Vec<IpNet>,
    /// Delays between delivery attempts.
    pub retry_schedule: RetrySchedule,
    /// The per-attempt HTTP timeout.
    pub attempt_timeout: Duration,
    /// The proxy deliveries go through, if any. Environment proxies (`HTTP_PROXY`, ...) are
    /// never used for deliveries: a proxy resolves names itself, so the SSRF guard would
    /// never see the address; this one must enforce the deny-list itself.
    pub egress_proxy: Option<url::Url>,
    /// Concurrent delivery attempts per instance.
    pub worker_concurrency: usize,
    /// Deliveries claimed per claim statement at most.
    pub claim_batch: usize,
    /// How long in-flight work may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Open HTTP connections at most, and how long clients may take to send headers.
    pub connections: ConnectionLimits,
    /// How long one HTTP request may take, body and answer included (408 after).
    pub request_timeout: Duration,
    /// API requests per minute per key.
    pub rate_limit: RateLimit,
    /// Whether `serve` applies migrations at start.
    pub migrate_on_start: bool,
    /// Whether claims and settles wait for the WAL flush (see `database::queue_pool`).
    pub queue_synchronous_commit: bool,
    /// How long history is kept.
    pub retention: Duration,
    /// The operator key that encrypts endpoint secrets at rest.
    pub secret_box: crate::secret_box::SecretBox,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &"[REDACTED]")
            .field("pool_size", &self.pool_size)
            .field("roles", &self.roles)
            .field("allow_networks", &self.allow_networks)
            .field("retry_schedule", &self.retry_schedule)
            .field("connections", &self.connections)
            .field("request_timeout", &self.request_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field(
                "egress_proxy",
                &self
                    .egress_proxy
                    .as_ref()
                    .map(|u| u.host_str().unwrap_or_default().to_owned()),
            )
            .field("worker_concurrency", &self.worker_concurrency)
            .field("claim_batch", &self.claim_batch)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("rate_limit", &self.rate_limit)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("queue_synchronous_commit", &self.queue_synchronous_commit)
            .field("retention", &self.retention)
            .field("secret_box", &self.secret_box)
            .finish()
    }
}

impl Config {
    /// A configuration for tests and embedded use: everything default but the database.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            pool_size: 10,
            roles: Roles::ALL,
            allow_networks: Vec::new(),
            retry_schedule: RetrySchedule::default(),
            attempt_timeout: Duration::from_secs(15),
            egress_proxy: None,
            worker_concurrency: 64,
            claim_batch: 200,
            shutdown_timeout: Duration::from_secs(20),
            connections: ConnectionLimits {
                max_connections: 4_096,
                header_read_timeout: Duration::from_secs(30),
                drain_timeout: Duration::from_secs(20),
            },
            request_timeout: Duration::from_secs(60),
            rate_limit: RateLimit::PerMinute(600),
            migrate_on_start: true,
            queue_synchronous_commit: false,
            retention: Duration::from_secs(30 * 86_400),
            secret_box: crate::secret_box::SecretBox::random(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_documented_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(10_800)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10y").is_err());
    }

    #[test]
    fn the_default_retry_schedule_is_the_documented_one() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.delays.len(), 10);
        assert_eq!(schedule.delays[0], Duration::from_secs(5));
        assert_eq!(schedule.delays[9], Duration::from_secs(86_400));
        assert_eq!("".parse::<RetrySchedule>().map(|s| s.delays.len()), Ok(0));
        let too_long = vec!["1s"; 21].join(",");
        assert!(too_long.parse::<RetrySchedule>().is_err());
    }

    #[test]
    fn roles_parse_and_print() {
        assert_eq!("api,workers,timers".parse::<Roles>(), Ok(Roles::ALL));
        let api = "api".parse::<Roles>().expect("api parses");
        assert!(api.api && !api.workers && !api.timers);
        assert_eq!(api.to_string(), "api");
        assert!("api,cron".parse::<Roles>().is_err());
        assert!("".parse::<Roles>().is_err());
    }

    #[test]
    fn rate_limits_and_networks() {
        assert_eq!("off".parse::<RateLimit>(), Ok(RateLimit::Off));
        assert_eq!("600".parse::<RateLimit>(), Ok(RateLimit::PerMinute(600)));
        assert!("0".parse::<RateLimit>().is_err());
        assert!("fast".parse::<RateLimit>().is_err());
        let nets = parse_networks("127.0.0.1/32, ::1").expect("networks parse");
        assert_eq!(nets.len(), 2);
        assert!(parse_networks("localhost").is_err());
    }
}
