package socks5

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

const maxDatagram = 65535

// associate serves UDP ASSOCIATE: a UDP relay socket on the address the
// client reached us on, alive as long as the TCP control connection. Only
// the client's address may use it: the port it declared in the request
// (DST.PORT) when not 0, else the first port it sends from.
func (s *Server) associate(ctx context.Context, c net.Conn, _ string, clientPort uint16) error {
	pd, ok := s.Dialer.(PacketDialer)
	if !ok {
		writeReply(c, ReplyCommandUnsupported, nil)
		return errors.New("socks5: UDP not supported by the dialer")
	}
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		writeReply(c, ReplyGeneralFailure, nil)
		return fmt.Errorf("socks5: UDP relay socket: %w", err)
	}
	defer pc.Close()
	writeReply(c, ReplySucceeded, pc.LocalAddr().(*net.UDPAddr))
	_ = c.SetDeadline(time.Time{})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the association lives as long as the TCP connection
		_, _ = io.Copy(io.Discard, c)
		cancel()
		_ = pc.Close()
	}()
	clientIP := c.RemoteAddr().(*net.TCPAddr).IP

	var mu sync.Mutex
	flows := map[string]DatagramConn{}
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, f := range flows {
			_ = f.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	var peer net.Addr
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return nil
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || !ua.IP.Equal(clientIP) || (clientPort != 0 && ua.Port != int(clientPort)) {
			continue // only the client that asked may use the relay
		}
		if peer == nil {
			peer = from
		} else if peer.String() != from.String() {
			continue
		}
		host, port, payload, err := parseUDPHeader(buf[:n])
		if err != nil {
			continue
		}
		key := net.JoinHostPort(host, strconv.Itoa(int(port)))
		mu.Lock()
		f := flows[key]
		mu.Unlock()
		if f == nil {
			f, err = pd.DialUDP(ctx, host, port)
			if err != nil {
				s.log().Debug("socks5 udp", "dst", key, "err", err)
				continue
			}
			mu.Lock()
			flows[key] = f
			mu.Unlock()
			hdr := udpHeader(host, port)
			wg.Add(1)
			go func(f DatagramConn, key string) {
				defer wg.Done()
				rb := make([]byte, maxDatagram)
				for {
					d, err := f.ReadDatagram(rb)
					if err != nil {
						mu.Lock()
						if flows[key] == f {
							delete(flows, key)
						}
						mu.Unlock()
						_ = f.Close()
						return
					}
					out := append(append([]byte(nil), hdr...), d...)
					if _, err := pc.WriteTo(out, peer); err != nil {
						return
					}
				}
			}(f, key)
		}
		if err := f.WriteDatagram(payload); err != nil {
			s.log().Debug("socks5 udp write", "dst", key, "err", err)
		}
	}
}

// parseUDPHeader splits a SOCKS5 UDP request: RSV(2) FRAG(1) ATYP ADDR PORT DATA.
func parseUDPHeader(b []byte) (string, uint16, []byte, error) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return "", 0, nil, errors.New("socks5: short UDP header")
	}
	if b[2] != 0 {
		return "", 0, nil, errors.New("socks5: fragmented UDP datagrams are not supported")
	}
	r := bytes.NewReader(b[4:])
	host, port, err := readAddr(r, b[3])
	if err != nil {
		return "", 0, nil, err
	}
	return host, port, b[len(b)-r.Len():], nil
}

// udpHeader builds the header for datagrams sent back to the client.
func udpHeader(host string, port uint16) []byte {
	b := []byte{0, 0, 0}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			v := ip.As4()
			b = append(append(b, atypIPv4), v[:]...)
		} else {
			v := ip.As16()
			b = append(append(b, atypIPv6), v[:]...)
		}
	} else {
		b = append(b, atypName, byte(len(host)))
		b = append(b, host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}
