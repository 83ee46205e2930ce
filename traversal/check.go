package traversal

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net"
	"strings"

	"github.com/pion/stun"
)

// randomString returns n bytes of randomness, base32 (ICE ufrag/pwd alphabet-safe).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// newCheck builds a connectivity check from the local session to the remote:
// USERNAME "remoteUfrag:localUfrag", MESSAGE-INTEGRITY with the remote pwd.
func newCheck(remoteUfrag, localUfrag, remotePwd string) (*stun.Message, error) {
	return stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(remoteUfrag+":"+localUfrag),
		stun.NewShortTermIntegrity(remotePwd),
		stun.Fingerprint)
}

// checkResponse answers a verified check: XOR-MAPPED-ADDRESS of from,
// MESSAGE-INTEGRITY with the local pwd.
func checkResponse(req *stun.Message, from net.Addr, localPwd string) (*stun.Message, error) {
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		var err error
		if ua, err = net.ResolveUDPAddr("udp", from.String()); err != nil {
			return nil, fmt.Errorf("check response address %s: %w", from, err)
		}
	}
	return stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port},
		stun.NewShortTermIntegrity(localPwd),
		stun.Fingerprint)
}

// stunBinding is a plain binding request (server-reflexive discovery).
func stunBinding() (*stun.Message, error) {
	return stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
}

// mappedAddr reads XOR-MAPPED-ADDRESS from a response.
func mappedAddr(m *stun.Message) (*net.UDPAddr, error) {
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return nil, fmt.Errorf("STUN response without mapped address: %w", err)
	}
	return &net.UDPAddr{IP: xa.IP, Port: xa.Port}, nil
}

// splitUsername returns (receiver ufrag, sender ufrag) from a check's USERNAME.
func splitUsername(m *stun.Message) (string, string, bool) {
	var u stun.Username
	if err := u.GetFrom(m); err != nil {
		return "", "", false
	}
	a, b, ok := strings.Cut(u.String(), ":")
	return a, b, ok && a != "" && b != ""
}
