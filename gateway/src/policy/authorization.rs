//! Authorization rules as the entries of an authorization LPM table, with AWS Client
//! VPN's semantics: the most specific rule prefix containing a destination decides
//! alone, and allows all users or the union of the groups its rules name.

use std::collections::BTreeMap;

use gateway_ebpf_common::AuthzValue;
use ipnet::Ipv4Net;

use super::{Access, AuthorizationRule};

/// One LPM map entry per distinct rule network (host bits cleared), with the union of
/// what the rules on exactly that network allow. Sorted by network, then prefix length.
pub fn compile_authorization(rules: &[AuthorizationRule]) -> Vec<(Ipv4Net, AuthzValue)> {
    let mut by_network: BTreeMap<(u32, u8), AuthzValue> = BTreeMap::new();
    for rule in rules {
        let net = rule.destination.trunc();
        let entry = by_network
            .entry((u32::from(net.network()), net.prefix_len()))
            .or_default();
        match rule.access {
            Access::AllUsers => entry.all_users = 1,
            Access::Group(g) => entry.groups.insert(g.get()),
        }
    }
    by_network
        .into_iter()
        .map(|((addr, len), v)| {
            let net = Ipv4Net::new(addr.into(), len).expect("prefix length came from an Ipv4Net");
            (net, v)
        })
        .collect()
}

/// Longest-prefix lookup over compiled entries, as the kernel's LPM trie does it.
pub fn lookup(
    entries: &[(Ipv4Net, AuthzValue)],
    destination: std::net::Ipv4Addr,
) -> Option<&AuthzValue> {
    entries
        .iter()
        .filter(|(net, _)| net.contains(&destination))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::{GroupId, group_set};

    /// The algorithm reconstructed from AWS's documented scenarios, written from the
    /// rules directly (no LPM map): the longest matching prefix decides, no fallback.
    fn aws_allowed(rules: &[AuthorizationRule], groups: &[GroupId], dst: Ipv4Addr) -> bool {
        let matching: Vec<&AuthorizationRule> = rules
            .iter()
            .filter(|r| r.destination.contains(&dst))
            .collect();
        let Some(longest) = matching.iter().map(|r| r.destination.prefix_len()).max() else {
            return false;
        };
        matching
            .iter()
            .filter(|r| r.destination.prefix_len() == longest)
            .any(|r| match r.access {
                Access::AllUsers => true,
                Access::Group(g) => groups.contains(&g),
            })
    }

    fn compiled_allowed(rules: &[AuthorizationRule], groups: &[GroupId], dst: Ipv4Addr) -> bool {
        let entries = compile_authorization(rules);
        lookup(&entries, dst).is_some_and(|v| v.allows(&group_set(groups)))
    }

    fn g(n: u16) -> GroupId {
        GroupId::new(n).unwrap()
    }

    fn rule(cidr: &str, access: Access) -> AuthorizationRule {
        AuthorizationRule {
            destination: cidr.parse().unwrap(),
            access,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const DEV: u16 = 1;
    const MANAGER: u16 = 2;
    const ENGINEERING: u16 = 3;

    /// AWS scenario: a more specific rule for another group takes a host away from a
    /// group that the broader rule allowed.
    #[test]
    fn more_specific_rule_for_another_group_denies() {
        let rules = [
            rule("10.0.0.0/16", Access::Group(g(DEV))),
            rule("10.0.2.119/32", Access::Group(g(MANAGER))),
        ];
        let dev = [g(DEV)];
        let manager = [g(MANAGER)];
        for (groups, dst, want) in [
            (&dev[..], "10.0.5.5", true),
            (&dev[..], "10.0.2.119", false),
            (&manager[..], "10.0.2.119", true),
            (&manager[..], "10.0.5.5", false),
            (&dev[..], "10.1.0.1", false),
        ] {
            assert_eq!(
                compiled_allowed(&rules, groups, ip(dst)),
                want,
                "{groups:?} → {dst}"
            );
            assert_eq!(
                aws_allowed(&rules, groups, ip(dst)),
                want,
                "reference {groups:?} → {dst}"
            );
        }
    }

    /// AWS scenario: an all-users 0.0.0.0/0 rule grants only destinations that no other
    /// rule covers; a group rule on a network removes it from everyone else.
    #[test]
    fn default_route_rule_is_processed_last() {
        let rules = [
            rule("0.0.0.0/0", Access::AllUsers),
            rule("172.16.0.0/24", Access::Group(g(ENGINEERING))),
        ];
        let eng = [g(ENGINEERING)];
        let dev = [g(DEV)];
        assert!(compiled_allowed(&rules, &dev, ip("8.8.8.8")));
        assert!(compiled_allowed(&rules, &eng, ip("8.8.8.8")));
        assert!(compiled_allowed(&rules, &eng, ip("172.16.0.9")));
        assert!(!compiled_allowed(&rules, &dev, ip("172.16.0.9")));
    }

    #[test]
    fn rules_on_the_same_network_are_ored_and_no_rule_denies() {
        let rules = [
            rule("10.0.0.0/16", Access::Group(g(DEV))),
            rule("10.0.0.0/16", Access::Group(g(MANAGER))),
            rule("10.0.9.0/24", Access::Group(g(DEV))),
            rule("10.0.9.0/24", Access::AllUsers),
        ];
        assert!(compiled_allowed(&rules, &[g(MANAGER)], ip("10.0.1.1")));
        assert!(compiled_allowed(&rules, &[g(DEV)], ip("10.0.1.1")));
        assert!(!compiled_allowed(&rules, &[g(ENGINEERING)], ip("10.0.1.1")));
        assert!(compiled_allowed(&rules, &[], ip("10.0.9.1")));
        assert!(!compiled_allowed(&rules, &[g(DEV)], ip("192.168.0.1")));
        assert!(!compiled_allowed(&[], &[g(DEV)], ip("10.0.0.1")));
        // Two networks, one entry each; host bits in a rule are ignored.
        let entries = compile_authorization(&[rule("10.0.0.7/16", Access::AllUsers)]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.to_string(), "10.0.0.0/16");
    }

    #[test]
    fn group_numbers_are_bounded() {
        assert!(GroupId::new(255).is_some());
        assert!(GroupId::new(256).is_none());
        assert!(compiled_allowed(
            &[rule("10.0.0.0/8", Access::Group(g(255)))],
            &[g(255)],
            ip("10.1.1.1")
        ));
    }

    fn arb_rule() -> impl Strategy<Value = AuthorizationRule> {
        // Few networks and groups so that rules overlap and share prefixes often.
        (
            0u32..4,
            prop::sample::select(vec![0u8, 8, 16, 24, 28, 32]),
            prop::option::of(0u16..6),
        )
            .prop_map(|(n, len, group)| AuthorizationRule {
                destination: Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (n << 6)), len).unwrap(),
                access: group.map_or(Access::AllUsers, |g| Access::Group(GroupId(g))),
            })
    }

    proptest! {
        #[test]
        fn compiled_map_matches_the_aws_algorithm(
            rules in prop::collection::vec(arb_rule(), 0..8),
            groups in prop::collection::vec((0u16..6).prop_map(GroupId), 0..3),
            host in 0u32..512,
        ) {
            let dst = Ipv4Addr::from(0x0a00_0000 | host);
            prop_assert_eq!(compiled_allowed(&rules, &groups, dst), aws_allowed(&rules, &groups, dst));
        }
    }
}
