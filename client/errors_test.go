package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
)

func TestRefusedHint(t *testing.T) {
	refused := &quic.TransportError{ErrorCode: quic.ConnectionRefused, Remote: true}
	joined := fmt.Errorf("dial connector a: %w", errors.Join(errors.New("192.0.2.1:4000: timeout"), refused))
	if h := refusedHint(joined); !strings.Contains(h, "awaiting a token") {
		t.Fatalf("hint for a refusal among the addresses tried: %q", h)
	}
	for _, err := range []error{
		errors.New("timeout"),
		&quic.TransportError{ErrorCode: quic.ConnectionRefused}, // ours, not the connector's
		&quic.TransportError{ErrorCode: quic.ProtocolViolation, Remote: true},
	} {
		if h := refusedHint(err); h != "" {
			t.Errorf("hint %q for %v", h, err)
		}
	}
}
