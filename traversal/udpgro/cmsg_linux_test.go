package udpgro

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

func cmsg(level, typ int, body []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(body)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(body)))
	copy(b[unix.CmsgLen(0):], body)
	return b
}

func groMessage(size int) []byte {
	body := make([]byte, 4)
	binary.NativeEndian.PutUint32(body, uint32(size))
	return cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, body)
}

func tosMessage(tos byte) []byte { return cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{tos}) }
