package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestOpenRoundTrip(t *testing.T) {
	for _, h := range []OpenHeader{
		{Proto: ProtoTCP, Port: 22, ResourceID: "r1", Destination: "db.corp.internal"},
		{Proto: ProtoUDP, Port: 53, ResourceID: "", Destination: "198.51.100.53"},
		{Proto: ProtoICMP, Port: 0, ResourceID: strings.Repeat("x", 255), Destination: "2001:db8::1"},
	} {
		var buf bytes.Buffer
		if err := WriteOpen(&buf, h); err != nil {
			t.Fatal(err)
		}
		kind, p, err := ReadFrame(&buf)
		if err != nil || kind != KindOpen {
			t.Fatalf("read: kind %d err %v", kind, err)
		}
		got, err := ParseOpenHeader(p)
		if err != nil {
			t.Fatal(err)
		}
		if got != h {
			t.Fatalf("got %+v want %+v", got, h)
		}
	}
}

func TestReadFrameRefuses(t *testing.T) {
	frame := func(ver, kind byte, n int) []byte {
		b := []byte{ver, kind, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return append(b, make([]byte, n)...)
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad version", frame(9, KindOpen, 4), ErrVersion},
		{"unknown kind", frame(Version, 77, 4), ErrKind},
		{"oversized open", frame(Version, KindOpen, MaxPayload+1), ErrTooLarge},
		{"oversized token", frame(Version, KindToken, MaxTokenPayload+1), ErrTooLarge},
		{"truncated", frame(Version, KindOpen, 10)[:8], io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		_, _, err := ReadFrame(bytes.NewReader(c.in))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestParseOpenHeaderRefuses(t *testing.T) {
	for name, p := range map[string][]byte{
		"short":         {ProtoTCP, 0},
		"bad proto":     {99, 0, 22, 0, 1, 'a'},
		"rid overrun":   {ProtoTCP, 0, 22, 200, 'a'},
		"empty dest":    {ProtoTCP, 0, 22, 0, 0},
		"dest mismatch": {ProtoTCP, 0, 22, 0, 5, 'a'},
	} {
		if _, err := ParseOpenHeader(p); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestStatusAndDatagrams(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteStatus(&buf, StatusDenied, strings.Repeat("m", 300)); err != nil {
		t.Fatal(err)
	}
	s, msg, err := ReadStatus(&buf)
	if err != nil || s != StatusDenied || len(msg) != 255 {
		t.Fatalf("status %v %d %v", s, len(msg), err)
	}
	for _, d := range [][]byte{{}, []byte("hello"), make([]byte, MaxDatagram)} {
		if err := WriteDatagram(&buf, d); err != nil {
			t.Fatal(err)
		}
	}
	rb := make([]byte, MaxDatagram)
	for _, want := range []int{0, 5, MaxDatagram} {
		d, err := ReadDatagram(&buf, rb)
		if err != nil || len(d) != want {
			t.Fatalf("datagram len %d err %v want %d", len(d), err, want)
		}
	}
	if err := WriteDatagram(&buf, make([]byte, MaxDatagram+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatal("oversized datagram written")
	}
	if got := ServerName(strings.Repeat("ab", 32)); got != strings.Repeat("ab", 16)+ServerNameSuffix {
		t.Fatalf("server name %q", got)
	}
}

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	_ = WriteOpen(&b, OpenHeader{Proto: ProtoTCP, Port: 22, ResourceID: "r", Destination: "a.b"})
	f.Add(b.Bytes())
	f.Add([]byte{1, 1, 0, 3, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, in []byte) {
		kind, p, err := ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		if kind == KindOpen {
			if len(p) > MaxPayload {
				t.Fatal("oversized payload returned")
			}
			if h, err := ParseOpenHeader(p); err == nil {
				if _, err := h.Marshal(); err != nil {
					t.Fatalf("parsed header does not re-marshal: %v", err)
				}
			}
		}
	})
}
