// Command postern is the command line of the Postern client daemon.
package main

import (
	"os"

	"postern.dev/postern/client/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
