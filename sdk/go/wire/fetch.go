package wire

import "fmt"

// Import names of the fetch and secret host functions.
const (
	FuncFetch     = "fetch"
	FuncFetchTake = "fetch_take"
	FuncSecretGet = "secret_get"
)

// Status codes of fetch, beyond the common ones.
const (
	// CodeBlocked: the network guard refused the destination's address
	// (loopback, private, link-local, ...), whatever the grants.
	CodeBlocked int32 = 9
	// CodeTimeout: the request did not complete within its timeout.
	CodeTimeout int32 = 10
)

// Message tags of fetch's request and response.
const (
	TagFetchRequest  byte = 0x03
	TagFetchResponse byte = 0x04
)

// Limits and sizes of fetch and secret_get.
const (
	// FetchMaxRequestLen caps an encoded fetch request (its body with it).
	FetchMaxRequestLen = 16 << 20
	// FetchOutSize is fetch's out area: handle u32, response length u32,
	// error length u32.
	FetchOutSize = 12
	// FetchTakeOutSize is fetch_take's out area: response length u32.
	FetchTakeOutSize = 4
	// SecretMaxNameLen caps a secret's name.
	SecretMaxNameLen = 128
	// SecretMaxValueLen caps a secret's value.
	SecretMaxValueLen = 64 << 10
	// SecretOutSize is secret_get's out area: value length u32.
	SecretOutSize = 4
)

// FetchRequest is an outbound HTTP request as a guest hands it to fetch.
type FetchRequest struct {
	Method string
	URL    string
	Header map[string][]string
	Body   []byte
	// TimeoutMS bounds the request; 0 is the host's default.
	TimeoutMS uint64
	// MaxResponseBytes caps the response body; 0 is the host's limit.
	MaxResponseBytes uint64
}

// FetchResponse is the answer fetch_take hands back.
type FetchResponse struct {
	Status int
	Header map[string][]string
	Body   []byte
}

// EncodeFetchRequest appends the encoding of r to dst:
//
//	fetch_request = 0x03 method url headers body timeout_ms max_response_bytes
func EncodeFetchRequest(dst []byte, r *FetchRequest) []byte {
	dst = append(dst, TagFetchRequest)
	dst = appendString(dst, r.Method)
	dst = appendString(dst, r.URL)
	dst = appendHeader(dst, r.Header)
	dst = appendBytes(dst, r.Body)
	dst = appendUvarint(dst, r.TimeoutMS)
	return appendUvarint(dst, r.MaxResponseBytes)
}

// DecodeFetchRequest decodes a fetch request with DecodeRequest's
// guarantees. The returned Body aliases b.
func DecodeFetchRequest(b []byte) (*FetchRequest, error) {
	d := decoder{b: b}
	if d.byte() != TagFetchRequest && d.err == nil {
		d.fail("not a fetch request")
	}
	r := &FetchRequest{Method: d.string(), URL: d.string()}
	r.Header = d.header()
	r.Body = d.bytes()
	r.TimeoutMS = d.uvarint()
	r.MaxResponseBytes = d.uvarint()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return r, nil
}

// EncodeFetchResponse appends the encoding of r to dst:
//
//	fetch_response = 0x04 status headers body
func EncodeFetchResponse(dst []byte, r *FetchResponse) []byte {
	dst = append(dst, TagFetchResponse)
	dst = appendUvarint(dst, uint64(max(r.Status, 0)))
	dst = appendHeader(dst, r.Header)
	return appendBytes(dst, r.Body)
}

// DecodeFetchResponse decodes a fetch response. The returned Body aliases
// b.
func DecodeFetchResponse(b []byte) (*FetchResponse, error) {
	d := decoder{b: b}
	if d.byte() != TagFetchResponse && d.err == nil {
		d.fail("not a fetch response")
	}
	st := d.uvarint()
	if (st < 100 || st > 999) && d.err == nil {
		d.fail(fmt.Sprintf("status %d out of range", st))
	}
	r := &FetchResponse{Status: int(st)}
	r.Header = d.header()
	r.Body = d.bytes()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return r, nil
}
