//! Types shared by the XDP programs (`gateway-ebpf`) and userspace (`gateway`): map
//! indexes and values, all `#[repr(C)]`/`#[repr(u32)]` with fixed layouts.
#![no_std]

/// What the `edge` program saw in a frame; one per-CPU counter each (`EDGE_STATS`).
///
/// The order is the counter index and part of the map's ABI with userspace.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeStat {
    /// Frames passed to the kernel stack.
    Pass = 0,
    /// Frames dropped.
    Drop,
    /// Not IPv4 (ARP, IPv6, VLAN-tagged …): passed untouched.
    NonIpv4,
    /// IPv4 TCP with a complete header.
    Tcp,
    /// IPv4 UDP with a complete header.
    Udp,
    /// IPv4 ICMP with a complete header.
    Icmp,
    /// IPv4 with another protocol number: passed untouched.
    OtherProtocol,
    /// IPv4 header carried options (IHL > 5); the L4 header was found after them.
    Ipv4Options,
    /// A non-first fragment: it has no L4 header, so no ports are read from it.
    Fragment,
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// IPv4 header truncated, or version/IHL/total length inconsistent with the frame.
    MalformedIpv4,
    /// TCP/UDP/ICMP header truncated or with an impossible length field.
    MalformedL4,
    /// P_DATA_V2 of a live peer-id, redirected to the worker's AF_XDP socket.
    DataSteered,
    /// P_DATA_V2 of a live peer-id, passed on (no AF_XDP socket on this queue).
    DataPassed,
    /// P_DATA_V2 whose peer-id is unknown, undefined or terminated: dropped.
    UnknownPeer,
    /// Control-channel packets (and P_DATA_V1) passed to the control plane.
    ControlPassed,
    /// Hard resets over the per-source rate limit: dropped.
    ResetRateLimited,
    /// UDP to a listen port that is not OpenVPN (empty, or an unknown opcode): dropped.
    NotOpenVpn,
    /// Not OpenVPN, and to an address inside the client CIDR: dropped. Only the data
    /// plane delivers to clients; the kernel would otherwise forward such a frame into
    /// the TAP, where a worker would hand it to the session that leases it.
    ToClientNetwork,
}

impl EdgeStat {
    /// Every counter, in index order.
    pub const ALL: [EdgeStat; 19] = [
        EdgeStat::Pass,
        EdgeStat::Drop,
        EdgeStat::NonIpv4,
        EdgeStat::Tcp,
        EdgeStat::Udp,
        EdgeStat::Icmp,
        EdgeStat::OtherProtocol,
        EdgeStat::Ipv4Options,
        EdgeStat::Fragment,
        EdgeStat::TruncatedEthernet,
        EdgeStat::MalformedIpv4,
        EdgeStat::MalformedL4,
        EdgeStat::DataSteered,
        EdgeStat::DataPassed,
        EdgeStat::UnknownPeer,
        EdgeStat::ControlPassed,
        EdgeStat::ResetRateLimited,
        EdgeStat::NotOpenVpn,
        EdgeStat::ToClientNetwork,
    ];
    /// Number of entries in `EDGE_STATS`.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable metric-style name.
    pub const fn name(self) -> &'static str {
        match self {
            EdgeStat::Pass => "pass",
            EdgeStat::Drop => "drop",
            EdgeStat::NonIpv4 => "non_ipv4",
            EdgeStat::Tcp => "tcp",
            EdgeStat::Udp => "udp",
            EdgeStat::Icmp => "icmp",
            EdgeStat::OtherProtocol => "other_protocol",
            EdgeStat::Ipv4Options => "ipv4_options",
            EdgeStat::Fragment => "fragment",
            EdgeStat::TruncatedEthernet => "truncated_ethernet",
            EdgeStat::MalformedIpv4 => "malformed_ipv4",
            EdgeStat::MalformedL4 => "malformed_l4",
            EdgeStat::DataSteered => "data_steered",
            EdgeStat::DataPassed => "data_passed",
            EdgeStat::UnknownPeer => "unknown_peer",
            EdgeStat::ControlPassed => "control_passed",
            EdgeStat::ResetRateLimited => "reset_rate_limited",
            EdgeStat::NotOpenVpn => "not_openvpn",
            EdgeStat::ToClientNetwork => "to_client_network",
        }
    }
}

/// Name of the per-CPU counter array of the `edge` program.
pub const EDGE_STATS_MAP: &str = "EDGE_STATS";
/// Name of the `edge` XDP program in the object file.
pub const EDGE_PROGRAM: &str = "edge";
/// Array of one [`EdgeConfig`].
pub const EDGE_CONFIG_MAP: &str = "EDGE_CONFIG";
/// Hash map: live peer-id → [`EdgePeer`]; a peer-id absent here is dropped.
pub const EDGE_PEERS_MAP: &str = "EDGE_PEERS";
/// XSKMAP: rx queue index → AF_XDP socket of the worker on that queue.
pub const EDGE_XSKS_MAP: &str = "EDGE_XSKS";
/// LRU hash: client source address → [`ResetBucket`].
pub const RESET_BUCKETS_MAP: &str = "RESET_BUCKETS";
/// Listen ports `edge` recognises.
pub const MAX_LISTEN_PORTS: usize = 4;
/// Sources tracked by the hard-reset rate limit (least recently used are forgotten).
pub const MAX_RESET_SOURCES: u32 = 65_536;
/// AF_XDP sockets: one per rx queue.
pub const MAX_XSK_QUEUES: u32 = 64;
/// Bytes of an AF_XDP socket's UMEM frame (a page), of which the kernel keeps
/// [`XSK_KERNEL_HEADROOM`] in front.
pub const XSK_FRAME_SIZE: usize = 4096;
/// `XDP_PACKET_HEADROOM`: what the kernel reserves in front of each frame's data.
pub const XSK_KERNEL_HEADROOM: usize = 256;
/// The longest frame the programs steer to an AF_XDP socket, metadata included: longer
/// ones would be dropped by the kernel, so they take the socket path instead.
pub const XSK_MAX_FRAME: usize = XSK_FRAME_SIZE - XSK_KERNEL_HEADROOM - 8;

/// What `edge` needs to know about the endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeConfig {
    /// UDP ports the gateway listens on, network byte order; zero = unused.
    pub listen_ports: [[u8; 2]; MAX_LISTEN_PORTS],
    /// Hard resets each source may send per second, on average; 0 = no limit.
    pub resets_per_second: u32,
    /// How many hard resets a source may send in a burst.
    pub reset_burst: u32,
    /// The client CIDR: network and netmask, network byte order (all zero: none).
    /// Frames to it that are not OpenVPN are dropped.
    pub client_network: [u8; 4],
    pub client_netmask: [u8; 4],
}

/// A live session as `edge` sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgePeer {
    /// Leased address of the session (network byte order), for diagnostics.
    pub lease: [u8; 4],
}

/// Token bucket of one source's hard resets: thousandths of a token, and when it was
/// last refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetBucket {
    pub milli_tokens: u64,
    pub last_ns: u64,
}

/// How many 64-bit words a [`GroupSet`] has; groups are numbered `0..MAX_GROUPS`.
pub const GROUP_WORDS: usize = 4;
/// Most groups that authorization rules can name (the control plane numbers them).
pub const MAX_GROUPS: usize = GROUP_WORDS * 64;

/// A set of group numbers as a bitmap: a session's groups, or the groups a rule allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupSet {
    pub words: [u64; GROUP_WORDS],
}

impl GroupSet {
    /// Adds `group`; numbers at or above [`MAX_GROUPS`] are ignored (the control plane
    /// refuses to number more groups than that).
    pub fn insert(&mut self, group: u16) {
        if let Some(w) = self.words.get_mut(usize::from(group) / 64) {
            *w |= 1 << (group % 64);
        }
    }

    pub fn contains(&self, group: u16) -> bool {
        self.words
            .get(usize::from(group) / 64)
            .is_some_and(|w| w & (1 << (group % 64)) != 0)
    }

    /// Whether the two sets share a group.
    #[inline(always)]
    pub fn intersects(&self, other: &GroupSet) -> bool {
        (self.words[0] & other.words[0])
            | (self.words[1] & other.words[1])
            | (self.words[2] & other.words[2])
            | (self.words[3] & other.words[3])
            != 0
    }

    pub fn union(&mut self, other: &GroupSet) {
        for (a, b) in self.words.iter_mut().zip(other.words) {
            *a |= b;
        }
    }
}

/// Value of the authorization LPM map: for the most specific rule prefix that contains
/// a destination, who may reach it (AWS Client VPN semantics: no fallback to shorter
/// prefixes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthzValue {
    /// Groups that rules with exactly this prefix allow.
    pub groups: GroupSet,
    /// Non-zero when a rule with exactly this prefix allows all users.
    pub all_users: u32,
    pub _pad: u32,
}

impl AuthzValue {
    /// Whether a session in `groups` may reach destinations this entry decides.
    #[inline(always)]
    pub fn allows(&self, groups: &GroupSet) -> bool {
        self.all_users != 0 || self.groups.intersects(groups)
    }
}

/// What the `inner` program decided for a decrypted client packet; one per-CPU counter
/// each (`INNER_STATS`). The order is the counter index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerStat {
    /// Source is a session's lease, a route and an authorization rule allow it.
    Allowed = 0,
    /// Packets dropped, for any of the reasons below.
    Drop,
    /// Source address is not a leased address of a live session.
    Spoofed,
    /// No route covers the destination.
    NoRoute,
    /// The most specific authorization rule for the destination does not admit the
    /// session (or no rule covers it).
    NotAuthorized,
    /// Not IPv4.
    NonIpv4,
    /// IPv4 header truncated or inconsistent with the frame.
    MalformedIpv4,
    /// TCP/UDP/ICMP header truncated.
    MalformedL4,
    /// A non-first fragment: it carries no ports, so it cannot be translated.
    Fragment,
    /// Not TCP, UDP or ICMP echo request: nothing to translate it with.
    Untranslatable,
    /// No free NAT port for this remote endpoint, or the NAT table is full.
    NatExhausted,
    /// Allowed and translated, then redirected to the target ENI.
    Redirected,
    /// Allowed and translated, then passed to the kernel (no neighbour entry yet, TTL
    /// expiring, or the next hop is not a target ENI).
    PassedToKernel,
    /// A new NAT mapping was created (the others reused one).
    NatCreated,
    /// The client's source port was taken for this remote endpoint: another was chosen.
    NatPortChanged,
    /// To another client's lease, authorized: sent back to the data plane (XDP_TX)
    /// untranslated.
    ClientToClient,
    /// To an address inside the client CIDR while client-to-client is off.
    ClientToClientDisabled,
    /// To an address inside the client CIDR that no live session leases.
    NoSuchClient,
    /// The IPv4 header carries a loose or strict source route option (LSRR, SSRR): the
    /// sender, not the routing table, would pick the path.
    SourceRoute,
    /// To one of the gateway's own addresses (any interface of its network namespace,
    /// or an interface's directed broadcast address; `GATEWAY_ADDRS`).
    GatewayAddress,
    /// To loopback (127.0.0.0/8), "this network" (0.0.0.0/8), link-local
    /// (169.254.0.0/16, other than the metadata service) or the reserved 240.0.0.0/4.
    SpecialDestination,
    /// To 169.254.169.254, the cloud instance metadata service: the gateway's own
    /// credentials live there.
    MetadataService,
    /// To a multicast address (224.0.0.0/4) or the limited broadcast 255.255.255.255.
    MulticastOrBroadcast,
    /// Allowed, but with a TTL of 1 or less: passed to the kernel untranslated (no NAT
    /// state), which answers the client with ICMP time exceeded and never forwards it.
    TtlExpired,
    /// Of `passed_to_kernel`: the next hop has no neighbour entry yet; the kernel
    /// resolves it (later packets of the flow may then be redirected).
    NoNeighbour,
    /// Of `passed_to_kernel`: the FIB has no forwarding answer (no route, blackhole,
    /// unreachable, prohibited, forwarding off, fragmentation needed): the kernel
    /// decides, answers with ICMP where a router would and counts its drops
    /// (`ip -s link`, `nstat`).
    NoFibRoute,
}

impl InnerStat {
    pub const ALL: [InnerStat; 26] = [
        InnerStat::Allowed,
        InnerStat::Drop,
        InnerStat::Spoofed,
        InnerStat::NoRoute,
        InnerStat::NotAuthorized,
        InnerStat::NonIpv4,
        InnerStat::MalformedIpv4,
        InnerStat::MalformedL4,
        InnerStat::Fragment,
        InnerStat::Untranslatable,
        InnerStat::NatExhausted,
        InnerStat::Redirected,
        InnerStat::PassedToKernel,
        InnerStat::NatCreated,
        InnerStat::NatPortChanged,
        InnerStat::ClientToClient,
        InnerStat::ClientToClientDisabled,
        InnerStat::NoSuchClient,
        InnerStat::SourceRoute,
        InnerStat::GatewayAddress,
        InnerStat::SpecialDestination,
        InnerStat::MetadataService,
        InnerStat::MulticastOrBroadcast,
        InnerStat::TtlExpired,
        InnerStat::NoNeighbour,
        InnerStat::NoFibRoute,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            InnerStat::Allowed => "allowed",
            InnerStat::Drop => "drop",
            InnerStat::Spoofed => "spoofed",
            InnerStat::NoRoute => "no_route",
            InnerStat::NotAuthorized => "not_authorized",
            InnerStat::NonIpv4 => "non_ipv4",
            InnerStat::MalformedIpv4 => "malformed_ipv4",
            InnerStat::MalformedL4 => "malformed_l4",
            InnerStat::Fragment => "fragment",
            InnerStat::Untranslatable => "untranslatable",
            InnerStat::NatExhausted => "nat_exhausted",
            InnerStat::Redirected => "redirected",
            InnerStat::PassedToKernel => "passed_to_kernel",
            InnerStat::NatCreated => "nat_created",
            InnerStat::NatPortChanged => "nat_port_changed",
            InnerStat::ClientToClient => "client_to_client",
            InnerStat::ClientToClientDisabled => "client_to_client_disabled",
            InnerStat::NoSuchClient => "no_such_client",
            InnerStat::SourceRoute => "source_route",
            InnerStat::GatewayAddress => "gateway_address",
            InnerStat::SpecialDestination => "special_destination",
            InnerStat::MetadataService => "metadata_service",
            InnerStat::MulticastOrBroadcast => "multicast_or_broadcast",
            InnerStat::TtlExpired => "ttl_expired",
            InnerStat::NoNeighbour => "no_neighbour",
            InnerStat::NoFibRoute => "no_fib_route",
        }
    }
}

/// Array of one [`InnerConfig`], read by `inner` and `target`.
pub const INNER_CONFIG_MAP: &str = "INNER_CONFIG";

/// What `inner` (and `target`, for the client CIDR) needs to know about the endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InnerConfig {
    /// The client CIDR: network and netmask, network byte order.
    pub client_network: [u8; 4],
    pub client_netmask: [u8; 4],
    /// Non-zero when clients may reach each other (AWS: a `local` route plus a rule).
    pub client_to_client: u32,
}

/// Name of the `inner` XDP program and its maps.
pub const INNER_PROGRAM: &str = "inner";
pub const INNER_STATS_MAP: &str = "INNER_STATS";
/// Hash map: leased client address (network byte order) → [`SessionInfo`].
pub const SESSIONS_MAP: &str = "SESSIONS";
/// Hash map: every IPv4 address of the gateway's network namespace, and each
/// interface's directed broadcast address (network byte order) → 1. `inner` refuses
/// packets to them.
pub const GATEWAY_ADDRS_MAP: &str = "GATEWAY_ADDRS";
/// Capacity of [`GATEWAY_ADDRS_MAP`].
pub const MAX_GATEWAY_ADDRS: u32 = 1024;
/// LPM tries: destination network → [`PolicyValue`] (route and authorization rule
/// together), one per rule-set generation.
pub const POLICY_MAPS: [&str; 2] = ["POLICY_0", "POLICY_1"];
/// Array of one u32: which generation (0 or 1) of routes and rules is in force.
/// `inner` reads it once per packet, so a packet sees one whole rule set.
pub const POLICY_GENERATION_MAP: &str = "POLICY_GENERATION";
/// Capacities of the policy maps.
pub const MAX_SESSIONS: u32 = 65_536;
/// LPM tries allocate per entry (no preallocation), so these cost nothing until used.
pub const MAX_ROUTES: u32 = 131_072;
pub const MAX_AUTHZ_RULES: u32 = 131_072;
/// Prefixes of the merged policy trie: every route network and every rule network.
pub const MAX_POLICY_PREFIXES: u32 = MAX_ROUTES + MAX_AUTHZ_RULES;

/// Value of the policy LPM trie, whose prefixes are every route network and every
/// authorization-rule network: for the most specific of them that contains a
/// destination, the most specific route and the most specific rule containing that
/// prefix. Because prefixes nest, these are the route and the rule the destination's
/// own longest-prefix matches would find, so one lookup answers both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    pub route: RouteValue,
    pub rule: AuthzValue,
    /// Non-zero when a route covers the prefix.
    pub has_route: u32,
    /// Non-zero when an authorization rule covers the prefix.
    pub has_rule: u32,
}

/// A live session as the policy sees it, keyed by its leased address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub groups: GroupSet,
    pub peer_id: u32,
    pub _pad: u32,
}

/// Where a route sends matching traffic: the target ENI, and the address client
/// sources are translated to there (the ENI's primary address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    pub target_ifindex: u32,
    pub snat_addr: [u8; 4],
}

/// What the `target` program did with a packet arriving on a target ENI; one per-CPU
/// counter each (`TARGET_STATS`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetStat {
    /// A reply to a translated flow: rewritten back to the client's lease.
    Translated = 0,
    /// Translated and redirected towards the data plane.
    Redirected,
    /// Translated and passed to the kernel (no neighbour entry yet, or TTL expiring).
    PassedToKernel,
    /// Not a reply to any translated flow: passed to the host untouched.
    Miss,
    /// Frames dropped, for any reason (malformed IPv4 or L4 headers, [`Unsolicited`]).
    ///
    /// [`Unsolicited`]: TargetStat::Unsolicited
    Drop,
    /// Of the translated: ICMP errors (unreachable, fragmentation needed, time
    /// exceeded, parameter problem) about a translated flow, rewritten through their
    /// embedded header so path-MTU discovery works through the gateway.
    IcmpError,
    /// Of the translated: steered to a worker's AF_XDP socket (AF_XDP mode), with the
    /// session's peer-id in the XDP metadata ([`XskMeta`]).
    Steered,
    /// Of the translated: TCP/UDP whose checksum a local sender left partial
    /// (CHECKSUM_PARTIAL, as veth and bridge peers send): kept partial for the new
    /// destination, finished by the kernel or by the worker that seals the frame.
    PartialChecksum,
    /// Not a reply to any translated flow, but to an address inside the client CIDR:
    /// dropped. Clients are reachable only through their own flows; the kernel would
    /// otherwise forward it into the TAP and on to the session that leases it.
    Unsolicited,
    /// Of the translated: TTL of 1 or less, so never steered to AF_XDP; forwarded to the
    /// kernel, which answers the sender with ICMP time exceeded.
    TtlExpired,
    /// Of `passed_to_kernel`: no neighbour entry for the lease on the TAP yet.
    NoNeighbour,
    /// Of `passed_to_kernel`: the FIB has no forwarding answer for the lease.
    NoFibRoute,
}

impl TargetStat {
    pub const ALL: [TargetStat; 12] = [
        TargetStat::Translated,
        TargetStat::Redirected,
        TargetStat::PassedToKernel,
        TargetStat::Miss,
        TargetStat::Drop,
        TargetStat::IcmpError,
        TargetStat::Steered,
        TargetStat::PartialChecksum,
        TargetStat::Unsolicited,
        TargetStat::TtlExpired,
        TargetStat::NoNeighbour,
        TargetStat::NoFibRoute,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            TargetStat::Translated => "translated",
            TargetStat::Redirected => "redirected",
            TargetStat::PassedToKernel => "passed_to_kernel",
            TargetStat::Miss => "miss",
            TargetStat::Drop => "drop",
            TargetStat::IcmpError => "icmp_error",
            TargetStat::Steered => "steered",
            TargetStat::PartialChecksum => "partial_checksum",
            TargetStat::Unsolicited => "unsolicited",
            TargetStat::TtlExpired => "ttl_expired",
            TargetStat::NoNeighbour => "no_neighbour",
            TargetStat::NoFibRoute => "no_fib_route",
        }
    }
}

/// Name of the `target` XDP program and its counters.
pub const TARGET_PROGRAM: &str = "target";
pub const TARGET_STATS_MAP: &str = "TARGET_STATS";
/// Hash map: client-side flow → [`NatOut`].
pub const NAT_OUT_MAP: &str = "NAT_OUT";
/// Hash map: reply flow as it arrives on the target ENI → [`NatIn`].
pub const NAT_IN_MAP: &str = "NAT_IN";
/// Devmap of the target ENIs `inner` may redirect to (key and value: ifindex).
pub const TARGET_DEVS_MAP: &str = "TARGET_DEVS";
/// Devmap of the devices towards the data plane `target` may redirect to (the TAP in
/// socket mode; key and value: ifindex).
pub const DATAPLANE_DEVS_MAP: &str = "DATAPLANE_DEVS";
/// Hash map: target interface ifindex → its first slot in [`TARGET_XSKS_MAP`]; the
/// socket for rx queue q of that interface sits at that slot + q.
pub const TARGET_XSK_SLOTS_MAP: &str = "TARGET_XSK_SLOTS";
/// XSKMAP of the workers' AF_XDP sockets on the target interfaces.
pub const TARGET_XSKS_MAP: &str = "TARGET_XSKS";
/// Target interfaces that can have AF_XDP sockets.
pub const MAX_XSK_TARGETS: u32 = 16;
/// Slots of [`TARGET_XSKS_MAP`]: [`MAX_XSK_QUEUES`] per target interface.
pub const MAX_TARGET_XSKS: u32 = MAX_XSK_TARGETS * MAX_XSK_QUEUES;
/// [`XskMeta::magic`]: the metadata was written by `target`.
pub const XSK_META_MAGIC: u32 = 0x6777_6d31;

/// The XDP metadata `target` puts in front of a frame it steers to an AF_XDP socket:
/// which session the reply belongs to, so the worker needs no lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskMeta {
    pub magic: u32,
    pub peer_id: u32,
}

/// Capacity of each NAT map.
pub const MAX_NAT_FLOWS: u32 = 131_072;
/// How many ports `inner` tries for a new flow after the client's own port is taken.
pub const NAT_PORT_PROBES: u32 = 8;

/// A flow as addresses, ports and protocol, all in network byte order. For ICMP echo
/// the identifier is the source port of a request and the destination port of a reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// TCP flags as they appear in the header, recorded in the NAT entries (every flag seen
/// in that direction over the flow's life) for the sweeper's timeouts.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The translation of a client flow: its source becomes `nat_addr:nat_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatOut {
    pub nat_addr: [u8; 4],
    pub nat_port: [u8; 2],
    /// TCP flags seen from the client (`TCP_*`), 0 for UDP and ICMP.
    pub tcp_flags: u8,
    pub _pad: u8,
    /// `bpf_ktime_get_ns` of the last packet out, for the userspace sweeper.
    pub last_seen_ns: u64,
}

/// The reverse of a translation: replies go back to `client_addr:client_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatIn {
    pub client_addr: [u8; 4],
    pub client_port: [u8; 2],
    /// TCP flags seen from the remote end (`TCP_*`), 0 for UDP and ICMP.
    pub tcp_flags: u8,
    pub _pad: u8,
    /// Session of the client, for steering to the data plane.
    pub peer_id: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` of the last reply, for the userspace sweeper.
    pub last_seen_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // Pod lets aya copy these to and from map bytes, so each must be `Copy`, have no
    // padding (every byte is initialised) and accept any bit pattern: true of structs
    // of integers and integer arrays laid out with #[repr(C)] as below (sizes checked
    // by the `map_types_have_no_implicit_padding` test).

    // SAFETY: #[repr(C)], one [u64; 4]: no padding, any bits valid.
    unsafe impl aya::Pod for super::GroupSet {}
    // SAFETY: #[repr(C)], a GroupSet (32 bytes) and two u32 (`_pad` fills what would be
    // tail padding): 40 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::AuthzValue {}
    // SAFETY: #[repr(C)], a GroupSet and two u32 (`_pad` fills what would be tail
    // padding): 40 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::SessionInfo {}
    // SAFETY: #[repr(C)], a u32 and a [u8; 4]: 8 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::RouteValue {}
    // SAFETY: #[repr(C)], a RouteValue (8 bytes, align 4), an AuthzValue (40 bytes,
    // align 8, at offset 8) and two u32: 56 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: #[repr(C)], byte arrays, a u8 and explicit `_pad` bytes: 16 bytes,
    // alignment 1, no padding, any bits valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: #[repr(C)], [[u8; 2]; 4], two u32 then two [u8; 4]: 24 bytes, no
    // padding, any bits valid.
    unsafe impl aya::Pod for super::EdgeConfig {}
    // SAFETY: #[repr(C)], one [u8; 4]: any bits valid.
    unsafe impl aya::Pod for super::EdgePeer {}
    // SAFETY: #[repr(C)], two [u8; 4] and a u32: 12 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::InnerConfig {}
    // SAFETY: #[repr(C)], two u64: 16 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::ResetBucket {}
    // SAFETY: #[repr(C)], [u8; 4], [u8; 2], two u8 (`_pad` explicit) then a u64 at
    // offset 8: 16 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::NatOut {}
    // SAFETY: #[repr(C)], [u8; 4], [u8; 2], two u8, two u32 (`_pad2` explicit) then a
    // u64 at offset 16: 24 bytes, no padding, any bits valid.
    unsafe impl aya::Pod for super::NatIn {}
}

/// What the redirect tracepoint programs count (`REDIRECT_STATS`, per CPU).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectStat {
    /// A redirect through one of the gateway's maps failed in the kernel after the
    /// program returned (no such entry, the device down or refusing XDP frames, an
    /// AF_XDP ring full): the frame was dropped.
    Failed = 0,
    /// Frames a devmap's destination driver did not take at transmit (a veth whose peer
    /// has no NAPI, a full TAP queue): dropped. Counted for every devmap on the host.
    TransmitDropped,
}

impl RedirectStat {
    pub const ALL: [RedirectStat; 2] = [RedirectStat::Failed, RedirectStat::TransmitDropped];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            RedirectStat::Failed => "redirect_failed",
            RedirectStat::TransmitDropped => "transmit_dropped",
        }
    }
}

/// The redirect tracepoint programs (BTF tracepoints of the same names) and their maps.
pub const REDIRECT_ERR_PROGRAM: &str = "xdp_redirect_err";
pub const DEVMAP_XMIT_PROGRAM: &str = "xdp_devmap_xmit";
pub const REDIRECT_STATS_MAP: &str = "REDIRECT_STATS";
/// Hash map: id of a redirect map of the gateway's → 1.
pub const REDIRECT_MAPS_MAP: &str = "REDIRECT_MAPS";
/// Redirect maps the tracepoint program tells apart.
pub const MAX_WATCHED_MAPS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sets() {
        let mut a = GroupSet::default();
        a.insert(0);
        a.insert(255);
        a.insert(256); // ignored: beyond MAX_GROUPS
        assert!(a.contains(0) && a.contains(255) && !a.contains(1) && !a.contains(256));
        let mut b = GroupSet::default();
        b.insert(130);
        assert!(!a.intersects(&b));
        b.insert(255);
        assert!(a.intersects(&b));
        let v = AuthzValue {
            groups: b,
            all_users: 0,
            _pad: 0,
        };
        assert!(v.allows(&a));
        assert!(!v.allows(&GroupSet::default()));
        assert!(
            AuthzValue {
                all_users: 1,
                ..Default::default()
            }
            .allows(&GroupSet::default())
        );
    }

    #[test]
    fn counter_indexes_follow_all() {
        for (i, s) in EdgeStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{} out of order", s.name());
        }
        for (i, s) in InnerStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{} out of order", s.name());
        }
        for (i, s) in TargetStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{} out of order", s.name());
        }
        for (i, s) in RedirectStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{} out of order", s.name());
        }
    }

    #[test]
    fn map_types_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<EdgeConfig>(), 24);
        assert_eq!(size_of::<NatOut>(), 16);
        assert_eq!(size_of::<NatIn>(), 24);
        assert_eq!(size_of::<RouteValue>(), 8);
        assert_eq!(size_of::<SessionInfo>(), 40);
        assert_eq!(size_of::<AuthzValue>(), 40);
    }
}
