//! Where Hookline may send requests. At save time a URL must be `https` (or `http` when the
//! deployment allows it), carry no credentials, and not name a forbidden address literally.
//! At delivery time every resolved address is checked by [`PolicyResolver`], and the HTTP
//! client connects only to the addresses it returned, so a DNS answer that changes between
//! check and connect (rebinding) cannot reach a forbidden address.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longest URL accepted for an endpoint.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Accept `http://` URLs (local mode and tests).
    pub allow_http: bool,
    /// Networks exempt from the private-address block.
    pub allowed_networks: Vec<IpNet>,
}

/// Why a URL or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    #[error("not a valid absolute URL: {0}")]
    Malformed(String),
    #[error("URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("scheme {0:?} is not allowed; use https")]
    Scheme(String),
    #[error("URLs with user names or passwords are not allowed")]
    Credentials,
    #[error("URL has no host")]
    NoHost,
    #[error("address {0} is not publicly routable")]
    ForbiddenAddress(IpAddr),
    #[error("host {0:?} is not allowed")]
    ForbiddenHost(String),
}

impl UrlPolicy {
    /// Parses `HOOKLINE_ALLOWED_NETWORKS`: comma-separated CIDRs or single addresses.
    pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{p:?} is not a CIDR network or address"))
            })
            .collect()
    }

    /// Checks an endpoint URL as given by a user and returns it normalised.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlRejection> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlRejection::TooLong);
        }
        let raw = raw.trim();
        // The URL parser silently drops tabs and newlines and reads `\` as `/`; a URL that
        // different readers could take for different hosts is refused instead.
        if raw.chars().any(|c| c.is_control() || c == '\\') {
            return Err(UrlRejection::Malformed(
                "control characters and backslashes are not allowed".into(),
            ));
        }
        let url = Url::parse(raw).map_err(|e| UrlRejection::Malformed(e.to_string()))?;
        // Normalising percent-encodes, so a URL can grow past the limit after the check above.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlRejection::TooLong);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(UrlRejection::Scheme(other.to_string())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRejection::Credentials);
        }
        if url.port() == Some(0) {
            return Err(UrlRejection::Malformed("port 0 is not allowed".into()));
        }
        match url.host() {
            None => return Err(UrlRejection::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                if is_local_name(name) {
                    return Err(UrlRejection::ForbiddenHost(name.to_string()));
                }
                // The URL parser drops one trailing dot only, so `127.0.0.1..` stays a name,
                // which resolvers read as the address: judge it as that address.
                if let Ok(Host::Ipv4(ip)) = Host::parse(name) {
                    self.check_ip(IpAddr::V4(ip))?;
                }
            }
        }
        Ok(url)
    }

    /// An address may be connected to if it is public or in an allowed network.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UrlRejection> {
        let ip = ip.to_canonical();
        if self.allowed_networks.iter().any(|n| n.contains(&ip)) || is_public(ip) {
            Ok(())
        } else {
            Err(UrlRejection::ForbiddenAddress(ip))
        }
    }
}

/// Names that only mean something inside a network: `localhost`, the special-use and
/// private-use suffixes below, and single labels (which the resolver completes with the
/// host's search domains, e.g. `metadata` on Google Cloud).
fn is_local_name(name: &str) -> bool {
    const LOCAL_SUFFIXES: [&str; 6] = [
        "localhost",   // RFC 6761
        "local",       // multicast DNS, RFC 6762
        "internal",    // private use, e.g. metadata.google.internal
        "localdomain", // common resolver default
        "home.arpa",   // home networks, RFC 8375
        "arpa",        // reverse-lookup and infrastructure names
    ];
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    !lower.contains('.')
        || LOCAL_SUFFIXES.iter().any(|suffix| {
            lower == *suffix
                || lower
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
}

static FORBIDDEN_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // carrier-grade NAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, broadcast
    ]
    .iter()
    .map(|n| n.parse().expect("static network"))
    .collect()
});

static FORBIDDEN_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    [
        "::/128",         // unspecified
        "::1/128",        // loopback
        "64:ff9b:1::/48", // local-use NAT64
        "100::/64",       // discard-only
        "2001::/23",      // IETF protocol assignments (Teredo, benchmarking, ORCHID…)
        "2001:db8::/32",  // documentation
        "3fff::/20",      // documentation
        "fc00::/7",       // unique local
        "fe80::/10",      // link-local
        "fec0::/10",      // site-local (deprecated)
        "ff00::/8",       // multicast
    ]
    .iter()
    .map(|n| n.parse().expect("static network"))
    .collect()
});

/// Global unicast, the only IPv6 space allocated for public addresses.
static GLOBAL_UNICAST_V6: LazyLock<Ipv6Net> =
    LazyLock::new(|| "2000::/3".parse().expect("static network"));

/// True when an address is globally routable unicast. IPv6 forms that embed an IPv4
/// address (mapped, translated, compatible, NAT64, 6to4) are judged by the embedded address;
/// other IPv6 addresses must be global unicast (`2000::/3`) outside the special ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            GLOBAL_UNICAST_V6.contains(&v6) && !FORBIDDEN_V6.iter().any(|n| n.contains(&v6))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !FORBIDDEN_V4.iter().any(|n| n.contains(&ip))
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated, SIIT) and ::a.b.c.d
        // (compatible, deprecated)
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d (well-known NAT64 prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Looks host names up. The system resolver in production, a stub in tests.
pub trait HostResolver: Send + Sync + 'static {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A resolver for the HTTP client that refuses a host if any of its addresses is forbidden,
/// and hands the client only the addresses it checked.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Arc<UrlPolicy>,
    inner: Arc<dyn HostResolver>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<UrlPolicy>, inner: Arc<dyn HostResolver>) -> Self {
        PolicyResolver { policy, inner }
    }

    /// Resolves and checks; the addresses returned are the only ones that may be used.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let host = host.trim_end_matches('.');
        if is_local_name(host) {
            return Err(ResolveError::Blocked(UrlRejection::ForbiddenHost(
                host.into(),
            )));
        }
        let addrs = self
            .inner
            .lookup(host.to_string())
            .await
            .map_err(ResolveError::Lookup)?;
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(std::io::Error::other("no addresses")));
        }
        for ip in &addrs {
            self.policy.check_ip(*ip).map_err(ResolveError::Blocked)?;
        }
        Ok(addrs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Blocked(UrlRejection),
    #[error("lookup failed: {0}")]
    Lookup(std::io::Error),
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.resolve_checked(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UrlPolicy {
        UrlPolicy::default()
    }

    #[test]
    fn accepts_public_https_urls() {
        for url in [
            "https://example.com/hooks",
            "https://hooks.example.com:8443/a?b=c",
            "https://93.184.215.14/x",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x",
        ] {
            assert!(strict().check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn refuses_http_unless_allowed() {
        assert_eq!(
            strict().check_url("http://example.com/"),
            Err(UrlRejection::Scheme("http".into()))
        );
        let p = UrlPolicy {
            allow_http: true,
            ..UrlPolicy::default()
        };
        assert!(p.check_url("http://example.com/").is_ok());
        assert!(p.check_url("ftp://example.com/").is_err());
    }

    #[test]
    fn refuses_forbidden_literal_addresses_in_any_spelling() {
        for url in [
            "https://127.0.0.1/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://0/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::10.0.0.1]/",
            "https://[2002:7f00:1::]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://192.0.2.1/",
            "https://198.18.0.1/",
        ] {
            assert!(strict().check_url(url).is_err(), "{url} was accepted");
        }
    }

    /// The URL parser keeps `127.0.0.1..` a domain name; it must still count as the address.
    #[test]
    fn addresses_with_extra_trailing_dots_are_judged_as_addresses() {
        for url in [
            "https://127.0.0.1../",
            "https://10.0.0.1.../x",
            "https://0x7f.1../",
            "https://169.254.169.254../latest",
        ] {
            assert!(
                matches!(
                    strict().check_url(url),
                    Err(UrlRejection::ForbiddenAddress(_))
                ),
                "{url} was not refused as an address"
            );
        }
        assert!(strict().check_url("https://93.184.215.14../").is_ok());
    }

    /// The limit holds for the normalised URL, which is what is stored and sent.
    #[test]
    fn the_length_limit_applies_after_normalising() {
        let spaced = format!("https://example.com/{}", "a b".repeat(600));
        assert!(spaced.len() <= MAX_URL_LEN);
        assert_eq!(strict().check_url(&spaced), Err(UrlRejection::TooLong));
        let fits = format!("https://example.com/{}", "a b".repeat(300));
        assert!(strict().check_url(&fits).unwrap().as_str().len() <= MAX_URL_LEN);
    }

    #[test]
    fn refuses_credentials_and_malformed_urls() {
        assert_eq!(
            strict().check_url("https://user:pw@example.com/"),
            Err(UrlRejection::Credentials)
        );
        assert!(matches!(
            strict().check_url("not a url"),
            Err(UrlRejection::Malformed(_))
        ));
        assert!(strict().check_url("https://").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(strict().check_url(&long), Err(UrlRejection::TooLong));
    }

    #[test]
    fn allowed_networks_exempt_exactly_their_addresses() {
        let p = UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32, 10.9.0.0/16").unwrap(),
        };
        assert!(p.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(p.check_url("http://[::ffff:127.0.0.1]:9000/").is_ok());
        assert!(p.check_url("http://10.9.3.4/").is_ok());
        assert!(p.check_url("http://127.0.0.2/").is_err());
        assert!(p.check_url("http://10.8.0.1/").is_err());
        assert!(UrlPolicy::parse_networks("nonsense").is_err());
        assert_eq!(UrlPolicy::parse_networks("").unwrap(), vec![]);
    }

    struct Fixed(Vec<IpAddr>);

    impl HostResolver for Fixed {
        fn lookup(
            &self,
            _host: String,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let addrs = self.0.clone();
            Box::pin(async move { Ok(addrs) })
        }
    }

    #[tokio::test]
    async fn resolver_refuses_a_host_if_any_address_is_forbidden() {
        let policy = Arc::new(strict());
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        let ok = PolicyResolver::new(policy.clone(), Arc::new(Fixed(vec![public])));
        assert_eq!(
            ok.resolve_checked("example.com").await.unwrap(),
            vec![public]
        );
        let mixed = PolicyResolver::new(policy, Arc::new(Fixed(vec![public, private])));
        assert!(matches!(
            mixed.resolve_checked("example.com").await,
            Err(ResolveError::Blocked(UrlRejection::ForbiddenAddress(_)))
        ));
    }
}
