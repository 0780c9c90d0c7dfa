package capability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
)

// NetGuard decides which addresses outbound requests may connect to, at
// dial time, on the resolved address (the SSRF guard). Names are resolved
// once, every address of the answer is checked, and only the checked
// addresses are dialed: a name that answers differently on a second query
// (DNS rebinding) is never asked twice. A dialer Control hook checks the
// socket's address again just before connect, so nothing reaches connect
// unchecked.
//
// Refused unless an operator allows a range that contains them (Allow):
// every address that is not global unicast on the Internet: loopback,
// private (RFC 1918, IPv6 ULA fc00::/7), shared (CGNAT 100.64.0.0/10),
// link-local (169.254.0.0/16, with the cloud metadata service
// 169.254.169.254, and fe80::/10), multicast, unspecified, broadcast and
// reserved ranges, documentation and benchmarking ranges, and IPv6 forms
// that embed an IPv4 address the guard cannot see through (NAT64
// 64:ff9b::/96, 6to4, Teredo, IPv4-compatible). An IPv4-mapped IPv6
// address (::ffff:a.b.c.d) is judged as its IPv4 address. The node's own
// listening addresses (Protect) are refused even inside an allowed range.
//
// A NetGuard is safe for concurrent use.
type NetGuard struct {
	allow    []netip.Prefix
	own      atomic.Pointer[[]netip.AddrPort]
	resolver *net.Resolver
	dialer   net.Dialer
}

// reasonOwn is the Reason of a BlockedError for the node's own addresses.
const reasonOwn = "this node's own"

// blockedRanges are refused unless allowed; the first match names the
// reason. Order matters only for the reason's wording.
var blockedRanges = func() []struct {
	p      netip.Prefix
	reason string
} {
	list := []struct{ cidr, reason string }{
		{"0.0.0.0/8", "unspecified (\"this network\")"},
		{"127.0.0.0/8", "loopback"},
		{"10.0.0.0/8", "private (RFC 1918)"},
		{"172.16.0.0/12", "private (RFC 1918)"},
		{"192.168.0.0/16", "private (RFC 1918)"},
		{"100.64.0.0/10", "shared (CGNAT, RFC 6598)"},
		{"169.254.0.0/16", "link-local (where cloud metadata services live)"},
		{"192.0.0.0/24", "reserved (IETF protocol assignments)"},
		{"192.0.2.0/24", "documentation"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"198.18.0.0/15", "benchmarking"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved (and broadcast)"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible IPv6 (deprecated)"},
		{"64:ff9b::/96", "NAT64 (embeds an IPv4 address)"},
		{"64:ff9b:1::/48", "NAT64 (embeds an IPv4 address)"},
		{"100::/64", "discard-only"},
		{"2001::/32", "Teredo (embeds an IPv4 address)"},
		{"2001:db8::/32", "documentation"},
		{"2002::/16", "6to4 (embeds an IPv4 address)"},
		{"fc00::/7", "private (IPv6 unique local)"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local (deprecated)"},
		{"ff00::/8", "multicast"},
	}
	out := make([]struct {
		p      netip.Prefix
		reason string
	}, len(list))
	for i, r := range list {
		out[i].p, out[i].reason = netip.MustParsePrefix(r.cidr), r.reason
	}
	return out
}()

// NewNetGuard returns a guard that lets through the addresses in allow on
// top of the public Internet, and resolves names with resolver (nil:
// net.DefaultResolver). An IPv4-mapped prefix is taken as its IPv4 form.
func NewNetGuard(allow []netip.Prefix, resolver *net.Resolver) *NetGuard {
	g := &NetGuard{resolver: resolver}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	for _, p := range allow {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), max(bits-96, 0)
		}
		g.allow = append(g.allow, netip.PrefixFrom(a.WithZone(""), bits).Masked())
	}
	g.dialer.Control = g.control
	return g
}

// Protect adds addresses this node listens on: they are refused even
// inside an allowed range. An unspecified address (0.0.0.0 or ::) stands
// for every address of this host's interfaces (as they are when Protect is
// called) and loopback, on its port; any loopback address stands for all
// of loopback.
func (g *NetGuard) Protect(addrs ...netip.AddrPort) {
	var expanded []netip.AddrPort
	for _, a := range addrs {
		if !a.Addr().IsUnspecified() {
			expanded = append(expanded, a)
			continue
		}
		expanded = append(expanded, netip.AddrPortFrom(netip.IPv6Loopback(), a.Port()))
		ifaddrs, _ := net.InterfaceAddrs() // none known: loopback is still covered
		for _, ia := range ifaddrs {
			if n, ok := ia.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					expanded = append(expanded, netip.AddrPortFrom(ip, a.Port()))
				}
			}
		}
	}
	addrs = expanded
	for {
		old := g.own.Load()
		var next []netip.AddrPort
		if old != nil {
			next = append(next, *old...)
		}
		for _, a := range addrs {
			next = append(next, netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port()))
		}
		if g.own.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Check returns nil when the guard lets a connection to ap through, and a
// *BlockedError (with Host unset) otherwise.
func (g *NetGuard) Check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap().WithZone("")
	if own := g.own.Load(); own != nil {
		for _, o := range *own {
			if o.Port() == ap.Port() && (o.Addr() == a || a.IsLoopback() && o.Addr().IsLoopback()) {
				return &BlockedError{Addr: ap, Reason: reasonOwn}
			}
		}
	}
	if !a.IsValid() {
		return &BlockedError{Addr: ap, Reason: "invalid"}
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, r := range blockedRanges {
		if r.p.Contains(a) {
			return &BlockedError{Addr: ap, Reason: r.reason}
		}
	}
	return nil
}

// DialContext is a dialer for http.Transport: it resolves address's host
// once (an IP address is not resolved), checks every address of the
// answer, refuses the connection if any is blocked (a name that mixes
// public and internal addresses is an attack, not a fallback), and dials
// the checked addresses in order. Refusals are *BlockedError with Host
// set.
func (g *NetGuard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port: %w", address, err)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = g.resolver.LookupNetIP(ctx, ipNetwork(network), host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	for _, a := range addrs {
		if err := g.Check(netip.AddrPortFrom(a, uint16(port))); err != nil {
			var be *BlockedError
			errors.As(err, &be)
			be.Host = host
			return nil, be
		}
	}
	var last error
	for _, a := range addrs {
		// Dial the address checked above, never the name: a second
		// resolution could answer differently.
		c, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		var be *BlockedError
		if errors.As(err, &be) {
			be.Host = host
			return nil, be
		}
		last = err
	}
	return nil, last
}

// control checks the address a socket is about to connect to: the last
// line of defence, whatever path led to the dial.
func (g *NetGuard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Host: address, Reason: "unparsable"}
	}
	return g.Check(ap)
}

func ipNetwork(network string) string {
	switch network {
	case "tcp4", "udp4":
		return "ip4"
	case "tcp6", "udp6":
		return "ip6"
	}
	return "ip"
}
