package process

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// A request that came through a route reaches a Lambda function as an API
// Gateway HTTP API event, payload format version 2.0: the format of
// Lambda function URLs and of HTTP APIs (the default for new APIs), since
// a Nimbus route is, like a function URL, a route straight to the function
// (no REST API resource, stage or mapping template). aws-lambda-go reads it
// as events.APIGatewayV2HTTPRequest (events.LambdaFunctionURLRequest has
// the same fields) and answers events.APIGatewayV2HTTPResponse.

// apiGatewayV2Request is the 2.0 event.
type apiGatewayV2Request struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies,omitempty"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters,omitempty"`
	PathParameters        map[string]string `json:"pathParameters,omitempty"`
	RequestContext        v2RequestContext  `json:"requestContext"`
	Body                  string            `json:"body,omitempty"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

type v2RequestContext struct {
	AccountID    string `json:"accountId"`
	APIID        string `json:"apiId"`
	DomainName   string `json:"domainName"`
	DomainPrefix string `json:"domainPrefix"`
	HTTP         v2HTTP `json:"http"`
	RequestID    string `json:"requestId"`
	RouteKey     string `json:"routeKey"`
	Stage        string `json:"stage"`
	Time         string `json:"time"`
	TimeEpoch    int64  `json:"timeEpoch"`
}

type v2HTTP struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// apiGatewayEvent is the 2.0 event of a routed request: header names in
// lower case with repeated values joined by commas, cookies in their own
// list, query parameters likewise joined, the body base64 unless it is
// UTF-8 text of a textual type.
func apiGatewayEvent(req *runtime.Request, now time.Time) ([]byte, error) {
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	e := apiGatewayV2Request{
		Version:        "2.0",
		RouteKey:       req.Route,
		RawPath:        (&url.URL{Path: req.Path}).EscapedPath(),
		RawQueryString: req.RawQuery,
		Headers:        map[string]string{},
		PathParameters: req.Params,
		RequestContext: v2RequestContext{
			AccountID: LambdaAccount, APIID: "nimbus", DomainName: req.Host, DomainPrefix: domainPrefix(req.Host),
			HTTP: v2HTTP{Method: method, Path: req.Path, Protocol: "HTTP/1.1",
				SourceIP: sourceIP(req.RemoteAddr), UserAgent: req.Header.Get("User-Agent")},
			RequestID: lambdaRequestID(req.InvocationID), RouteKey: req.Route, Stage: "$default",
			Time: now.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
		},
	}
	if e.RawPath == "" {
		e.RawPath, e.RequestContext.HTTP.Path = "/", "/"
	}
	for k, vs := range req.Header {
		if strings.EqualFold(k, "Cookie") {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						e.Cookies = append(e.Cookies, c)
					}
				}
			}
			continue
		}
		e.Headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	if req.Host != "" {
		e.Headers["host"] = req.Host
	}
	if req.RawQuery != "" {
		q, err := url.ParseQuery(req.RawQuery)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", req.RawQuery, err)
		}
		e.QueryStringParameters = make(map[string]string, len(q))
		for k, vs := range q {
			e.QueryStringParameters[k] = strings.Join(vs, ",")
		}
	}
	if len(req.Body) > 0 {
		if textual(req.Header.Get("Content-Type")) && utf8.Valid(req.Body) {
			e.Body = string(req.Body)
		} else {
			e.Body, e.IsBase64Encoded = base64.StdEncoding.EncodeToString(req.Body), true
		}
	}
	return json.Marshal(e)
}

// textual reports whether a body of content type ct is passed as text:
// no type, text/*, JSON, XML, JavaScript, forms.
func textual(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "json") || strings.HasSuffix(mt, "xml") ||
		strings.HasSuffix(mt, "javascript") || mt == "application/x-www-form-urlencoded"
}

func domainPrefix(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	p, _, _ := strings.Cut(host, ".")
	return p
}

func sourceIP(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// apiGatewayV2Response is the answer a 2.0 integration reads.
type apiGatewayV2Response struct {
	StatusCode        int                 `json:"statusCode"`
	Headers           map[string]string   `json:"headers"`
	MultiValueHeaders map[string][]string `json:"multiValueHeaders"`
	Body              string              `json:"body"`
	IsBase64Encoded   bool                `json:"isBase64Encoded"`
	Cookies           []string            `json:"cookies"`
}

// errMalformedProxyResponse means a routed invocation's answer is not JSON.
var errMalformedProxyResponse = errors.New("not a JSON value")

// apiGatewayResponse maps a routed invocation's answer as API Gateway does
// with payload format 2.0: an object with a statusCode is a proxy response
// (status, headers, cookies, body, base64 or not); any other JSON value is
// the body of a 200 application/json answer.
func apiGatewayResponse(b []byte) (*runtime.Response, error) {
	trimmed := bytes.TrimSpace(b)
	if !json.Valid(trimmed) {
		return nil, errMalformedProxyResponse
	}
	var probe map[string]json.RawMessage
	if trimmed[0] != '{' || json.Unmarshal(trimmed, &probe) != nil || probe["statusCode"] == nil {
		return &runtime.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: trimmed}, nil
	}
	var r apiGatewayV2Response
	if err := json.Unmarshal(trimmed, &r); err != nil {
		return nil, fmt.Errorf("proxy response: %w", err)
	}
	if r.StatusCode < 100 || r.StatusCode > 599 {
		return nil, fmt.Errorf("proxy response: statusCode %d is not an HTTP status", r.StatusCode)
	}
	h := http.Header{}
	for k, vs := range r.MultiValueHeaders {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	for k, v := range r.Headers {
		h.Set(k, v)
	}
	for _, c := range r.Cookies {
		h.Add("Set-Cookie", c)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.Del("Content-Length")
	body := []byte(r.Body)
	if r.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(r.Body); err != nil {
			return nil, fmt.Errorf("proxy response: isBase64Encoded but the body is not base64: %w", err)
		}
	}
	if h.Get("Content-Type") == "" && len(body) > 0 {
		h.Set("Content-Type", "application/json")
	}
	return &runtime.Response{Status: r.StatusCode, Header: h, Body: body}, nil
}

// lambdaRequestID is the Lambda request id of an invocation: its Nimbus
// invocation id, so that logs of both name it alike, or a random one when
// it has none that is safe in a URL path.
func lambdaRequestID(invocation string) string {
	if invocation != "" && len(invocation) <= 128 && !strings.ContainsFunc(invocation, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		return invocation
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// xrayTraceID maps a W3C traceparent to the X-Ray trace header Lambda
// gives a runtime: Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1}.
func xrayTraceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return ""
	}
	sampled := "0"
	if b, err := hex.DecodeString(parts[3]); err == nil && b[0]&1 == 1 {
		sampled = "1"
	}
	return "Root=1-" + parts[1][:8] + "-" + parts[1][8:] + ";Parent=" + parts[2] + ";Sampled=" + sampled
}

// clientContext decodes the base64 JSON of an X-Amz-Client-Context header
// into the JSON Lambda-Runtime-Client-Context carries; "" when absent or
// not base64 JSON.
func clientContext(v string) string {
	if v == "" {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || !json.Valid(b) || bytes.ContainsAny(b, "\r\n") {
		return ""
	}
	return string(b)
}

func responseTooLarge(limit int64) error {
	return &runtime.LimitError{Err: runtime.ErrResponseTooLarge, Limit: model.FormatBytes(uint64(limit))}
}
