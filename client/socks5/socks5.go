// Package socks5 is a small SOCKS5 server (RFC 1928): username/password
// authentication (RFC 1929, required), CONNECT, and UDP ASSOCIATE. It passes
// host names through unresolved, so `curl --socks5-hostname` names reach the
// dialer as names.
package socks5

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Reply codes (RFC 1928 section 6).
const (
	ReplySucceeded          byte = 0
	ReplyGeneralFailure     byte = 1
	ReplyNotAllowed         byte = 2
	ReplyNetworkUnreachable byte = 3
	ReplyHostUnreachable    byte = 4
	ReplyConnectionRefused  byte = 5
	ReplyTTLExpired         byte = 6
	ReplyCommandUnsupported byte = 7
	ReplyAddressUnsupported byte = 8
)

const (
	version            = 5
	methodUserPwd      = 0x02
	methodNoAcceptable = 0xff
	authVersion        = 1
	cmdConnect         = 1
	cmdAssociate       = 3
	atypIPv4           = 1
	atypName           = 3
	atypIPv6           = 4
	handshakeWait      = 10 * time.Second
)

// Sentinel errors.
var (
	ErrVersion = errors.New("socks5: not a SOCKS5 request")
	ErrNoAuth  = errors.New("socks5: client offers no usable authentication method")
	// ErrBadCredentials: the client's username or password is wrong.
	ErrBadCredentials = errors.New("socks5: wrong username or password")
)

// Dialer opens flows for the server.
type Dialer interface {
	// DialTCP connects to host (a name or an IP literal) and port. The
	// returned conn should support CloseWrite for half-close.
	DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error)
}

// PacketDialer is implemented by dialers that also carry UDP.
type PacketDialer interface {
	// DialUDP opens a datagram flow to host:port.
	DialUDP(ctx context.Context, host string, port uint16) (DatagramConn, error)
}

// DatagramConn is one UDP flow.
type DatagramConn interface {
	WriteDatagram(p []byte) error
	ReadDatagram(buf []byte) ([]byte, error)
	Close() error
}

// Server serves SOCKS5.
type Server struct {
	Dialer Dialer
	// Authenticate checks a client's RFC 1929 username and password; it
	// is required (Serve refuses to start without it), and clients that
	// offer only "no authentication" are turned away.
	Authenticate func(user, password string) bool
	// Reply maps a dial error to a SOCKS5 reply code (default: host unreachable).
	Reply  func(error) byte
	Logger *slog.Logger

	wg sync.WaitGroup
}

// Serve accepts connections on ln until ctx is done or ln fails; it closes
// ln and waits for running sessions to end.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Authenticate == nil {
		ln.Close()
		return errors.New("socks5: Server.Authenticate is not set")
	}
	log := s.log()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var conns sync.Map
	defer func() {
		conns.Range(func(k, _ any) bool {
			_ = k.(net.Conn).Close()
			return true
		})
		s.wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("socks5 accept: %w", err)
		}
		conns.Store(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conns.Delete(c)
			if err := s.serveConn(ctx, c); err != nil {
				log.Debug("socks5 session", "client", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) reply(err error) byte {
	if s.Reply != nil {
		return s.Reply(err)
	}
	return ReplyHostUnreachable
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(handshakeWait))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if hdr[0] != version {
		return ErrVersion
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return fmt.Errorf("read methods: %w", err)
	}
	if !slices.Contains(methods, methodUserPwd) {
		_, _ = c.Write([]byte{version, methodNoAcceptable})
		return ErrNoAuth
	}
	if _, err := c.Write([]byte{version, methodUserPwd}); err != nil {
		return err
	}
	if err := s.authenticate(c); err != nil {
		return err
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if req[0] != version {
		return ErrVersion
	}
	host, port, err := readAddr(c, req[3])
	if err != nil {
		writeReply(c, ReplyAddressUnsupported, nil)
		return err
	}
	switch req[1] {
	case cmdConnect:
		return s.connect(ctx, c, host, port)
	case cmdAssociate:
		return s.associate(ctx, c, host, port)
	}
	writeReply(c, ReplyCommandUnsupported, nil)
	return fmt.Errorf("socks5: command %d not supported", req[1])
}

// authenticate runs the RFC 1929 sub-negotiation: VER=1, ULEN, UNAME, PLEN,
// PASSWD; it answers status 0 on success and 1 (then closes) otherwise.
func (s *Server) authenticate(c net.Conn) error {
	var v [2]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return fmt.Errorf("read credentials: %w", err)
	}
	if v[0] != authVersion {
		_, _ = c.Write([]byte{authVersion, 1})
		return fmt.Errorf("socks5: username/password version %d, want 1", v[0])
	}
	user := make([]byte, v[1])
	if _, err := io.ReadFull(c, user); err != nil {
		return fmt.Errorf("read username: %w", err)
	}
	var pl [1]byte
	if _, err := io.ReadFull(c, pl[:]); err != nil {
		return fmt.Errorf("read password length: %w", err)
	}
	pass := make([]byte, pl[0])
	if _, err := io.ReadFull(c, pass); err != nil {
		return fmt.Errorf("read password: %w", err)
	}
	if !s.Authenticate(string(user), string(pass)) {
		_, _ = c.Write([]byte{authVersion, 1})
		return ErrBadCredentials
	}
	_, err := c.Write([]byte{authVersion, 0})
	return err
}

func readAddr(r io.Reader, atyp byte) (string, uint16, error) {
	var host string
	switch atyp {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", 0, err
		}
		host = netip.AddrFrom4(b).String()
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", 0, err
		}
		host = netip.AddrFrom16(b).String()
	case atypName:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return "", 0, err
		}
		b := make([]byte, l[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return "", 0, err
		}
		host = string(b)
	default:
		return "", 0, fmt.Errorf("socks5: address type %d not supported", atyp)
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return "", 0, err
	}
	return host, binary.BigEndian.Uint16(p[:]), nil
}

// writeReply sends a reply with bound address bnd (nil: 0.0.0.0:0).
func writeReply(w io.Writer, code byte, bnd *net.UDPAddr) {
	b := []byte{version, code, 0}
	b = appendAddr(b, bnd)
	_, _ = w.Write(b)
}

func appendAddr(b []byte, a *net.UDPAddr) []byte {
	ip := netip.IPv4Unspecified()
	port := 0
	if a != nil {
		if x, ok := netip.AddrFromSlice(a.IP); ok {
			ip = x.Unmap()
		}
		port = a.Port
	}
	if ip.Is4() {
		b = append(b, atypIPv4)
		v := ip.As4()
		b = append(b, v[:]...)
	} else {
		b = append(b, atypIPv6)
		v := ip.As16()
		b = append(b, v[:]...)
	}
	return binary.BigEndian.AppendUint16(b, uint16(port))
}

type closeWriter interface{ CloseWrite() error }

func (s *Server) connect(ctx context.Context, c net.Conn, host string, port uint16) error {
	_ = c.SetDeadline(time.Time{})
	up, err := s.Dialer.DialTCP(ctx, host, port)
	if err != nil {
		writeReply(c, s.reply(err), nil)
		return fmt.Errorf("connect %s: %w", net.JoinHostPort(host, strconv.Itoa(int(port))), err)
	}
	defer up.Close()
	writeReply(c, ReplySucceeded, nil)
	stop := context.AfterFunc(ctx, func() { _ = c.Close(); _ = up.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := adaptiveCopy(up, c)
		if cw, ok := up.(closeWriter); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			_ = up.Close()
		}
	}()
	err = adaptiveCopy(c, up)
	if cw, ok := c.(closeWriter); ok && err == nil {
		_ = cw.CloseWrite()
	} else {
		_ = c.Close()
	}
	<-done
	return nil
}

var bigBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// adaptiveCopy copies until EOF holding only 1 KiB while the source is idle
// and a pooled 64 KiB buffer while data keeps coming.
func adaptiveCopy(dst io.Writer, src io.Reader) error {
	var small [1024]byte
	for {
		n, err := src.Read(small[:])
		if n > 0 {
			if _, werr := dst.Write(small[:n]); werr != nil {
				return werr
			}
		}
		if err == nil && n == len(small) {
			bp := bigBufs.Get().(*[]byte)
			for err == nil {
				n, err = src.Read(*bp)
				if n > 0 {
					if _, werr := dst.Write((*bp)[:n]); werr != nil {
						bigBufs.Put(bp)
						return werr
					}
				}
				if n < len(*bp)/4 {
					break
				}
			}
			bigBufs.Put(bp)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
