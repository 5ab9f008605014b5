//! Proxy variables: with `HTTP_PROXY`/`HTTPS_PROXY` set, kubectl (and kubelab's own
//! waits on the API server) send the cluster's traffic to the proxy unless `NO_PROXY`
//! covers the host-only subnets (minikube warns the same way). [`check`] is a pure
//! function of the variables, passed in as a lookup.

use super::{Check, CheckState};
use crate::net::Ipv4Cidr;
use crate::reason;

/// The variables that turn a proxy on, in both spellings tools read.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
/// The variables that exempt hosts, in the order Go's and curl's clients prefer them.
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Where kubelab picks a new profile's host-only subnet (`net::candidate_subnets`):
/// what `NO_PROXY` must cover while no profile has a subnet of its own yet.
pub fn new_profile_range() -> Ipv4Cidr {
    Ipv4Cidr::new(std::net::Ipv4Addr::new(192, 168, 0, 0), 16).expect("a valid subnet")
}

/// Warns when a proxy is set and `NO_PROXY` leaves one of `subnets` out; `env` looks up
/// a variable (unset and empty are the same).
pub fn check(env: impl Fn(&str) -> Option<String>, subnets: &[Ipv4Cidr]) -> Check {
    let get = |name: &&str| env(name).filter(|v| !v.trim().is_empty());
    let Some(proxy_var) = PROXY_VARS.iter().find(|v| get(v).is_some()) else {
        return Check::ok("host", "proxy", "no HTTP(S) proxy set");
    };
    let no_proxy = NO_PROXY_VARS.iter().find_map(get).unwrap_or_default();
    let missing: Vec<String> =
        subnets.iter().filter(|s| !covers(&no_proxy, s)).map(ToString::to_string).collect();
    if missing.is_empty() {
        return Check::ok(
            "host",
            "proxy",
            format!("{proxy_var} is set; NO_PROXY covers {}", shown(subnets)),
        );
    }
    let value = no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned);
    let value: Vec<String> = value.chain(missing.iter().cloned()).collect();
    Check::bad(
        "host",
        "proxy",
        CheckState::Warn,
        &reason::HOST_PROXY_NO_PROXY,
        format!(
            "{proxy_var} is set but NO_PROXY does not cover {}: export NO_PROXY={} (and no_proxy)",
            missing.join(", "),
            value.join(",")
        ),
    )
}

/// Whether a `NO_PROXY` list exempts all of `subnet`: `*`, or a CIDR entry holding it.
/// Single addresses and domain names do not (they exempt one host, not the nodes).
fn covers(no_proxy: &str, subnet: &Ipv4Cidr) -> bool {
    no_proxy.split(',').map(str::trim).any(|entry| {
        entry == "*"
            || entry
                .parse::<Ipv4Cidr>()
                .is_ok_and(|e| e.prefix() <= subnet.prefix() && e.overlaps(subnet))
    })
}

fn shown(subnets: &[Ipv4Cidr]) -> String {
    subnets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn no_proxy_no_warning() {
        let check = check(
            env(&[("NO_PROXY", "localhost"), ("HTTP_PROXY", "")]),
            &[cidr("192.168.39.0/24")],
        );
        assert_eq!((check.state, check.message.as_str()), (CheckState::Ok, "no HTTP(S) proxy set"));
    }

    #[test]
    fn proxy_without_the_subnets_in_no_proxy_warns_with_the_value_to_set() {
        let vars = [("https_proxy", "http://proxy:3128"), ("no_proxy", "localhost, 10.0.0.0/8")];
        let subnets = [cidr("192.168.39.0/24"), cidr("10.20.30.0/24")];
        let check = check(env(&vars), &subnets);
        assert_eq!(check.state, CheckState::Warn);
        assert_eq!(check.reason.map(|r| r.id), Some("HOST_PROXY_NO_PROXY"));
        assert!(check.message.starts_with("https_proxy is set"), "{}", check.message);
        assert!(
            check.message.contains("export NO_PROXY=localhost,10.0.0.0/8,192.168.39.0/24 "),
            "{}",
            check.message
        );
    }

    #[test]
    fn a_wider_cidr_or_star_covers_but_an_address_does_not() {
        let subnet = cidr("192.168.39.0/24");
        assert!(covers("example.com,192.168.0.0/16", &subnet));
        assert!(covers("*", &subnet));
        assert!(!covers("192.168.39.10,192.168.39.0/25", &subnet));
        let vars = [("HTTP_PROXY", "http://p"), ("NO_PROXY", "192.168.0.0/16")];
        assert_eq!(check(env(&vars), &[subnet]).state, CheckState::Ok);
        // NO_PROXY wins over no_proxy, as Go's clients (kubectl) read it.
        let vars = [("HTTP_PROXY", "http://p"), ("NO_PROXY", "x"), ("no_proxy", "192.168.0.0/16")];
        assert_eq!(check(env(&vars), &[subnet]).state, CheckState::Warn);
    }
}
