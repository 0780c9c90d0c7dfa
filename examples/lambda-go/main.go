// Command bootstrap is an unmodified AWS Lambda function written with
// github.com/aws/aws-lambda-go: lambda.Start(handler), built with
// CGO_ENABLED=0 go build -o bootstrap. The same binary serves two
// functions of nimbus.yaml, chosen by _HANDLER (as the provided runtimes
// set it from the function's handler): "api" takes the API Gateway HTTP
// API (2.0) events of its routes, "greet" a raw JSON payload.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// api answers a routed request with what it saw; GET /lambda/fail makes
// the handler fail.
func api(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if req.PathParameters["name"] == "fail" {
		return events.APIGatewayV2HTTPResponse{}, errors.New("failing as asked")
	}
	lc, _ := lambdacontext.FromContext(ctx)
	body, _ := json.Marshal(map[string]any{
		"greeting":   fmt.Sprintf("%s, %s", os.Getenv("GREETING"), req.PathParameters["name"]),
		"method":     req.RequestContext.HTTP.Method,
		"path":       req.RawPath,
		"query":      req.QueryStringParameters,
		"routeKey":   req.RouteKey,
		"body":       req.Body,
		"requestId":  lc.AwsRequestID,
		"function":   lambdacontext.FunctionName,
		"memoryMB":   lambdacontext.MemoryLimitInMB,
		"region":     os.Getenv("AWS_REGION"),
		"hasTraceId": os.Getenv("_X_AMZN_TRACE_ID") != "",
	})
	return events.APIGatewayV2HTTPResponse{
		StatusCode: 200,
		Headers:    map[string]string{"Content-Type": "application/json", "X-Lambda": "yes"},
		Body:       string(body),
	}, nil
}

// Greeting is the answer of greet.
type Greeting struct {
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// greet takes a raw payload ({"name": "..."}), as `nimbus invoke` and
// topic, cron and async triggers send it; no name is an error.
func greet(ctx context.Context, in struct {
	Name string `json:"name"`
}) (Greeting, error) {
	if in.Name == "" {
		return Greeting{}, errors.New("name is required")
	}
	lc, _ := lambdacontext.FromContext(ctx)
	return Greeting{Message: "hello " + in.Name, RequestID: lc.AwsRequestID}, nil
}

func main() {
	switch h := os.Getenv("_HANDLER"); h {
	case "api":
		lambda.Start(api)
	case "greet":
		lambda.Start(greet)
	default:
		fmt.Fprintf(os.Stderr, "unknown _HANDLER %q: want api or greet\n", h)
		os.Exit(1)
	}
}
