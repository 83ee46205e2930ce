package netstack

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunOffset is the headroom left in front of every packet handed to the
// device: wireguard/tun's Linux offload path writes its virtio header there.
const tunOffset = 16

// linkEndpoint connects a tun.Device to a gVisor stack. Outbound packets are
// written synchronously in batches; inbound packets are read in batches by
// one goroutine and delivered to the stack, except ICMP echo requests, which
// go to intercept.
type linkEndpoint struct {
	dev       tun.Device
	mtu       uint32
	log       *slog.Logger
	intercept func(pkt []byte) bool // true: consumed

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher

	writeMu   sync.Mutex
	writeBufs [][]byte

	rst rstFilter // see reopenTimeWait

	// SYN-ACKs are written by synAckWriter (synack.go).
	synAcks   chan []byte
	synMu     sync.Mutex // orders queueSynAck with closeSynAcks
	synClosed bool
	fence     func(synAck []byte) // Stack.fenceSynAck; nil in tests of the link alone

	wg sync.WaitGroup
}

func newLinkEndpoint(dev tun.Device, mtu uint32, log *slog.Logger, intercept func([]byte) bool) *linkEndpoint {
	return &linkEndpoint{dev: dev, mtu: mtu, log: log, intercept: intercept, synAcks: make(chan []byte, synAckQueue)}
}

// start launches the read loop, which ends when the device is closed, and
// the SYN-ACK writer, which ends at closeSynAcks.
func (e *linkEndpoint) start() {
	e.wg.Add(2)
	go e.readLoop()
	go e.synAckWriter()
}

func (e *linkEndpoint) readLoop() {
	defer e.wg.Done()
	batch := e.dev.BatchSize()
	if batch < 1 {
		batch = 1
	}
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tunOffset+int(e.mtu)+64)
	}
	for {
		n, err := e.dev.Read(bufs, sizes, tunOffset)
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			e.deliver(bufs[i][tunOffset : tunOffset+sizes[i]])
		}
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			if errors.Is(err, os.ErrClosed) || isClosedErr(err) {
				return
			}
			e.log.Debug("tun read", "err", err)
			return
		}
	}
}

// deliver hands one raw IP packet to the stack (or the interceptor).
func (e *linkEndpoint) deliver(p []byte) {
	if len(p) == 0 {
		return
	}
	if e.intercept != nil && e.intercept(p) {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(p) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		return
	}
	// MakeWithData copies p once into a pooled chunk: the read buffer is
	// reused for the next batch, and no per-packet heap allocation is made.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// writeRaw writes fully formed IP packets (used for ICMP replies).
func (e *linkEndpoint) writeRaw(pkts ...[]byte) error {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	bufs := e.writeBufs[:0]
	for _, p := range pkts {
		b := make([]byte, tunOffset+len(p))
		copy(b[tunOffset:], p)
		bufs = append(bufs, b)
	}
	e.writeBufs = bufs[:0]
	_, err := e.dev.Write(bufs, tunOffset)
	return err
}

// WritePackets implements stack.LinkWriter: it copies the batch into device
// buffers and writes them in one call, blocking rather than dropping.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	list := pkts.AsSlice()
	if len(list) == 1 && e.writeSynAck(list[0]) {
		return 1, nil
	}
	for len(e.writeBufs) < len(list) {
		e.writeBufs = append(e.writeBufs, make([]byte, tunOffset+int(e.mtu)+64))
	}
	bufs := e.writeBufs[:len(list)]
	for i, pkt := range list {
		size := pkt.Size()
		if cap(bufs[i]) < tunOffset+size {
			bufs[i] = make([]byte, tunOffset+size)
			e.writeBufs[i] = bufs[i]
		}
		b := bufs[i][:tunOffset+size]
		off := tunOffset
		for _, s := range pkt.AsSlices() {
			off += copy(b[off:], s)
		}
		bufs[i] = b
	}
	out := bufs
	if e.rst.active.Load() {
		out = make([][]byte, 0, len(bufs))
		for _, b := range bufs {
			if !e.dropRST(b[tunOffset:]) {
				out = append(out, b)
			}
		}
	}
	var err error
	if len(out) > 0 {
		_, err = e.dev.Write(out, tunOffset)
	}
	for i := range bufs {
		bufs[i] = bufs[i][:cap(bufs[i])]
	}
	if err != nil {
		if isClosedErr(err) {
			return 0, &tcpip.ErrClosedForSend{}
		}
		e.log.Debug("tun write", "err", err)
		return 0, &tcpip.ErrAborted{}
	}
	return len(list), nil
}

// writeSynAck queues pkt for synAckWriter if it is a SYN-ACK (see
// synack.go) and reports whether it did.
func (e *linkEndpoint) writeSynAck(pkt *stack.PacketBuffer) bool {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return false
	}
	hdr := pkt.TransportHeader().Slice()
	if len(hdr) < header.TCPMinimumSize {
		return false
	}
	f := header.TCP(hdr).Flags()
	if !f.Contains(header.TCPFlagSyn|header.TCPFlagAck) || f.Intersects(header.TCPFlagRst|header.TCPFlagFin) {
		return false
	}
	b := make([]byte, tunOffset+pkt.Size())
	off := tunOffset
	for _, s := range pkt.AsSlices() {
		off += copy(b[off:], s)
	}
	if !isSynAck(b[tunOffset:]) {
		return false
	}
	return e.queueSynAck(b)
}

func (e *linkEndpoint) MTU() uint32                      { return e.mtu }
func (e *linkEndpoint) SetMTU(mtu uint32)                { e.mtu = mtu }
func (e *linkEndpoint) MaxHeaderLength() uint16          { return 0 }
func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress   { return "" }
func (e *linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

func (e *linkEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

func (e *linkEndpoint) Wait()                                   { e.wg.Wait() }
func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (e *linkEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *linkEndpoint) Close()                                  {}
func (e *linkEndpoint) SetOnCloseAction(func())                 {}

func isClosedErr(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, os.ErrClosed) {
		return true
	}
	return strings.Contains(err.Error(), "closed")
}
