package udpgro

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"postern.dev/postern/internal/testenv"
)

func groMessage(size int) []byte {
	body := make([]byte, 4)
	binary.NativeEndian.PutUint32(body, uint32(size))
	return testenv.Cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, body)
}

func tosMessage(tos byte) []byte { return testenv.Cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{tos}) }
