package export

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// syslogSink writes RFC 5424 messages over TCP or TLS with octet-counting
// framing (RFC 6587 section 3.4.1, RFC 5425): "LEN SP SYSLOG-MSG".
type syslogSink struct {
	addr     string
	tls      *tls.Config
	facility int
	hostname string
	conn     net.Conn
}

// sdID is the structured-data element: 32473 is the private enterprise
// number reserved for documentation (RFC 5612).
const sdID = "postern@32473"

func newSyslogSink(sc *SinkConfig) (*syslogSink, error) {
	s := &syslogSink{addr: sc.Address, facility: facilities[sc.Facility], hostname: sc.Hostname}
	if s.hostname == "" {
		s.hostname, _ = os.Hostname()
	}
	if s.hostname == "" {
		s.hostname = "-"
	}
	if sc.TLS {
		cfg, err := tlsConfig(sc.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = sc.ServerName
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(sc.Address)
		}
		s.tls = cfg
	}
	return s, nil
}

func tlsConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// sdEscape escapes a PARAM-VALUE (RFC 5424 section 6.3.3).
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}

// syslogMessage renders one record as an RFC 5424 message: severity
// warning (4) for denied or failed flows, informational (6) otherwise; MSGID
// is the event type; the MSG is the record's JSON.
func (s *syslogSink) message(r Record) ([]byte, error) {
	sev := 6
	if r.Type == StreamNetwork && r.Status != "allowed" {
		sev = 4
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.ID, err)
	}
	sd := fmt.Sprintf(`[%s id="%s" redelivery="%t"]`, sdID, sdEscape(r.ID), r.Redelivery)
	msg := fmt.Sprintf("<%d>1 %s %s postern-controller %d %s %s %s",
		s.facility*8+sev, r.Timestamp.UTC().Format(time.RFC3339Nano), s.hostname, os.Getpid(), r.Type, sd, body)
	return []byte(strconv.Itoa(len(msg)) + " " + msg), nil
}

func (s *syslogSink) dial(ctx context.Context) error {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: s.tls}).DialContext(ctx, "tcp", s.addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", s.addr)
	}
	if err != nil {
		return fmt.Errorf("dial syslog %s: %w", s.addr, err)
	}
	s.conn = c
	return nil
}

func (s *syslogSink) send(ctx context.Context, recs []Record) error {
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return err
		}
	}
	var buf []byte
	for _, r := range recs {
		m, err := s.message(r)
		if err != nil {
			return err
		}
		buf = append(buf, m...)
	}
	s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.conn.Write(buf); err != nil {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("write syslog %s: %w", s.addr, err)
	}
	// TCP syslog has no acknowledgements: a receiver that closed the
	// connection shows only on a later read. Probe without blocking so a
	// dead peer is noticed now and the batch re-sent on a new connection.
	s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	if _, err := s.conn.Read(one[:]); err != nil && !isTimeout(err) {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog %s closed the connection: %w", s.addr, err)
	}
	return nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func (s *syslogSink) close() error {
	if s.conn == nil {
		return nil
	}
	return s.conn.Close()
}
