//go:build tools

// Package deps pins the modules the design card fixes, so that go.mod keeps
// them while parts of the tree that use them are being written.
package deps

import (
	_ "fyne.io/systray"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/miekg/dns"
	_ "github.com/pion/ice/v2"
	_ "github.com/pion/stun"
	_ "github.com/pion/turn/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/quic-go/quic-go"
	_ "github.com/vishvananda/netlink"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/time/rate"
	_ "golang.zx2c4.com/wireguard/tun"
	_ "gopkg.in/yaml.v3"
	_ "gvisor.dev/gvisor/pkg/tcpip/stack"
	_ "modernc.org/sqlite"
)
