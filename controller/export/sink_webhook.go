package export

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Webhook headers.
const (
	HeaderTimestamp = "X-Postern-Timestamp" // unix seconds
	HeaderSignature = "X-Postern-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// Sign returns the signature header value for body sent at ts.
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// ErrSignature is returned by Verify for a missing, stale or wrong signature.
var ErrSignature = errors.New("webhook signature refused")

// Verify checks a webhook request as a receiver should: the timestamp within
// maxSkew of now (replays refused) and the HMAC over timestamp and body,
// compared in constant time.
func Verify(secret []byte, ts, sig string, body []byte, now time.Time, maxSkew time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrSignature, HeaderTimestamp, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("%w: timestamp %s is %s away from now (at most %s)", ErrSignature, ts, d.Round(time.Second), maxSkew)
	}
	if !hmac.Equal([]byte(sig), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("%w: %s does not match the body", ErrSignature, HeaderSignature)
	}
	return nil
}

// webhookSink POSTs each batch as JSON lines (application/x-ndjson); any
// 2xx is an acknowledgement.
type webhookSink struct {
	url    string
	secret []byte
	client *http.Client
}

func newWebhookSink(sc *SinkConfig) (*webhookSink, error) {
	b, err := os.ReadFile(sc.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	secret := bytes.TrimSpace(b)
	if len(secret) < 16 {
		return nil, fmt.Errorf("secret_file %s: the secret must be at least 16 bytes", sc.SecretFile)
	}
	tc, err := tlsConfig(sc.CAFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &webhookSink{url: sc.URL, secret: secret, client: &http.Client{Transport: tr, Timeout: time.Duration(sc.Timeout)}}, nil
}

func (s *webhookSink) send(ctx context.Context, recs []Record) error {
	body, err := jsonLines(recs)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(s.secret, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: %s: %s", s.url, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (s *webhookSink) close() error {
	s.client.CloseIdleConnections()
	return nil
}
