package capability

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The http grant grammar, written like the start of an HTTP request line:
//
//	http:[METHOD[,METHOD...] ][SCHEME://]HOST[:PORT]
//
//	http:api.stripe.com                  GET..DELETE, http on 80 and https on 443
//	http:https://api.stripe.com          https on 443 only
//	http:*.example.com:8443              any subdomain of example.com (not example.com), port 8443, either scheme
//	http:POST,PUT https://hooks.example.com
//	http:10.0.0.5:8080                   an address (which the network guard must also let through)
//	http:*                               any host (the network guard still applies)
//
// HOST is a lower-case DNS name, "*.name" (one or more labels below name,
// which has at least two labels), "*", or an IP address in its canonical
// form (IPv6 in brackets). A grant names hosts, never paths.

// fetchMethods are the methods a function may use.
var fetchMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// httpForms is the http grammar, for error messages.
const httpForms = "http:<host>, such as http:api.stripe.com, http:*.example.com:443, http:https://api.example.com or http:POST https://api.example.com"

// parseHTTP parses the part of an http grant after "http:".
func parseHTTP(s, rest string) (Grant, error) {
	g := Grant{Kind: KindHTTP}
	if rest == "" {
		return Grant{}, fmt.Errorf("%q needs a host: write %s", s, httpForms)
	}
	if methods, r, ok := strings.Cut(rest, " "); ok {
		var seen []string
		for _, m := range strings.Split(methods, ",") {
			switch {
			case !slices.Contains(fetchMethods, m):
				return Grant{}, fmt.Errorf("%q: %q is not a method a function may use (%s, in upper case)", s, m, strings.Join(fetchMethods, ", "))
			case slices.Contains(seen, m):
				return Grant{}, fmt.Errorf("%q lists %s twice", s, m)
			}
			seen = append(seen, m)
		}
		g.Methods, rest = methods, r
	}
	if scheme, r, ok := strings.Cut(rest, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return Grant{}, fmt.Errorf("%q: scheme %q is not http or https", s, scheme)
		}
		g.Scheme, rest = scheme, r
	}
	if strings.ContainsAny(rest, "/?#@ ") {
		return Grant{}, fmt.Errorf("%q: a grant names a host and optionally a port, not a path, query or user: write %s", s, httpForms)
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return Grant{}, fmt.Errorf("%q: %w", s, err)
	}
	g.Port = port
	switch {
	case host == "*":
	case strings.HasPrefix(host, "*."):
		if err := checkDNSName(host[2:]); err != nil {
			return Grant{}, fmt.Errorf("%q: %w", s, err)
		}
		if !strings.Contains(host[2:], ".") {
			return Grant{}, fmt.Errorf("%q: a wildcard must stand below a name of at least two labels, such as *.example.com", s)
		}
	default:
		h, err := canonicalHost(host)
		if err != nil {
			return Grant{}, fmt.Errorf("%q: %w", s, err)
		}
		if h != host {
			return Grant{}, fmt.Errorf("%q: write the host as %s", s, h)
		}
	}
	g.Resource = host
	return g, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; port
// 0 means none was written.
func splitHostPort(s string) (string, int, error) {
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("missing ']' after an IPv6 address")
		}
		host, portStr = s[:end+1], s[end+1:]
		if portStr == "" {
			return host, 0, nil
		}
		{
			p, ok := strings.CutPrefix(portStr, ":")
			if !ok {
				return "", 0, fmt.Errorf("unexpected %q after the IPv6 address", portStr)
			}
			portStr = p
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, portStr = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return "", 0, errors.New("write an IPv6 address in brackets, such as [2001:db8::1]:443")
		}
	} else {
		return s, 0, nil
	}
	p, err := strconv.Atoi(portStr)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != portStr {
		return "", 0, fmt.Errorf("port %q is not a number from 1 to 65535", portStr)
	}
	return host, p, nil
}

// canonicalHost returns host in the one spelling grants and the network
// guard compare: a lower-case DNS name without a trailing dot, a canonical
// IPv4 address, or an IPv6 address in brackets. It refuses every other
// spelling of an address: "2130706433", "0x7f.1", "0177.0.0.1", "127.1"
// (which some resolvers read as 127.0.0.1) and IPv6 zones. A name whose
// last label is numeric is not a DNS name (no top-level domain is), so it
// must be a canonical IPv4 address.
func canonicalHost(host string) (string, error) {
	if host == "" {
		return "", errors.New("the host is empty")
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("%s is not an IPv6 address (zones are not allowed)", host)
		}
		return "[" + a.String() + "]", nil
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	labels := strings.Split(h, ".")
	if last := labels[len(labels)-1]; last != "" && (isNumeric(last) || strings.HasPrefix(last, "0x")) {
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is4() || a.String() != h {
			return "", fmt.Errorf("%q is not a DNS name nor an IPv4 address in dotted-decimal form (such as 127.0.0.1); other spellings of addresses are refused", host)
		}
		return h, nil
	}
	if err := checkDNSName(h); err != nil {
		return "", err
	}
	return h, nil
}

func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkDNSName checks a lower-case host name: labels of [a-z0-9_-], 1 to
// 63 bytes, not starting or ending with '-', 253 bytes in all. An
// internationalized name is written in its xn-- form.
func checkDNSName(h string) error {
	if len(h) == 0 || len(h) > 253 {
		return fmt.Errorf("%q is not a host name (1 to 253 bytes)", h)
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a host name: label %q must be 1 to 63 bytes, not starting or ending with '-'", h, l)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a host name: use lower-case letters, digits, '-' and '_' (an international name in its xn-- form)", h)
			}
		}
	}
	return nil
}

// defaultPort is the port of a scheme when a URL or grant names none.
func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// httpString writes an http grant as Parse reads it.
func (g Grant) httpString() string {
	var b strings.Builder
	b.WriteString(KindHTTP + ":")
	if g.Methods != "" {
		b.WriteString(g.Methods + " ")
	}
	if g.Scheme != "" {
		b.WriteString(g.Scheme + "://")
	}
	b.WriteString(g.Resource)
	if g.Port != 0 {
		b.WriteString(":" + strconv.Itoa(g.Port))
	}
	return b.String()
}

// allowsHTTP reports whether http grant g allows need, the grant of one
// request (exact host, scheme, port or 0 for the scheme's default, and one
// method).
func (g Grant) allowsHTTP(need Grant) bool {
	if g.Scheme != "" && g.Scheme != need.Scheme {
		return false
	}
	want := need.Port
	if want == 0 {
		want = defaultPort(need.Scheme)
	}
	have := g.Port
	if have == 0 {
		have = defaultPort(need.Scheme)
	}
	if have != want {
		return false
	}
	if g.Methods != "" && !slices.Contains(strings.Split(g.Methods, ","), need.Methods) {
		return false
	}
	switch {
	case g.Resource == "*":
		return true
	case strings.HasPrefix(g.Resource, "*."):
		return strings.HasSuffix(need.Resource, g.Resource[1:]) && !strings.HasPrefix(need.Resource, "[")
	}
	return g.Resource == need.Resource
}

// target is one outbound request's destination, validated and in
// canonical form.
type target struct {
	method, scheme, host string
	port                 int // as written in the URL; 0: the scheme's default
}

// parseTarget validates a request's method and URL: an absolute http or
// https URL without user information, whose host is in canonical form
// (see canonicalHost).
func parseTarget(method string, u *url.URL) (target, error) {
	if !slices.Contains(fetchMethods, method) {
		return target{}, fmt.Errorf("method %q is not one of %s", method, strings.Join(fetchMethods, ", "))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return target{}, fmt.Errorf("URL scheme %q is not http or https", u.Scheme)
	}
	if u.User != nil {
		return target{}, errors.New("URLs with user information (user:password@) are refused: send credentials in a header")
	}
	if u.Opaque != "" {
		return target{}, errors.New("the URL is opaque: write scheme://host/path")
	}
	hostport := u.Host
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return target{}, fmt.Errorf("URL host %q: %w", hostport, err)
	}
	h, err := canonicalHost(host)
	if err != nil {
		return target{}, fmt.Errorf("URL host: %w", err)
	}
	if port == defaultPort(u.Scheme) {
		port = 0
	}
	return target{method: method, scheme: u.Scheme, host: h, port: port}, nil
}

// need is the grant that allows t: the least one, which a denial suggests.
func (t target) need() Grant {
	return Grant{Kind: KindHTTP, Resource: t.host, Scheme: t.scheme, Port: t.port, Methods: t.method}
}

// hostport is t's host and port as a URL's Host.
func (t target) hostport() string {
	if t.port != 0 {
		return t.host + ":" + strconv.Itoa(t.port)
	}
	return t.host
}

// String is t without path or query (which may carry tokens): what logs
// and errors name.
func (t target) String() string {
	if t.port != 0 {
		return t.scheme + "://" + t.host + ":" + strconv.Itoa(t.port)
	}
	return t.scheme + "://" + t.host
}
