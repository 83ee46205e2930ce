package lab

// The IPv6 underlay variants (Options.Underlay6, Options.IPv6OnlyClient),
// all from the documentation prefix 2001:db8::/32.
//
// Underlay6 makes the internet, the home LAN and the corporate LAN
// dual-stack: IPv6 is routed without NAT (as ISPs delegate prefixes), the
// home and corporate routers keep a stateful IPv6 firewall (established
// flows in, nothing new), and the relay is addressed over IPv6.
//
// IPv6OnlyClient moves alice's laptop onto an IPv6-only network behind a
// NAT64 router (tayga, prefix NAT64Prefix) running a DNS64 resolver; the
// controller, the relay and the corporate network stay IPv4-only.
const (
	Internet6CIDR  = "2001:db8:1::/64"
	Internet6GW    = "2001:db8:1::1"
	Controller6IP  = "2001:db8:1::10"
	Relay6IP       = "2001:db8:1::20"
	PublicDNS6IP   = "2001:db8:1::53"
	HomeWAN6IP     = "2001:db8:1::100"
	CorpWAN6IP     = "2001:db8:1::200"
	HomeLAN6CIDR   = "2001:db8:a::/64"
	HomeLAN6GW     = "2001:db8:a::1"
	Client6IP      = "2001:db8:a::10"
	ClientBob6IP   = "2001:db8:a::11"
	NAT64WANIP     = "203.0.113.150" // the NAT64 router on the IPv4 internet
	NAT64LANCIDR   = "2001:db8:b::/64"
	NAT64LANGW     = "2001:db8:b::1"  // also the DNS64 resolver
	ClientV6OnlyIP = "2001:db8:b::10" // alice's laptop with IPv6OnlyClient
	NAT64Prefix    = "2001:db8:64::/96"
	NAT64PoolCIDR  = "198.18.64.0/24" // tayga's IPv4 pool, masqueraded to NAT64WANIP
	NAT64TaygaIP   = "198.18.64.1"

	// ControllerName is the controller's name in the public DNS (A, and
	// AAAA with Underlay6); the IPv6 variants use https://ControllerName
	// as the controller's URL.
	ControllerName = "controller.example.com"
	RelayName      = "relay.example.com"
)

// NodeNAT64 is the NAT64 router of Options.IPv6OnlyClient.
const NodeNAT64 = "nat64"

// Programs of the IPv6-only client variant.
const (
	ProgTayga = "tayga"
	ProgDNS64 = "dns64"
)
