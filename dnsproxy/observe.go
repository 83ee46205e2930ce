package dnsproxy

import (
	"time"

	"github.com/miekg/dns"
)

// rcodeWriter remembers the rcode of the answer written (for Config.OnQuery).
type rcodeWriter struct {
	dns.ResponseWriter
	rcode   int
	written bool
}

func (w *rcodeWriter) WriteMsg(m *dns.Msg) error {
	if !w.written {
		w.rcode, w.written = m.Rcode, true
	}
	return w.ResponseWriter.WriteMsg(m)
}

// observe wraps h so that every query reports its rcode (-1 when no answer
// was written: dropped) and handling time to fn.
func observe(h dns.Handler, fn func(rcode int, took time.Duration)) dns.Handler {
	if fn == nil {
		return h
	}
	return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		start := time.Now()
		rw := &rcodeWriter{ResponseWriter: w}
		h.ServeDNS(rw, r)
		rc := -1
		if rw.written {
			rc = rw.rcode
		}
		fn(rc, time.Since(start))
	})
}
