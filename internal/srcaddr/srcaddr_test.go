package srcaddr

import (
	"net"
	"testing"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, "192.0.2.1"},
		{&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/x"}, "invalid Prefix"},
	} {
		if got := String(Key(tc.addr)); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	a := Key(&net.UDPAddr{IP: net.ParseIP("192.0.2.1")})
	b := Key(&net.UDPAddr{IP: net.ParseIP("2001:db8::1")})
	var c Counts
	c.Add(a)
	c.Add(a)
	c.Add(b)
	if c.Total() != 3 || c.Of(a) != 2 || c.Of(b) != 1 || c.Sources() != 2 {
		t.Fatalf("total %d, a %d, b %d, sources %d; want 3, 2, 1, 2", c.Total(), c.Of(a), c.Of(b), c.Sources())
	}
	c.Done(a)
	c.Done(b)
	c.Done(b) // more than was counted: ignored
	if c.Total() != 1 || c.Of(a) != 1 || c.Of(b) != 0 || c.Sources() != 1 {
		t.Fatalf("total %d, a %d, b %d, sources %d; want 1, 1, 0, 1", c.Total(), c.Of(a), c.Of(b), c.Sources())
	}
	c.Done(a)
	if c.Total() != 0 || c.Sources() != 0 {
		t.Fatalf("total %d over %d sources after every Done", c.Total(), c.Sources())
	}
}
