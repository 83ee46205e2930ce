package export

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
