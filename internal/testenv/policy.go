package testenv

import (
	"fmt"
	"strings"
)

// AlicePassword is the password CorpPolicy gives alice@example.com unless a
// test needs another.
const AlicePassword = "alice-password-1"

// CorpPolicy is the start of the policy file most tests apply: remote
// network "corp" served by connectors, group "engineering" holding
// alice@example.com, and alice's password. A test appends its own
// "resources:" (and more) to it. The text holds no '%', so it may be used
// as the start of a fmt format.
func CorpPolicy(password string, connectors ...string) string {
	return fmt.Sprintf(`remote_networks:
  - name: corp
    connectors: [%s]
groups:
  - name: engineering
    users: [alice@example.com]
users:
  - email: alice@example.com
    password: %q
`, strings.Join(connectors, ", "), password)
}
