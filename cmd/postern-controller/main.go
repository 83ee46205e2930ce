// Command postern-controller runs Postern's controller (serve) and its admin
// commands (apply, connector-token, relay-token, service-key).
package main

import (
	"os"

	"postern.dev/postern/controller/cli"
)

func main() {
	os.Exit(controllercli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
