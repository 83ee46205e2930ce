// Package dnsproxy is the client's DNS server: a chain of handlers that answers resource names with stable synthetic addresses and forwards every other query to the system's original resolvers.
package dnsproxy
