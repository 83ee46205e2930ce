package wire

// QUIC application error codes the connector uses when it closes a whole
// connection (Code*) or resets one flow stream (CodeFlow*). Clients map them to
// user-facing messages.
const (
	CodeNoError         uint64 = 0x0
	CodeUnauthenticated uint64 = 0x101 // connection: no valid Connection Token
	CodeTokenExpired    uint64 = 0x102 // connection: token expired without an in-band refresh
	CodeRevoked         uint64 = 0x103 // connection: device revoked by policy
	CodeShutdown        uint64 = 0x104 // connection: connector shutting down
	CodeProtocol        uint64 = 0x105 // connection: control stream protocol error

	CodeFlowBadRequest uint64 = 0x201 // stream: malformed or oversized header
	CodeFlowPolicy     uint64 = 0x202 // stream: closed because the policy no longer allows it
	CodeFlowReset      uint64 = 0x203 // stream: the destination reset or failed
	CodeFlowIdle       uint64 = 0x204 // stream: UDP/ICMP flow idle timeout
	CodeFlowRefused    uint64 = 0x205 // stream: refused (status already sent), rest of the request discarded
)
