// Command postern is a placeholder until its issue lands.
package main

import (
	"fmt"
	"os"

	"postern.dev/postern/version"
)

func main() {
	fmt.Fprintln(os.Stderr, "postern", version.Version, ": not implemented yet")
	os.Exit(2)
}
