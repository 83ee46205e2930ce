// Package netstack terminates the TCP, UDP and ICMP traffic a TUN device captures, using gVisor's tcpip stack, and hands each flow to a handler.
package netstack
