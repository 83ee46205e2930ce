package testenv

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cmsg returns one socket control message (level, type, body) as the
// kernel lays it out, for tests that hand control data to socket code.
func Cmsg(level, typ int, body []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(body)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(body)))
	copy(b[unix.CmsgLen(0):], body)
	return b
}
