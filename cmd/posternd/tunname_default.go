//go:build !darwin && !windows

package main

// defaultTUNName on Linux and the BSDs.
const defaultTUNName = "postern0"
