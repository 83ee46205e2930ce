package traversal

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// gsoSegment returns the segment size of a UDP_SEGMENT control message in
// oob, or 0 when there is none (or oob is malformed).
func gsoSegment(oob []byte) int {
	for len(oob) > 0 {
		hdr, body, next, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if hdr.Level == unix.SOL_UDP && hdr.Type == unix.UDP_SEGMENT && len(body) >= 2 {
			return int(binary.NativeEndian.Uint16(body))
		}
		oob = next
	}
	return 0
}
