package lab

// The corporate network is dual-stack on its resource side: the LAN
// (connectors, db, web, corporate DNS) also has 2001:db8:c0::/64 and the
// published subnet 2001:db8:c1::/64, both from the documentation prefix.
// The underlay stays IPv4: no IPv6 leaves the corporate router, and homes,
// the internet, the controller and the relay have no IPv6 address. Alice
// reaches the IPv6 resources through Postern only.
const (
	CorpLAN6CIDR  = "2001:db8:c0::/64"
	CorpLAN6GW    = "2001:db8:c0::1" // the corporate router on the LAN
	ConnectorA6IP = "2001:db8:c0::11"
	ConnectorB6IP = "2001:db8:c0::12"
	DB6IP         = "2001:db8:c0::20" // db.corp.internal's AAAA, db6.corp.internal
	Web6IP        = "2001:db8:c0::30" // web6.corp.internal
	CorpDNS6IP    = "2001:db8:c0::53"
	Subnet6CIDR   = "2001:db8:c1::/64" // the IPv6 CIDR resource
	Subnet6GW     = "2001:db8:c1::1"
	SubnetHost6IP = "2001:db8:c1::10" // the app host, dual-stack

	// DB6Name and Web6Name have an AAAA record and no A record.
	DB6Name  = "db6.corp.internal"
	Web6Name = "web6.corp.internal"
)

// IPv6Resources are the demo network's IPv6 resources (alice's): the db
// host's IPv6 address, the IPv6 subnet as a CIDR, and the AAAA-only name of
// the db host. web6.corp.internal is covered by the web wildcard.
func IPv6Resources() []ResourceSpec {
	return []ResourceSpec{
		{Name: "db-v6", Address: DB6IP, Network: "corp", Ports: []string{"tcp/22", "tcp/5432", "icmp"}, Groups: []string{"engineering"}},
		{Name: "lab-subnet6", Address: Subnet6CIDR, Network: "corp", Ports: []string{"tcp/80", "icmp"}, Groups: []string{"engineering"}},
		{Name: "db6", Address: DB6Name, Network: "corp", Ports: []string{"tcp/22", "tcp/5432", "icmp"}, Groups: []string{"engineering"}},
	}
}

// corpDNS6Records are the corporate DNS server's IPv6 records, as
// dns-server --record arguments (a name given twice has both addresses).
func corpDNS6Records() []string {
	return []string{
		"--record", DBName + "=" + DB6IP,
		"--record", DB6Name + "=" + DB6IP,
		"--record", Web6Name + "=" + Web6IP,
		"--record", "dns." + CorpZone + "=" + CorpDNS6IP,
	}
}
