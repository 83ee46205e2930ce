//go:build !linux

package traversal

// gsoSegment: quic-go segments its bursts only on Linux.
func gsoSegment([]byte) int { return 0 }
