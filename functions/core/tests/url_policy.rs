//! The URL and address policy against the spellings SSRF attacks use: every row is one URL
//! (or address) with the verdict expected of the policy. No network is touched: the policy
//! is a pure function, and the resolver rows use a stub.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use hookline_core::urlpolicy::{
    is_public, HostResolver, PolicyResolver, ResolveError, UrlPolicy, UrlRejection, MAX_URL_LEN,
};

/// The verdict expected for a URL: accepted, or the kind of rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Accept,
    Malformed,
    TooLong,
    Scheme,
    Credentials,
    NoHost,
    Address,
    Host,
}

use Want::*;

fn kind(r: &Result<url::Url, UrlRejection>) -> Want {
    match r {
        Ok(_) => Accept,
        Err(UrlRejection::Malformed(_)) => Malformed,
        Err(UrlRejection::TooLong) => TooLong,
        Err(UrlRejection::Scheme(_)) => Scheme,
        Err(UrlRejection::Credentials) => Credentials,
        Err(UrlRejection::NoHost) => NoHost,
        Err(UrlRejection::ForbiddenAddress(_)) => Address,
        Err(UrlRejection::ForbiddenHost(_)) => Host,
    }
}

/// Runs every row and reports all mismatches at once.
fn check_table(policy: &UrlPolicy, rows: &[(&str, Want)]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(url, want)| {
            let got = policy.check_url(url);
            (kind(&got) != *want).then(|| format!("{url:?}: want {want:?}, got {got:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn strict() -> UrlPolicy {
    UrlPolicy::default()
}

#[test]
fn ssrf_url_forms_are_refused_with_the_right_reason() {
    let overlong = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
    let rows: &[(&str, Want)] = &[
        // Loopback in every IPv4 spelling the WHATWG parser accepts.
        ("https://127.0.0.1/", Address),
        ("https://127.0.0.1:8443/hook", Address),
        ("https://127.255.255.254/", Address),
        ("https://2130706433/", Address),
        ("https://0x7f000001/", Address),
        ("https://0177.0.0.1/", Address),
        ("https://0177.0000.0000.0001/", Address),
        ("https://0x7f.1/", Address),
        ("https://0x7F.0x0.0x0.0x1/", Address),
        ("https://127.1/", Address),
        ("https://127.0.1/", Address),
        ("https://017700000001/", Address),
        ("https://127.0.0.1./", Address),
        ("https://%31%32%37.0.0.1/", Address),
        ("https://１２７.０.０.１/", Address),
        ("https://127。0。0。1/", Address),
        // The unspecified address, which Linux connects to loopback.
        ("https://0/", Address),
        ("https://0.0.0.0/", Address),
        ("https://0x0/", Address),
        ("https://[::]/", Address),
        // IPv6 loopback and IPv6 forms embedding a forbidden IPv4 address.
        ("https://[::1]/", Address),
        ("https://[0:0:0:0:0:0:0:1]/", Address),
        ("https://[::ffff:127.0.0.1]/", Address),
        ("https://[::ffff:7f00:1]/", Address),
        ("https://[::ffff:0:127.0.0.1]/", Address),
        ("https://[::127.0.0.1]/", Address),
        ("https://[::7f00:1]/", Address),
        ("https://[64:ff9b::127.0.0.1]/", Address),
        ("https://[64:ff9b::10.0.0.1]/", Address),
        ("https://[64:ff9b::a9fe:a9fe]/", Address),
        ("https://[64:ff9b:1::c0a8:101]/", Address),
        ("https://[2002:7f00:1::]/", Address),
        ("https://[2002:c0a8:101::1]/", Address),
        ("https://[2002:a9fe:a9fe::]/", Address),
        // Cloud metadata: 169.254.169.254 in many spellings, and the metadata names.
        ("http://169.254.169.254/latest/meta-data/", Scheme),
        ("https://169.254.169.254/latest/meta-data/", Address),
        ("https://169.254.169.254./", Address),
        ("https://2852039166/", Address),
        ("https://0xa9fea9fe/", Address),
        ("https://0xA9.0xFE.0xA9.0xFE/", Address),
        ("https://0251.0376.0251.0376/", Address),
        ("https://169.254.43518/", Address),
        ("https://169.16689662/", Address),
        ("https://[::ffff:169.254.169.254]/", Address),
        ("https://[::ffff:a9fe:a9fe]/", Address),
        ("https://[fd00:ec2::254]/", Address),
        ("https://１６９.２５４.１６９.２５４/", Address),
        ("https://169.254.170.2/v2/credentials", Address),
        ("https://metadata.google.internal/computeMetadata/v1/", Host),
        ("https://METADATA.GOOGLE.INTERNAL./", Host),
        ("https://metadata/computeMetadata/v1/", Host),
        // Local names.
        ("https://localhost/", Host),
        ("https://localhost:8443/", Host),
        ("https://LocalHost./", Host),
        ("https://api.localhost/", Host),
        ("https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", Host),
        ("https://localhost。/", Host),
        ("https://printer.local/", Host),
        ("https://db.internal/", Host),
        ("https://router.localdomain/", Host),
        ("https://nas.home.arpa/", Host),
        ("https://intranet/", Host),
        // Private, shared and special-purpose IPv4 networks.
        ("https://10.0.0.1/", Address),
        ("https://10.255.255.255/", Address),
        ("https://172.16.0.1/", Address),
        ("https://172.31.255.254/", Address),
        ("https://192.168.0.1/", Address),
        ("https://192.168.255.255/", Address),
        ("https://100.64.0.1/", Address),
        ("https://100.127.255.254/", Address),
        ("https://198.18.0.1/", Address),
        ("https://198.19.255.254/", Address),
        ("https://192.0.0.8/", Address),
        ("https://192.0.2.1/", Address),
        ("https://198.51.100.7/", Address),
        ("https://203.0.113.9/", Address),
        ("https://240.0.0.1/", Address),
        ("https://255.255.255.255/", Address),
        ("https://224.0.0.1/", Address),
        ("https://239.255.255.250/", Address),
        // Special-purpose IPv6 networks.
        ("https://[ff02::1]/", Address),
        ("https://[ff05::1:3]/", Address),
        ("https://[fe80::1]/", Address),
        ("https://[febf::1]/", Address),
        ("https://[fc00::1]/", Address),
        ("https://[fd12:3456:789a::1]/", Address),
        ("https://[fec0::1]/", Address),
        ("https://[2001:db8::1]/", Address),
        ("https://[2001:db8:ffff::1]/", Address),
        ("https://[100::1]/", Address),
        ("https://[2001::1]/", Address),
        ("https://[4000::1]/", Address),
        // Credentials, and URLs built so a careless reader sees another host.
        ("https://good.com@127.0.0.1/", Credentials),
        ("https://good.com:443@127.0.0.1/", Credentials),
        ("https://user:pw@example.com/", Credentials),
        ("https://user@example.com/", Credentials),
        ("https://127.0.0.1#@good.com/", Address),
        ("https://127.0.0.1?@good.com/", Address),
        ("https://good.com\\@127.0.0.1/", Malformed),
        ("https://good.com\\@example.com/", Malformed),
        ("https://exam\tple.com/", Malformed),
        ("https://example.com/\npath", Malformed),
        // Ports out of range or zero.
        ("https://example.com:0/", Malformed),
        ("https://example.com:65536/", Malformed),
        ("https://example.com:99999/", Malformed),
        ("https://example.com:-1/", Malformed),
        ("https://[::1%25eth0]/", Malformed),
        ("https://[::1/", Malformed),
        // Schemes.
        ("file:///etc/passwd", Scheme),
        ("gopher://example.com:70/_GET", Scheme),
        ("ftp://example.com/", Scheme),
        ("javascript:alert(1)", Scheme),
        ("data:text/plain,hi", Scheme),
        ("ws://example.com/", Scheme),
        ("dict://example.com:11211/", Scheme),
        ("http://example.com/", Scheme),
        ("HTTP://example.com/", Scheme),
        // Not a URL, or no host.
        ("", Malformed),
        ("example.com/hook", Malformed),
        ("//example.com/hook", Malformed),
        ("https://", Malformed),
        ("https:// /", Malformed),
        (&overlong, TooLong),
        // Public URLs that must be accepted.
        ("https://example.com/hooks", Accept),
        ("https://hooks.example.com:8443/a?b=c", Accept),
        ("https://example.com:443/", Accept),
        ("https://example.com:1/", Accept),
        ("https://example.com:65535/", Accept),
        ("https://example.com./hook", Accept),
        ("https://HOOKS.Example.COM/Path", Accept),
        ("https://bücher.example/hook", Accept),
        ("https://xn--bcher-kva.example/hook", Accept),
        ("https://例え.テスト/hook", Accept),
        ("https://93.184.215.14/x", Accept),
        ("https://8.8.8.8:8443/x", Accept),
        ("https://100.128.0.1/", Accept),
        ("https://172.32.0.1/", Accept),
        ("https://192.169.0.1/", Accept),
        ("https://198.20.0.1/", Accept),
        ("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x", Accept),
        ("https://[2606:4700:4700::1111]:8443/x", Accept),
        ("https://[::ffff:8.8.8.8]/", Accept),
        ("https://[64:ff9b::8.8.8.8]/", Accept),
        ("https://[2002:808:808::1]/", Accept),
        ("  https://example.com/hook  ", Accept),
        ("https://example.com/a/../b#frag", Accept),
        ("https://local.example.com/", Accept),
        ("https://internal.example.com/", Accept),
        ("https://localhost.example.com/", Accept),
        ("https://127.0.0.1.example.com/", Accept),
    ];
    assert!(rows.len() >= 40);
    check_table(&strict(), rows);
}

#[test]
fn http_is_accepted_only_when_allowed_and_addresses_stay_checked() {
    let open = UrlPolicy {
        allow_http: true,
        allowed_networks: Vec::new(),
    };
    check_table(
        &open,
        &[
            ("http://example.com/", Accept),
            ("HTTP://example.com:8080/", Accept),
            ("http://127.0.0.1/", Address),
            ("http://169.254.169.254/latest/meta-data/", Address),
            ("http://[::ffff:127.0.0.1]/", Address),
            ("http://localhost/", Host),
            ("ftp://example.com/", Scheme),
        ],
    );
}

#[test]
fn allowed_networks_exempt_exactly_their_addresses() {
    let tests = UrlPolicy {
        allow_http: true,
        allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32, fd00:1::/64").unwrap(),
    };
    check_table(
        &tests,
        &[
            ("http://127.0.0.1:9000/", Accept),
            ("http://2130706433:9000/", Accept),
            ("http://[::ffff:127.0.0.1]:9000/", Accept),
            ("http://[fd00:1::5]/", Accept),
            ("http://127.0.0.2/", Address),
            ("http://[::1]/", Address),
            ("http://[fd00:2::5]/", Address),
            ("http://169.254.169.254/", Address),
            // An exempt network does not make local names acceptable.
            ("http://localhost:9000/", Host),
        ],
    );
}

#[test]
fn is_public_and_check_ip_judge_every_address_form() {
    let rows: &[(&str, bool)] = &[
        ("0.0.0.0", false),
        ("0.1.2.3", false),
        ("10.0.0.1", false),
        ("100.64.0.1", false),
        ("100.127.255.255", false),
        ("127.0.0.1", false),
        ("127.255.255.255", false),
        ("169.254.169.254", false),
        ("172.16.0.1", false),
        ("172.31.255.255", false),
        ("192.0.0.170", false),
        ("192.0.2.1", false),
        ("192.88.99.1", false),
        ("192.168.1.1", false),
        ("198.18.0.1", false),
        ("198.19.255.255", false),
        ("198.51.100.1", false),
        ("203.0.113.1", false),
        ("224.0.0.1", false),
        ("239.255.255.255", false),
        ("240.0.0.1", false),
        ("255.255.255.255", false),
        ("::", false),
        ("::1", false),
        ("::ffff:127.0.0.1", false),
        ("::ffff:7f00:1", false),
        ("::ffff:10.0.0.1", false),
        ("::ffff:169.254.169.254", false),
        ("::ffff:0:127.0.0.1", false),
        ("::127.0.0.1", false),
        ("::10.0.0.1", false),
        ("64:ff9b::127.0.0.1", false),
        ("64:ff9b::192.168.0.1", false),
        ("64:ff9b:1::1", false),
        ("2002:7f00:1::1", false),
        ("2002:a00:1::1", false),
        ("2001::1", false),
        ("2001:db8::1", false),
        ("100::1", false),
        ("fc00::1", false),
        ("fd00:ec2::254", false),
        ("fe80::1", false),
        ("fec0::1", false),
        ("ff02::1", false),
        ("ff0e::1", false),
        ("4000::1", false),
        ("1.1.1.1", true),
        ("8.8.8.8", true),
        ("93.184.215.14", true),
        ("100.63.255.255", true),
        ("100.128.0.0", true),
        ("172.15.255.255", true),
        ("172.32.0.0", true),
        ("192.167.255.255", true),
        ("198.17.255.255", true),
        ("223.255.255.254", true),
        ("::ffff:8.8.8.8", true),
        ("64:ff9b::8.8.8.8", true),
        ("2002:808:808::1", true),
        ("2606:4700:4700::1111", true),
        ("2a00:1450:4001:82b::200e", true),
    ];
    let policy = strict();
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(ip, want)| {
            let addr: IpAddr = ip.parse().unwrap();
            let public = is_public(addr);
            let allowed = policy.check_ip(addr).is_ok();
            (public != *want || allowed != *want)
                .then(|| format!("{ip}: want {want}, is_public {public}, check_ip {allowed}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(matches!(
        policy.check_ip("::ffff:127.0.0.1".parse().unwrap()),
        Err(UrlRejection::ForbiddenAddress(_))
    ));
}

/// Answers every lookup with the same addresses.
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
async fn resolved_addresses_are_judged_like_literal_ones() {
    let policy = Arc::new(strict());
    let rows: &[(&str, &[&str], bool)] = &[
        ("hooks.example.com", &["93.184.215.14"], true),
        (
            "hooks.example.com",
            &["2606:4700:4700::1111", "1.1.1.1"],
            true,
        ),
        ("127.0.0.1.nip.io", &["127.0.0.1"], false),
        ("evil.example.com", &["169.254.169.254"], false),
        ("evil.example.com", &["::ffff:169.254.169.254"], false),
        ("evil.example.com", &["64:ff9b::a00:1"], false),
        ("evil.example.com", &["1.1.1.1", "10.0.0.1"], false),
        ("evil.example.com", &["2606:4700:4700::1111", "::1"], false),
        ("evil.example.com", &["0.0.0.0"], false),
        ("localhost", &["93.184.215.14"], false),
        ("metadata.google.internal", &["93.184.215.14"], false),
    ];
    for (host, answer, want) in rows {
        let addrs: Vec<IpAddr> = answer.iter().map(|a| a.parse().unwrap()).collect();
        let resolver = PolicyResolver::new(policy.clone(), Arc::new(Fixed(addrs.clone())));
        let got = resolver.resolve_checked(host).await;
        match (want, &got) {
            (true, Ok(checked)) => assert_eq!(checked, &addrs, "{host} {answer:?}"),
            (false, Err(ResolveError::Blocked(_))) => {}
            _ => panic!("{host} {answer:?}: want allowed={want}, got {got:?}"),
        }
    }
}
