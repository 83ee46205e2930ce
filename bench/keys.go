package bench

// Tunnel keys, in the order the report lists them.
const (
	TunDirect        = "direct"
	TunPosternDirect = "postern-direct"
	TunPosternRelay  = "postern-relay"
	TunWireGuard     = "wireguard-go"
	TunOpenVPN       = "openvpn"
	TunSSH           = "ssh-L"
)

// AllTunnels lists every tunnel the harness knows.
var AllTunnels = []string{TunDirect, TunPosternDirect, TunPosternRelay, TunWireGuard, TunOpenVPN, TunSSH}

// Metric keys of a tunnel's results.
const (
	MTputUp1     = "tput_up_1"
	MTputDown1   = "tput_down_1"
	MTputUp4     = "tput_up_4"
	MTputUp64    = "tput_up_64"
	MFairness64  = "fairness_64"
	MTbf         = "tbf_gbps"
	MTbfFraction = "tbf_fraction"
	MCPUPerGB    = "cpu_s_per_gb"
	MRRIdleP50   = "rr_idle_p50_us"
	MRRIdleP99   = "rr_idle_p99_us"
	MRRBulkP50   = "rr_bulk_p50_us"
	MRRBulkP99   = "rr_bulk_p99_us"
	MRRBulkTput  = "rr_bulk_tput_gbps" // the bulk upload's rate beside the echo
	// The same echo through the tunnel while the bulk flow goes outside it
	// (plain TCP between the same hosts): the reference for "interactive
	// flows are isolated from bulk ones" (issue 15).
	MRRBulkOutP50 = "rr_bulk_outside_p50_us"
	MRRBulkOutP99 = "rr_bulk_outside_p99_us"
	MSetupP50     = "setup_connect_p50_us"
	MSetupFirst   = "setup_first_byte_p50_us"
	MSetupRate    = "setup_conns_per_s"
	MSetupP50x64  = "setup_connect_p50_64w_us"
	MLeftOpen     = "server_conns_left_open"
	MMemPerFlow   = "mem_kib_per_flow_" // + flow count
	MDNSResource  = "dns_resource_qps"
	MDNSResP99    = "dns_resource_p99_us"
	MDNSForwarded = "dns_forwarded_qps"
	MDNSUpstream  = "dns_upstream_direct_qps"
)

// The Postern deployment of the benchmark.
const (
	ResourceName  = "srv.bench.internal" // name resource for the server host
	BenchUser     = "bench@example.com"
	BenchNetwork  = "bench"
	ConnectorName = "bench-srv"
)
