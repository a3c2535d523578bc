//! The endpoint URL policy on arbitrary input. The first 16 bytes are also an address for
//! `is_public`; the rest, as text, is a URL checked with and without `allow_http`.
//! An accepted URL never carries credentials, never names a non-public address literally,
//! and checking the normalised URL again gives the same answer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hookline_core::urlpolicy::{is_public, UrlPolicy, MAX_URL_LEN};
use libfuzzer_sys::fuzz_target;
use url::Host;

/// Addresses the standard library itself knows to be non-public.
fn std_knows_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || v6.is_unique_local()
        }
    }
}

fn check_address(bytes: [u8; 16]) {
    let v6 = Ipv6Addr::from(bytes);
    let v4 = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    for ip in [IpAddr::V6(v6), IpAddr::V4(v4)] {
        if std_knows_non_public(ip) {
            assert!(!is_public(ip), "{ip} judged public");
        }
        // The policy without exemptions says exactly what is_public says.
        assert_eq!(
            UrlPolicy::default().check_ip(ip).is_ok(),
            is_public(ip),
            "{ip}"
        );
    }
    // An IPv4 address means the same in every IPv6 spelling that embeds it.
    let public = is_public(IpAddr::V4(v4));
    assert_eq!(is_public(IpAddr::V6(v4.to_ipv6_mapped())), public, "{v4}");
    assert_eq!(
        is_public(IpAddr::V6(v4.to_ipv6_compatible())),
        public,
        "{v4}"
    );
    let o = v4.octets();
    let nat64 = Ipv6Addr::new(
        0x64,
        0xff9b,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    );
    assert_eq!(is_public(IpAddr::V6(nat64)), public, "{v4}");
    let six_to_four = Ipv6Addr::new(
        0x2002,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
        0,
        0,
        0,
        0,
        1,
    );
    assert_eq!(is_public(IpAddr::V6(six_to_four)), public, "{v4}");
}

fn check_url(raw: &str) {
    let strict = UrlPolicy::default();
    let lax = UrlPolicy {
        allow_http: true,
        ..UrlPolicy::default()
    };
    let strict_answer = strict.check_url(raw);
    let lax_answer = lax.check_url(raw);
    // Allowing http only ever adds http URLs.
    if let Ok(url) = &strict_answer {
        assert_eq!(lax_answer.as_ref().ok(), Some(url));
    }
    for (policy, answer) in [(&strict, strict_answer), (&lax, lax_answer)] {
        let Ok(url) = answer else { continue };
        match url.scheme() {
            "https" => {}
            "http" => assert!(policy.allow_http, "{url}"),
            other => panic!("scheme {other} accepted in {url}"),
        }
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{url}"
        );
        match url.host() {
            Some(Host::Ipv4(ip)) => assert!(is_public(IpAddr::V4(ip)), "{url}"),
            Some(Host::Ipv6(ip)) => assert!(is_public(IpAddr::V6(ip)), "{url}"),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                assert!(!name.is_empty(), "{url}");
                // A name that is an address to a resolver must be a public one.
                if let Ok(Host::Ipv4(ip)) = Host::parse(&name) {
                    assert!(is_public(IpAddr::V4(ip)), "{url} names {ip}");
                }
                assert!(
                    name != "localhost" && !name.ends_with(".localhost"),
                    "{url}"
                );
            }
            None => panic!("{url} has no host"),
        }
        assert!(url.as_str().len() <= MAX_URL_LEN, "{url} is too long");
        let again = policy.check_url(url.as_str());
        assert_eq!(again.as_ref(), Ok(&url), "re-checking {url}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.get(..16) {
        check_address(bytes.try_into().expect("16 bytes"));
    }
    if let Ok(raw) = std::str::from_utf8(data) {
        check_url(raw);
    }
    if let Some(Ok(raw)) = data.get(16..).map(std::str::from_utf8) {
        check_url(raw);
    }
});
