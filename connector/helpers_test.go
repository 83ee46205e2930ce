package connector

import (
	"crypto/ed25519"

	"postern.dev/postern/pki"
)

func pkiThumb(pub ed25519.PublicKey) string { return pki.KeyThumbprint(pub) }
