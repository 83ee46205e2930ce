package testenv

import (
	"fmt"
	"strings"
)

// AlicePassword is the password CorpPolicy gives alice@example.com unless a
// test needs another.
const AlicePassword = "alice-password-1"

// BobPassword is the password ApproverPolicy gives bob@example.com.
const BobPassword = "bob-password-12"

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

// ApproverPolicy is the start of the policy file of the access tests:
// CorpPolicy's network, alice@example.com and bob@example.com in
// "engineering", bob alone in "sre-leads" (the approvers), and their
// passwords AlicePassword and BobPassword. Like CorpPolicy it holds no '%'.
func ApproverPolicy(connectors ...string) string {
	return fmt.Sprintf(`remote_networks:
  - name: corp
    connectors: [%s]
groups:
  - name: engineering
    users: [alice@example.com, bob@example.com]
  - name: sre-leads
    users: [bob@example.com]
users:
  - email: alice@example.com
    password: %q
  - email: bob@example.com
    password: %q
`, strings.Join(connectors, ", "), AlicePassword, BobPassword)
}
