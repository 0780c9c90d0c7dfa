package capability

import (
	"net/url"
	"strings"
	"testing"
)

// HTTPNeed is the grant a request "METHOD URL" needs.
func HTTPNeed(t *testing.T, req string) Grant {
	method, raw, _ := strings.Cut(req, " ")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := parseTarget(method, u)
	if err != nil {
		t.Fatalf("%s: %v", req, err)
	}
	return tg.need()
}
