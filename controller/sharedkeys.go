package controller

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"postern.dev/postern/controller/store"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/pki"
)

// With a shared database the token-signing keys live in it, so that a
// rotation on one replica reaches every replica (and, through their policy
// pushes, every connector's JWKS) at the next revision. They are sealed
// (AES-256-GCM) with a key derived from the deployment CA's private key,
// which stays in each replica's data directory: reading the database alone
// does not give the power to sign Connection Tokens. DATA/token-keys.json
// mirrors the database copy.
const (
	kindTokenKeys  = "token-keys"
	tokenKeysID    = "current"
	tokenKeysAAD   = "postern token-keys v1"
	tokenKeysLabel = "postern token-signing keys v1"
)

// sealedTokenKeys is the stored form (JSON, []byte as base64).
type sealedTokenKeys struct {
	V      int    `json:"v"`
	KID    string `json:"kid"` // the current key's id, for operators
	Nonce  []byte `json:"nonce"`
	Sealed []byte `json:"sealed"`
}

func (c *Controller) tokenKeysAEAD() (cipher.AEAD, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("derive token-key sealing key: %w", err)
	}
	key, err := hkdf.Key(sha256.New, der, nil, tokenKeysLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive token-key sealing key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (c *Controller) sealTokenKeys(keys []signingKey) ([]byte, error) {
	aead, err := c.tokenKeysAEAD()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return json.Marshal(sealedTokenKeys{V: 1, KID: keys[0].KID, Nonce: nonce, Sealed: aead.Seal(nil, nonce, plain, []byte(tokenKeysAAD))})
}

func (c *Controller) unsealTokenKeys(data []byte) ([]signingKey, error) {
	var s sealedTokenKeys
	if err := json.Unmarshal(data, &s); err != nil || s.V != 1 {
		return nil, errors.New("shared token-signing keys: unknown format")
	}
	aead, err := c.tokenKeysAEAD()
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, errors.New("shared token-signing keys: bad nonce")
	}
	plain, err := aead.Open(nil, s.Nonce, s.Sealed, []byte(tokenKeysAAD))
	if err != nil {
		return nil, errors.New("shared token-signing keys do not open with this deployment CA's key (is ca-key.pem the one of the other replicas?)")
	}
	var keys []signingKey
	if err := json.Unmarshal(plain, &keys); err != nil || len(keys) == 0 {
		return nil, errors.New("shared token-signing keys: empty or malformed")
	}
	return keys, nil
}

func (c *Controller) readKeysFile() ([]signingKey, error) {
	var keys []signingKey
	b, err := os.ReadFile(c.keysPath())
	if err != nil {
		return nil, fmt.Errorf("read token signing keys: %w", err)
	}
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("read token signing keys: %w", err)
	}
	return keys, nil
}

// shareSigningKeys publishes this replica's keys when the shared database
// has none yet (the first replica); otherwise the database's keys are
// adopted by the next reload.
func (c *Controller) shareSigningKeys(ctx context.Context, st store.Store) error {
	_, _, err := st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(kindTokenKeys, tokenKeysID); err == nil || !errors.Is(err, store.ErrNotFound) {
			return err
		}
		keys, err := c.readKeysFile()
		if err != nil {
			return err
		}
		data, err := c.sealTokenKeys(keys)
		if err != nil {
			return err
		}
		return tx.Put(store.Object{Kind: kindTokenKeys, ID: tokenKeysID, Name: tokenKeysID, Data: data})
	})
	if err != nil {
		return fmt.Errorf("share token signing keys: %w", err)
	}
	return nil
}

// adoptSharedKeys installs the token-signing keys found among objs (a full
// load of a shared store) when they differ from the installed ones, and
// mirrors them to DATA/token-keys.json. Called by reload before the new
// model is published, so pushes carry the new JWKS.
func (c *Controller) adoptSharedKeys(objs []store.Object) error {
	i := slices.IndexFunc(objs, func(o store.Object) bool { return o.Kind == kindTokenKeys && o.ID == tokenKeysID })
	if i < 0 {
		return nil
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	if cur := c.sharedKeys.Load(); cur != nil && *cur == string(objs[i].Data) {
		return nil
	}
	keys, err := c.unsealTokenKeys(objs[i].Data)
	if err != nil {
		return err
	}
	if err := c.installKeys(keys); err != nil {
		return err
	}
	if err := c.writeKeysFile(keys); err != nil {
		c.log.Warn("mirror shared token signing keys", "err", err)
	}
	data := string(objs[i].Data)
	c.sharedKeys.Store(&data)
	return nil
}

func (c *Controller) writeKeysFile(keys []signingKey) error {
	b, _ := json.MarshalIndent(keys, "", "  ")
	if err := atomicfile.Write(c.keysPath(), b, 0o600); err != nil {
		return fmt.Errorf("write token signing keys: %w", err)
	}
	return nil
}

// rotateSharedSigningKey is RotateSigningKey with the store open: the new
// key set is committed (a new revision), so every replica installs it and
// pushes the new JWKS. On SQLite the first rotation seeds the stored set
// from DATA/token-keys.json (PostgreSQL replicas share theirs at start).
func (c *Controller) rotateSharedSigningKey() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate token signing key: %w", err)
	}
	kid := pki.KeyThumbprint(priv.Public().(ed25519.PublicKey))[:16]
	_, _, err = c.store.Update(ctx, func(tx store.Tx) error {
		var keys []signingKey
		o, err := tx.Get(kindTokenKeys, tokenKeysID)
		switch {
		case err == nil:
			if keys, err = c.unsealTokenKeys(o.Data); err != nil {
				return err
			}
		case !errors.Is(err, store.ErrNotFound):
			return err
		default:
			if keys, err = c.readKeysFile(); err != nil {
				return err
			}
		}
		keys = append([]signingKey{{KID: kid, Private: base64.StdEncoding.EncodeToString(priv), Created: time.Now().UTC()}}, keys...)
		if len(keys) > 3 {
			keys = keys[:3]
		}
		data, err := c.sealTokenKeys(keys)
		if err != nil {
			return err
		}
		if err := tx.Put(store.Object{Kind: kindTokenKeys, ID: tokenKeysID, Name: tokenKeysID, Data: data}); err != nil {
			return err
		}
		after, _ := json.Marshal(map[string]string{"kid": kid})
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "rotate", Kind: kindTokenKeys, ObjectID: tokenKeysID, Name: kid, After: after})
	})
	if err != nil {
		return fmt.Errorf("rotate token signing key: %w", err)
	}
	// reload adopts (installs and mirrors) the committed keys.
	return c.reload(ctx)
}
