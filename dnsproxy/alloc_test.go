package dnsproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testAlloc(t *testing.T, v4, v6 string, maxNames int, file string) *allocator {
	t.Helper()
	a := newAllocator(netip.MustParsePrefix(v4), netip.MustParsePrefix(v6), maxNames, time.Minute, file, quiet)
	if err := a.load(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllocation(t *testing.T) {
	tests := []struct {
		v4, v6 string
		space  uint64
	}{
		{"100.96.0.0/12", "fd7a:7073:746e::/48", 1 << 20},
		{"198.18.0.0/22", "fd00::/48", 1 << 10},
		{"10.0.0.0/8", "fd00::/112", 1 << 16}, // the smaller range bounds the space
	}
	for _, tt := range tests {
		t.Run(tt.v4, func(t *testing.T) {
			a := testAlloc(t, tt.v4, tt.v6, 100, "")
			if a.space != tt.space {
				t.Fatalf("space = %d, want %d", a.space, tt.space)
			}
			seen := map[netip.Addr]string{}
			for i := 0; i < 100; i++ {
				name := fmt.Sprintf("host%d.corp.internal", i)
				off, err := a.get(name)
				if err != nil {
					t.Fatal(err)
				}
				if off < reservedOffsets || uint64(off) >= a.space {
					t.Fatalf("offset %d outside [%d,%d)", off, reservedOffsets, a.space)
				}
				v4, v6 := a.addrs(off)
				if !netip.MustParsePrefix(tt.v4).Contains(v4) || !netip.MustParsePrefix(tt.v6).Contains(v6) {
					t.Fatalf("%s got %s %s outside the ranges", name, v4, v6)
				}
				if prev, dup := seen[v4]; dup {
					t.Fatalf("%s and %s share %s", prev, name, v4)
				}
				seen[v4] = name
				for _, ip := range []netip.Addr{v4, v6} {
					if back, ok := a.offsetOf(ip); !ok || back != off {
						t.Fatalf("offsetOf(%s) = %d %v, want %d", ip, back, ok, off)
					}
				}
				if again, _ := a.get(name); again != off {
					t.Fatalf("%s moved from %d to %d", name, off, again)
				}
				if n, ok := a.nameAt(off); !ok || n != name {
					t.Fatalf("nameAt(%d) = %q", off, n)
				}
			}
		})
	}
}

func TestAllocationReservedAndDNSAddr(t *testing.T) {
	a := testAlloc(t, "100.96.0.0/12", "fd7a:7073:746e::/48", 10, "")
	v4, _ := a.addrs(dnsOffset)
	_, v6 := a.addrs(dnsOffset6)
	if v4 != netip.MustParseAddr("100.96.0.53") || v6 != netip.MustParseAddr("fd7a:7073:746e::53") {
		t.Fatalf("DNS addrs = %s %s", v4, v6)
	}
	reserved := netip.MustParsePrefix("100.96.0.0/24")
	for i := 0; i < 10; i++ {
		off, _ := a.get(fmt.Sprint("n", i))
		if v4, _ := a.addrs(off); reserved.Contains(v4) {
			t.Fatalf("allocated reserved %s", v4)
		}
	}
	if _, ok := a.offsetOf(netip.MustParseAddr("100.112.0.1")); ok {
		t.Error("address outside the range mapped to an offset")
	}
	if _, ok := a.offsetOf(netip.MustParseAddr("fd7a:7073:746e:1::1")); ok {
		t.Error("IPv6 address beyond the offset space mapped to an offset")
	}
}

func TestAllocationPersists(t *testing.T) {
	file := filepath.Join(t.TempDir(), "names.json")
	a := testAlloc(t, "100.96.0.0/12", "fd7a:7073:746e::/48", 100, file)
	want := map[string]uint32{}
	for i := 0; i < 20; i++ {
		n := fmt.Sprintf("h%d.corp.internal", i)
		off, err := a.get(n)
		if err != nil {
			t.Fatal(err)
		}
		want[n] = off
	}
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	b := testAlloc(t, "100.96.0.0/12", "fd7a:7073:746e::/48", 100, file)
	for n, off := range want {
		if got, ok := b.lookup(n); !ok || got != off {
			t.Errorf("after restart %s = %d %v, want %d", n, got, ok, off)
		}
	}
	// A new name does not take an address that was persisted.
	off, _ := b.get("new.corp.internal")
	for n, o := range want {
		if o == off {
			t.Errorf("new name got %s's offset", n)
		}
	}
}

func TestAllocationCorruptStateSetAside(t *testing.T) {
	file := filepath.Join(t.TempDir(), "names.json")
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := testAlloc(t, "100.96.0.0/12", "fd7a:7073:746e::/48", 100, file)
	if _, err := os.Stat(file + ".corrupt"); err != nil {
		t.Errorf("corrupt file not set aside: %v", err)
	}
	if _, err := a.get("x.corp.internal"); err != nil {
		t.Fatal(err)
	}
}

func TestAllocationBounded(t *testing.T) {
	a := testAlloc(t, "100.96.0.0/12", "fd7a:7073:746e::/48", 32, "")
	now := time.Unix(1_000_000, 0)
	a.now = func() time.Time { return now }
	for i := 0; i < 32; i++ {
		if _, err := a.get(fmt.Sprint("old", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Everything was just used: nothing may be reclaimed.
	if _, err := a.get("flood"); !errors.Is(err, ErrRangeFull) {
		t.Fatalf("err = %v, want ErrRangeFull", err)
	}
	now = now.Add(10 * time.Minute)
	keep, _ := a.lookup("old5") // recently used: survives
	_ = keep
	if _, err := a.get("new"); err != nil {
		t.Fatalf("after idle time: %v", err)
	}
	if len(a.byName) > 32 {
		t.Fatalf("%d names kept, max 32", len(a.byName))
	}
	if _, ok := a.lookup("old5"); !ok {
		t.Error("recently used name was reclaimed")
	}
}
