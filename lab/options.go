package lab

import (
	"io"
	"log/slog"
	"time"
)

// Options configure a lab.
type Options struct {
	// BinDir holds the Postern programs and postern-lab itself; default: the
	// directory of the running executable.
	BinDir string
	// Dir is the lab's work directory (keys, data, logs); default: a new
	// directory under the system temp dir.
	Dir string
	// ReachableConnectors opens the corporate router to new inbound UDP
	// towards the connectors (and routes the corporate LAN on the internet),
	// so clients can reach a connector's QUIC port without NAT traversal.
	// False is the real topology: the corporate NAT admits nothing inbound.
	ReachableConnectors bool
	// Postern deploys the Postern programs (controller, relay, connectors,
	// client daemons) and signs the clients in. False builds only the
	// topology and the private services.
	Postern bool
	// Network is the network.yaml to apply; zero value: DemoNetwork.
	Network *NetworkSpec
	// Progress receives human-readable progress lines; nil discards them.
	Progress io.Writer
	// Logger receives the lab's own debug log; nil discards it.
	Logger *slog.Logger
	// Verbose runs the relay, the connectors and the client daemons with
	// debug logs (-v), e.g. to see every traversal step in their logs.
	Verbose bool
	// ControllerReplicas, when 2, runs the controller as two replicas on a
	// PostgreSQL database (on the controller node): the first at
	// ControllerIP (the public URL), the second at ControllerBIP, each with
	// its own --advertise-url, so that parts fail over between them.
	ControllerReplicas int
	// TokenTTL is the controller's Connection Token lifetime
	// (`serve --token-ttl`); zero keeps the controller's default (10 min).
	TokenTTL time.Duration
	// Underlay6 makes the underlay dual-stack (see Internet6CIDR): the
	// internet, the home LAN and the corporate LAN get IPv6 too, the
	// controller is reached by name (ControllerName, with A and AAAA) and
	// the relay over IPv6.
	Underlay6 bool
	// IPv6OnlyClient puts alice's laptop on an IPv6-only network that
	// reaches the IPv4-only controller and relay through NAT64 and DNS64
	// (see NAT64Prefix); the controller is reached by name. Needs tayga.
	IPv6OnlyClient bool
}

// DemoOptions configure `postern-lab demo` and `postern-lab up`.
type DemoOptions struct {
	Options
	NonInteractive bool
	// TopologyOnly skips the Postern programs (up only): namespaces, NAT
	// and the private services.
	TopologyOnly bool
	Out          io.Writer
}
