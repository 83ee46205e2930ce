package lab

// Address plan. Only documentation and benchmarking ranges are used:
// 203.0.113.0/24 is the "internet", 192.0.2.0/24 the home LAN,
// 198.51.100.0/24 the corporate LAN and 198.18.10.0/24 a corporate subnet
// published as a CIDR resource.
const (
	InternetCIDR   = "203.0.113.0/24"
	InternetGW     = "203.0.113.1" // the internet namespace's bridge; answers "no route" for everything else
	ControllerIP   = "203.0.113.10"
	ControllerBIP  = "203.0.113.11" // the second controller replica (Options.ControllerReplicas)
	RelayIP        = "203.0.113.20"
	PublicDNSIP    = "203.0.113.53"
	PublicWebIP    = "203.0.113.80" // www.example.com, served from the public DNS namespace
	HomeWANIP      = "203.0.113.100"
	CorpWANIP      = "203.0.113.200"
	HomeLANCIDR    = "192.0.2.0/24"
	HomeLANGW      = "192.0.2.1"
	ClientIP       = "192.0.2.10" // alice's laptop
	ClientBobIP    = "192.0.2.11" // bob's laptop
	CorpLANCIDR    = "198.51.100.0/24"
	CorpLANGW      = "198.51.100.1"
	ConnectorAIP   = "198.51.100.11"
	ConnectorBIP   = "198.51.100.12"
	DBIP           = "198.51.100.20" // db.corp.internal: sshd + PostgreSQL
	WebIP          = "198.51.100.30" // web.corp.internal, intranet.corp.internal
	CorpDNSIP      = "198.51.100.53"
	SubnetCIDR     = "198.18.10.0/24" // the CIDR resource
	SubnetGW       = "198.18.10.1"
	SubnetHostIP   = "198.18.10.10" // app host inside the CIDR
	ControllerPort = "443"
	RelayUDPPort   = "3478"
	RelayTLSPort   = "443"
)

// Names the lab's DNS servers know.
const (
	PublicName    = "www.example.com"
	CorpZone      = "corp.internal"
	DBName        = "db.corp.internal"
	WebName       = "web.corp.internal"
	IntranetName  = "intranet.corp.internal"
	SubnetAppName = "app.corp.internal"
)

// Node names (the namespace of node N is "<lab id>-N").
const (
	NodeInternet    = "inet"
	NodeController  = "controller"
	NodeControllerB = "controller-b" // the second replica, with Options.ControllerReplicas
	NodeRelay       = "relay"
	NodePublicDNS   = "pubdns"
	NodeHome        = "home"   // home router
	NodeClient      = "client" // alice
	NodeClientBob   = "client-bob"
	NodeCorp        = "corp" // corporate router
	NodeConnectorA  = "corp-a"
	NodeConnectorB  = "corp-b"
	NodeDB          = "db"
	NodeWeb         = "web"
	NodeCorpDNS     = "corpdns"
	NodeSubnetHost  = "app"
)

// Routers the faults apply to.
const (
	RouterHome = NodeHome
	RouterCorp = NodeCorp
)

// Program names for Stop, Restart and Kill.
const (
	ProgController   = "postern-controller"
	ProgControllerB  = "postern-controller-b" // the second replica
	ProgControllerDB = "postgres-controller"  // the replicas' PostgreSQL, on the controller node
	ProgRelay        = "postern-relay"
	ProgConnectorA   = "postern-connector-corp-a"
	ProgConnectorB   = "postern-connector-corp-b"
	ProgDaemon       = "posternd-alice"
	ProgDaemonBob    = "posternd-bob"
	ProgSSHD         = "sshd"
	ProgPostgres     = "postgres"
	ProgWeb          = "http-web"
	ProgSubnetWeb    = "http-app"
	ProgPublicWeb    = "http-www"
	ProgPublicDNS    = "dns-public"
	ProgCorpDNS      = "dns-corp"
)

// Demo users.
const (
	Alice = "alice@example.com" // group engineering: every resource
	Bob   = "bob@example.com"   // group sales: only the web wildcard
)

// PostgreSQL objects the lab creates.
const (
	PGUser     = "postern"
	PGDatabase = "inventory"
)
