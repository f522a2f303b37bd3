//! Where webhooks may go. A registry that posts to any URL a user names
//! would let them reach what only the registry's host can (a cloud's
//! metadata service, a local admin port): endpoints whose host is, or
//! resolves to, a loopback, link-local, unspecified, multicast or
//! metadata-service address are refused unless an administrator allowed
//! that endpoint. The check runs when the endpoint is added, on every DNS
//! answer at delivery (so a name cannot be re-pointed later), and on every
//! redirect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Host names of metadata services that are not IP literals.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata", "instance-data"];

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 3;

/// Why an address is refused, if it is.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    // Alibaba Cloud's metadata service lies outside link-local.
    if ip == Ipv4Addr::new(100, 100, 100, 200) || ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some("a metadata-service address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_link_local() {
        return Some("a link-local address");
    }
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Some("not a unicast address");
    }
    None
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // AWS's metadata service over IPv6.
    if ip
        == "fd00:ec2::254"
            .parse::<Ipv6Addr>()
            .expect("a valid literal")
    {
        return Some("a metadata-service address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if (ip.segments()[0] & 0xffc0) == 0xfe80 {
        return Some("a link-local address");
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("not a unicast address");
    }
    None
}

/// Checks a URL's form and host: `http` or `https`, a host, and no
/// internal address or metadata name unless `allow_internal`. Names are not
/// resolved here: [`Guard`] checks every answer when connecting.
pub fn check_url(text: &str, allow_internal: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?}: only http and https endpoints are supported"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?}: put credentials in a header (--header 'Authorization: ...'), not the URL"
        ));
    }
    if allow_internal {
        return Ok(url);
    }
    check_host(&url).map(|()| url)
}

fn check_host(url: &Url) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{url} is {why}; only an administrator may allow such an endpoint (--allow-internal)"
        ))
    };
    match url.host() {
        None => Err(format!("{url} names no host")),
        Some(url::Host::Ipv4(ip)) => match internal(IpAddr::V4(ip)) {
            Some(why) => refuse(why),
            None => Ok(()),
        },
        Some(url::Host::Ipv6(ip)) => match internal(IpAddr::V6(ip)) {
            Some(why) => refuse(why),
            None => Ok(()),
        },
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return refuse("a loopback address");
            }
            if METADATA_NAMES.contains(&name.as_str()) {
                return refuse("a metadata-service name");
            }
            Ok(())
        }
    }
}

/// The resolver of a delivery client: the system's answers, without the
/// addresses [`internal`] refuses (unless allowed).
pub struct Guard {
    pub allow_internal: bool,
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_internal;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow || internal(a.ip()).is_none())
                .collect();
            if kept.is_empty() && !found.is_empty() {
                let why = internal(found[0].ip()).unwrap_or("internal");
                return Err(
                    format!("{host} resolves to {why}, which webhooks may not reach").into(),
                );
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy of a delivery client: at most [`MAX_REDIRECTS`],
/// each to a URL [`check_url`] accepts.
pub fn redirects(allow_internal: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url().as_str(), allow_internal) {
            Ok(_) => attempt.follow(),
            Err(why) => attempt.error(format!("redirect refused: {why}")),
        }
    })
}

/// A client for one endpoint: guarded names and redirects, bounded time.
pub fn client(
    allow_internal: bool,
    timeout: std::time::Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(Guard { allow_internal }))
        .redirect(redirects(allow_internal))
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .timeout(timeout)
        .pool_max_idle_per_host(2)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_and_names_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.10.1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
        ] {
            let err = check_url(url, false).unwrap_err();
            assert!(err.contains("--allow-internal"), "{url}: {err}");
            assert!(check_url(url, true).is_ok(), "{url} allowed");
        }
        for url in [
            "https://ci.example.com/hooks/registry",
            "http://10.1.2.3:8080/",
            "http://192.168.1.20/",
            "http://[2001:db8::1]/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert!(check_url("ftp://example.com/", true)
            .unwrap_err()
            .contains("http and https"));
        assert!(check_url("not a url", true)
            .unwrap_err()
            .contains("not a URL"));
        assert!(check_url("https://user:pw@example.com/", true)
            .unwrap_err()
            .contains("header"));
    }

    #[tokio::test]
    async fn the_resolver_drops_internal_answers() {
        let guard = Guard {
            allow_internal: false,
        };
        let err = guard
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost refused");
        assert!(err.to_string().contains("may not reach"), "{err}");
        let allowed = Guard {
            allow_internal: true,
        };
        let addrs: Vec<_> = allowed
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
