package sigwire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// rwc is a ReadWriteCloser over fixed input that records what is written.
type rwc struct {
	io.Reader
	out bytes.Buffer
}

func (r *rwc) Write(p []byte) (int, error) { return r.out.Write(p) }
func (r *rwc) Close() error                { return nil }

// FuzzRead feeds an arbitrary byte stream to Conn.Read, as a peer on the
// relay's signaling port could: nothing panics, every error is one of the
// package's or the stream's end, every message has a type and at most 64
// candidates, and a message written back reads back the same.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","role":"client","token":"t"}` + "\n",
		`{"type":"offer","connector":"c1","session":"s","ufrag":"u","pwd":"p","candidates":[{"type":"host","addr":"192.0.2.1:4000"},{"type":"srflx","addr":"[2001:db8::1]:1"}]}` + "\n",
		`{"type":"candidate","candidates":[{"type":"relay","addr":"host.example:1"}]}` + "\n" + `{"type":"bye"}` + "\n",
		`{"type":""}` + "\n",
		`{"type":"ping"}`,
		"\n\n",
		`{"type":"x","candidates":[` + strings.Repeat(`{"type":"host","addr":"1.2.3.4:5"},`, 64) + `{}]}` + "\n",
		`{"type":"error","error":"\u0000"}` + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewConn(&rwc{Reader: bytes.NewReader(data)})
		for i := 0; i < 100; i++ {
			m, err := c.Read()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrBadMessage) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if m.Type == "" || len(m.Candidates) > 64 {
				t.Fatalf("accepted %+v", m)
			}
			for _, cand := range m.Candidates {
				if cand.Validate() == nil {
					if _, err := cand.UDPAddr(); err != nil {
						t.Fatalf("valid candidate %+v has no UDP address: %v", cand, err)
					}
				}
			}
			w := &rwc{Reader: strings.NewReader("")}
			if err := NewConn(w).Write(m); err != nil {
				if errors.Is(err, ErrTooLarge) {
					continue
				}
				t.Fatalf("write back %+v: %v", m, err)
			}
			back, err := NewConn(&rwc{Reader: &w.out}).Read()
			if err == nil && len(m.Candidates) == 0 && len(back.Candidates) == 0 {
				back.Candidates = m.Candidates // [] and absent are the same
			}
			if err != nil || !reflect.DeepEqual(back, m) {
				t.Fatalf("round trip: %+v -> %q -> %+v, %v", m, w.out.String(), back, err)
			}
		}
	})
}
