package traversal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// NAT kinds of the matrix, for either side.
const (
	natPublic    = "public"     // no NAT: the host has a public address
	natFullCone  = "full-cone"  // endpoint-independent mapping and filtering
	natPortRestr = "eim-apdf"   // EIM, address-and-port-dependent filtering (masquerade)
	natClash     = "port-clash" // EIM with no input firewall: a peer's packet first takes the port
	natSymmetric = "symmetric"  // endpoint-dependent mapping (masquerade random)
	natUDPBlock  = "udp-blocked"
	natSame      = "same-nat" // both hosts behind one NAT
	// natSmallMTU is eim-apdf whose uplink carries at most 1280-byte IP
	// packets (a tunnel, PPPoE over a tunnel, some mobile networks): the
	// router drops larger ones and answers "fragmentation needed".
	natSmallMTU = "mtu-1280"
	// natDouble is a home router (eim-apdf) behind a carrier-grade NAT
	// (eim-apdf as RFC 6888 asks), as on many mobile and fibre networks:
	// client side only.
	natDouble = "double-nat"
)

var matrixKinds = []string{natPublic, natFullCone, natPortRestr, natClash, natSymmetric, natUDPBlock}

// expectedPath is what theory allows between a client behind ck and a
// connector behind kk: direct wherever hole punching can work, otherwise
// relay over UDP, otherwise relay over TLS.
func expectedPath(ck, kk string) string {
	switch {
	case ck == natUDPBlock:
		return "relay/tls"
	case kk == natUDPBlock:
		// The connector reaches the relay over TLS; the client's leg to
		// the relay is UDP.
		return "relay/udp"
	case ck == natSame:
		return "direct/udp"
	case ck == natSymmetric && kk == natSymmetric:
		return "relay/udp"
	case ck == natSymmetric && (kk == natPortRestr || kk == natClash || kk == natSmallMTU):
		return "relay/udp" // the connector's NAT only lets in the port it sent to
	case kk == natSymmetric && (ck == natPortRestr || ck == natClash || ck == natSmallMTU || ck == natDouble):
		return "relay/udp"
	}
	return "direct/udp"
}

// pathRank orders paths from best to worst.
func pathRank(p string) int {
	switch p {
	case "direct/udp":
		return 0
	case "relay/udp":
		return 1
	case "relay/tls":
		return 2
	}
	return 3
}

// matrixTLSPort is the relay's TLS port in the matrix: networks that block
// UDP let TCP 443 through.
const matrixTLSPort = "443"

// sideNAT returns the nftables rules of a NAT router of kind, whose LAN host
// is host (for the full cone's inbound DNAT) and WAN address wan.
func sideNAT(kind, host, wan string) string {
	firewall := `table inet fw {
 chain input {
  type filter hook input priority filter; policy accept;
  iifname "wan" ct state new drop
 }
}
`
	masq := func(stmt string) string {
		return fmt.Sprintf("table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"wan\" %s\n }\n}\n", stmt)
	}
	switch kind {
	case natPublic:
		return ""
	case natFullCone:
		return fmt.Sprintf(`table ip nat {
 chain postrouting {
  type nat hook postrouting priority srcnat; policy accept;
  oifname "wan" snat ip to %s persistent
 }
 chain prerouting {
  type nat hook prerouting priority dstnat; policy accept;
  iifname "wan" meta l4proto udp dnat ip to %s
 }
}
`, wan, host)
	case natPortRestr, natSame, natSmallMTU, natDouble:
		return masq("masquerade") + firewall
	case natClash:
		return masq("masquerade")
	case natSymmetric:
		return masq("masquerade random") + firewall
	case natUDPBlock:
		return masq("masquerade") + firewall + `table inet block {
 chain forward {
  type filter hook forward priority filter; policy accept;
  iifname "lan" meta l4proto udp drop
  iifname "lan" tcp dport != 443 drop
 }
}
`
	}
	panic("unknown NAT kind " + kind)
}

type matrixCell struct {
	Client, Connector string
	Expected, Taken   string
	Final             string
	FirstByte         time.Duration
	Err               string
	OK                bool
	// Gap, when set, explains why the cell may fail through no fault of
	// traversal: the table shows it, the test does not fail on it.
	Gap string
}

// TestNATMatrix runs every client NAT kind against every connector NAT kind
// (plus both behind one NAT) through one shared relay, cell after cell in
// small namespaces, and fails every cell whose path is worse than theory
// allows. The table goes to the test log, and to docs/nat-matrix.md with
// POSTERN_WRITE_MATRIX=1 (make nat-matrix).
func TestNATMatrix(t *testing.T) {
	core := newMatrixCore(t)
	var cells []matrixCell
	for _, ck := range matrixKinds {
		for _, kk := range matrixKinds {
			cells = append(cells, matrixCell{Client: ck, Connector: kk, Expected: expectedPath(ck, kk)})
		}
	}
	cells = append(cells, matrixCell{Client: natSame, Connector: natSame, Expected: expectedPath(natSame, natSame)})
	// A small path MTU on either side, on the direct path and relayed.
	for _, kk := range []string{natPublic, natSymmetric} {
		cells = append(cells, matrixCell{Client: natSmallMTU, Connector: kk, Expected: expectedPath(natSmallMTU, kk)},
			matrixCell{Client: kk, Connector: natSmallMTU, Expected: expectedPath(kk, natSmallMTU)})
	}
	// Two NATs in a row on the client's side.
	for _, kk := range []string{natPortRestr, natSymmetric} {
		cells = append(cells, matrixCell{Client: natDouble, Connector: kk, Expected: expectedPath(natDouble, kk)})
	}
	if only := os.Getenv("POSTERN_MATRIX_CELLS"); only != "" {
		// A comma-separated list of client/connector cells (debugging).
		var some []matrixCell
		for _, c := range cells {
			if strings.Contains(","+only+",", ","+c.Client+"/"+c.Connector+",") {
				some = append(some, c)
			}
		}
		cells = some
	}
	start := time.Now()
	for i := range cells {
		core.runCell(i, &cells[i])
		c := cells[i]
		t.Logf("%-12s -> %-12s expected %-10s took %-10s first byte %v %s", c.Client, c.Connector, c.Expected, c.Taken, c.FirstByte.Round(time.Millisecond), c.Err)
	}
	table := matrixTable(cells, time.Since(start))
	t.Log("\n" + table)
	// Only a whole run asked to (make nat-matrix) rewrites the document:
	// every other run would leave the tree changed.
	if os.Getenv("POSTERN_WRITE_MATRIX") == "1" && os.Getenv("POSTERN_MATRIX_CELLS") == "" {
		if err := os.WriteFile(filepath.Join("..", "docs", "nat-matrix.md"), []byte(table), 0o644); err != nil {
			t.Errorf("write docs/nat-matrix.md: %v", err)
		}
	}
	for _, c := range cells {
		if !c.OK && c.Gap == "" {
			t.Errorf("cell %s -> %s: expected %s, took %q (%s)", c.Client, c.Connector, c.Expected, c.Taken, c.Err)
		}
	}
}

func matrixTable(cells []matrixCell, took time.Duration) string {
	var b strings.Builder
	b.WriteString("# NAT matrix\n\n")
	b.WriteString("Written by `make nat-matrix` (TestNATMatrix with POSTERN_WRITE_MATRIX=1; network namespaces, root). Each cell\n")
	b.WriteString("puts the client behind one NAT kind and the connector behind another, dials through one\n")
	b.WriteString("shared relay and fails when the path taken at the first byte is worse than the path theory\n")
	b.WriteString("allows (direct wherever hole punching can work, else relay over UDP, else relay over TLS).\n\n")
	b.WriteString("NAT kinds: `public` (no NAT), `full-cone` (endpoint-independent mapping and filtering: SNAT\n")
	b.WriteString("with a persistent port, inbound UDP DNAT to the host), `eim-apdf` (plain `masquerade`:\n")
	b.WriteString("endpoint-independent mapping, address-and-port-dependent filtering, unsolicited packets to\n")
	b.WriteString("the router dropped), `port-clash` (`masquerade` without that input firewall: a peer's packet\n")
	b.WriteString("that arrives first makes conntrack hold the port), `symmetric` (`masquerade random`),\n")
	b.WriteString("`udp-blocked` (only TCP 443 leaves), `same-nat` (both hosts on two LANs of one router),\n")
	b.WriteString("`mtu-1280` (`eim-apdf` whose uplink carries at most 1280-byte IP packets: QUIC starts at\n")
	b.WriteString("1200-byte packets so that its handshake fits, also behind a TURN channel header),\n")
	b.WriteString("`double-nat` (a home router behind a carrier-grade NAT, both `eim-apdf`).\n\n")
	b.WriteString("A connector behind `udp-blocked` allocates on the relay over TLS itself; the client reaches\n")
	b.WriteString("that relayed address over UDP (`relay/udp`) or through its own allocation over TLS; with\n")
	b.WriteString("both sides blocked, the relay bridges the two allocations of that one session.\n\n")
	fmt.Fprintf(&b, "Whole matrix: %d cells in %v.\n\n", len(cells), took.Round(time.Second))
	b.WriteString("| client NAT | connector NAT | expected path | path taken | time to first byte | result |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, c := range cells {
		res := "ok"
		switch {
		case !c.OK && c.Gap != "":
			res = "GAP: " + c.Gap
		case !c.OK:
			res = "FAIL"
			if c.Err != "" {
				res += ": " + strings.ReplaceAll(c.Err, "|", "/")
			}
		}
		taken := c.Taken
		if taken == "" {
			taken = "none"
		}
		if c.Final != "" && c.Final != c.Taken {
			taken += " (later " + c.Final + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %v | %s |\n", c.Client, c.Connector, c.Expected, taken, c.FirstByte.Round(time.Millisecond), res)
	}
	return b.String()
}

// matrixCore is the shared part: the internet router and the relay.
type matrixCore struct {
	*lab
	cfg labConfig
}

func newMatrixCore(t *testing.T) *matrixCore {
	testenv.RequireNetns(t, "nft")
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	l := &lab{t: t, id: hex.EncodeToString(rb[:]), dir: t.TempDir(), roles: map[string]*exec.Cmd{}}
	core := &matrixCore{lab: l}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("POSTERN_TEST_DEBUG") != "" {
			l.dumpLogs()
		}
		l.killAll()
		for _, n := range []string{"inet", "rel"} {
			l.delNS(n)
		}
	})
	for _, n := range []string{"inet", "rel"} {
		l.addNS(n)
	}
	l.link("inet", "r", "203.0.113.254/24", "rel", "wan", "203.0.113.1/24")
	l.sh("ip", "-n", l.ns("rel"), "route", "add", "default", "via", "203.0.113.254")
	l.nsh("inet", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	w := newWorld(t)
	core.cfg = w.export(l.dir)
	core.cfg.RelayTLSPort = matrixTLSPort
	core.cfg.Relay.TLSAddr = labRelayIP + ":" + matrixTLSPort
	core.cfg.Marker = "matrix"
	l.start("rel", "relay", core.cfg)
	l.wait("relay.ready", 15*time.Second)
	return core
}

// runCell builds the cell's two sides, runs connector and client in them,
// records the outcome and removes the cell's namespaces and processes.
func (core *matrixCore) runCell(i int, c *matrixCell) {
	t := core.t
	dir := filepath.Join(core.dir, fmt.Sprintf("cell%02d", i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cell := &lab{t: t, id: core.id, dir: dir, roles: map[string]*exec.Cmd{}}
	p := fmt.Sprintf("m%02d", i)
	nc, cli, nk, con := p+"nc", p+"cl", p+"nk", p+"co"
	cIf, kIf := fmt.Sprintf("c%02d", i), fmt.Sprintf("k%02d", i) // the internet's ends
	names := []string{nc, cli, con}
	if c.Client != natSame {
		names = append(names, nk)
	}
	defer func() {
		if !c.OK && os.Getenv("POSTERN_TEST_DEBUG") != "" {
			cell.dumpLogs()
		}
		cell.killAll()
		// The internet's ends of the cell's links go first, synchronously
		// (a deleted namespace's veths vanish only later, in the kernel's
		// own time, and the next cell reuses the addresses).
		for _, ifc := range []string{cIf, kIf} {
			_ = exec.Command("ip", "-n", cell.ns("inet"), "link", "del", ifc).Run()
		}
		for _, n := range names {
			cell.delNS(n)
		}
	}()
	for _, n := range names {
		cell.addNS(n)
	}
	// Client side: natc on 198.51.100.0/25, its LAN public (the second
	// half of that /24) or private.
	if c.Client == natDouble {
		// The carrier's NAT holds the public address; the home router's
		// WAN is in the carrier's private range.
		cg := p + "cg"
		names = append(names, cg)
		cell.addNS(cg)
		cell.uplink(cIf, cg, "198.51.100")
		cell.nsh(cg, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		cell.nft(cg, sideNAT(natPortRestr, "", "198.51.100.1"))
		cell.link(cg, "lan", "198.18.5.1/24", nc, "wan", "198.18.5.2/24")
		cell.sh("ip", "-n", cell.ns(nc), "route", "add", "default", "via", "198.18.5.1")
	} else {
		cell.uplink(cIf, nc, "198.51.100")
	}
	cell.natSide(c.Client, cIf, nc, cli, "198.51.100", "198.18.1")
	// Connector side: natk on 192.0.2.0/25 likewise, or a second LAN of
	// the client's router.
	if c.Client == natSame {
		cell.link(nc, "lan2", "198.18.3.1/24", con, "eth", "198.18.3.2/24")
		cell.sh("ip", "-n", cell.ns(con), "route", "add", "default", "via", "198.18.3.1")
	} else {
		cell.uplink(kIf, nk, "192.0.2")
		cell.natSide(c.Connector, kIf, nk, con, "192.0.2", "198.18.2")
	}
	cfg := core.cfg
	cfg.Mode = "once"
	cfg.Principal = fmt.Sprintf("user-cell%02d", i)
	if c.Gap != "" {
		cfg.DialTimeout = 8 * time.Second
	}
	cell.start(con, "connector", cfg)
	cell.wait("connector.ready", 30*time.Second)
	cell.start(cli, "client", cfg)
	var r clientResult
	if err := json.Unmarshal(cell.wait("client.result", 60*time.Second), &r); err != nil {
		t.Fatal(err)
	}
	c.FirstByte, c.Err = r.FirstByte, r.Err
	if r.Path.Path != "" {
		c.Taken = r.Path.Path + "/" + r.Path.Transport
		c.Final = r.Final.Path + "/" + r.Final.Transport
	}
	c.OK = r.Err == "" && c.Taken != "" && pathRank(c.Taken) <= pathRank(c.Expected)
}

// uplink links a side's router to the internet namespace on the public
// /24 pub (e.g. "192.0.2"): the internet's end inetIf is pub.126/25, the
// router's WAN pub.1/25 and its default route.
func (cell *lab) uplink(inetIf, router, pub string) {
	cell.link("inet", inetIf, pub+".126/25", router, "wan", pub+".1/25")
	cell.sh("ip", "-n", cell.ns(router), "route", "add", "default", "via", pub+".126")
}

// natSide makes router (whose WAN is pub.1) forward for host behind it
// with the NAT of kind: host gets an address in the second half of pub's
// /24 when kind is natPublic and priv.2/24 otherwise; natSmallMTU lowers
// the WAN link's MTU on both ends (inetIf is the internet's).
func (cell *lab) natSide(kind, inetIf, router, host, pub, priv string) {
	cell.nsh(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if kind == natSmallMTU {
		cell.sh("ip", "-n", cell.ns(router), "link", "set", "wan", "mtu", "1280")
		cell.sh("ip", "-n", cell.ns("inet"), "link", "set", inetIf, "mtu", "1280")
	}
	hostIP := priv + ".2"
	if kind == natPublic {
		hostIP = pub + ".130"
		cell.link(router, "lan", pub+".129/25", host, "eth", hostIP+"/25")
		cell.sh("ip", "-n", cell.ns(host), "route", "add", "default", "via", pub+".129")
		cell.sh("ip", "-n", cell.ns("inet"), "route", "add", pub+".128/25", "via", pub+".1")
	} else {
		cell.link(router, "lan", priv+".1/24", host, "eth", hostIP+"/24")
		cell.sh("ip", "-n", cell.ns(host), "route", "add", "default", "via", priv+".1")
	}
	if rules := sideNAT(kind, hostIP, pub+".1"); rules != "" {
		cell.nft(router, rules)
	}
}
