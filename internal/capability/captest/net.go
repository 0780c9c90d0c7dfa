package captest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Canary is a TCP listener on loopback that must never be reached: it
// counts the connections it accepts and the bytes it reads, and answers
// any HTTP request with 418 so that a client that reached it fails loudly.
type Canary struct {
	Addr  netip.AddrPort
	conns atomic.Int64
	bytes atomic.Int64
}

// NewCanary starts a canary on host:0 (a loopback address), closed at the
// end of the test.
func NewCanary(t testing.TB, host string) *Canary {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Canary{Addr: netip.MustParseAddrPort(ln.Addr().String())}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "canary reached")
	})}
	go srv.Serve(&countingListener{Listener: ln, c: c})
	t.Cleanup(func() { srv.Close() })
	return c
}

// Reached reports the connections and bytes the canary received.
func (c *Canary) Reached() (conns, bytes int64) { return c.conns.Load(), c.bytes.Load() }

type countingListener struct {
	net.Listener
	c *Canary
}

func (l *countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.c.conns.Add(1)
		conn = &countingConn{Conn: conn, c: l.c}
	}
	return conn, err
}

type countingConn struct {
	net.Conn
	c *Canary
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.bytes.Add(int64(n))
	return n, err
}

// DNS is a DNS server on loopback UDP answering A and AAAA queries from a
// table: a real protocol peer for net.Resolver, so tests can make names
// resolve to any address, and change their answer between queries (DNS
// rebinding).
type DNS struct {
	Addr string
	mu   sync.Mutex
	// answers returns the addresses of a name for its n-th A or AAAA
	// query (n from 0, counted per name and type).
	answers map[string]func(n int) []netip.Addr
	queries map[string]int
}

// NewDNS starts a DNS server answering from answers (names without the
// trailing dot, lower case); other names are NXDOMAIN.
func NewDNS(t testing.TB, answers map[string]func(n int) []netip.Addr) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), answers: answers, queries: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := d.answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return d
}

// Resolver returns a pure-Go resolver that asks only d.
func (d *DNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.Addr)
	}}
}

// Queries returns how many A queries name got.
func (d *DNS) Queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[name+"/A"]
}

// answer builds the response to one query (RFC 1035 4.1), or nil for
// something that is not one.
func (d *DNS) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	off := 12
	var labels []string
	for off < len(q) && q[off] != 0 {
		l := int(q[off])
		if l&0xc0 != 0 || off+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[off+1:off+1+l]))
		off += 1 + l
	}
	off++ // the root label
	if off+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[off:])
	question := q[12 : off+4]
	name := strings.ToLower(strings.Join(labels, "."))

	var addrs []netip.Addr
	rcode := uint16(3) // NXDOMAIN
	d.mu.Lock()
	if f, ok := d.answers[name]; ok {
		rcode = 0
		key := name + "/A"
		if qtype == 28 {
			key = name + "/AAAA"
		}
		for _, a := range f(d.queries[key]) {
			if (qtype == 1) == a.Is4() && (qtype == 1 || qtype == 28) {
				addrs = append(addrs, a)
			}
		}
		d.queries[key]++
	}
	d.mu.Unlock()

	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                                  // id
	binary.BigEndian.PutUint16(resp[2:], 0x8180|rcode) // response, recursion desired and available
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(addrs)))
	resp = append(resp, question...)
	for _, a := range addrs {
		resp = append(resp, 0xc0, 12) // the question's name
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = binary.BigEndian.AppendUint32(resp, 0) // TTL
		b := a.AsSlice()
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(b)))
		resp = append(resp, b...)
	}
	return resp
}

// Fixed answers a name with the same addresses on every query.
func Fixed(addrs ...string) func(int) []netip.Addr {
	list := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		list[i] = netip.MustParseAddr(a)
	}
	return func(int) []netip.Addr { return list }
}

// Echo is an HTTP server on loopback that answers what it received: the
// method, the path and every request header as response headers prefixed
// "Echo-", and the body. GET /redirect?to=URL redirects (302) to URL;
// GET /big?n=N answers N bytes.
func Echo(t testing.TB, host string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
			return
		case "/big":
			n := 0
			for _, c := range r.URL.Query().Get("n") {
				n = n*10 + int(c-'0')
			}
			w.Write(make([]byte, n))
			return
		case "/hang":
			<-r.Context().Done()
			return
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				w.Header().Add("Echo-"+k, v)
			}
		}
		w.Header().Set("Echo-Method", r.Method)
		w.Header().Set("Echo-Path", r.URL.Path)
		io.Copy(w, r.Body)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("echo server: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}
