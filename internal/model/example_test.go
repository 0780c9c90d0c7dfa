package model_test

import (
	"fmt"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
)

func ExamplePlan() {
	api := model.Function{
		Name: "api", Runtime: "wasm", Module: strings.Repeat("ab", 32),
		Capabilities: []string{"log", "kv"},
		Routes:       []model.Route{{Method: "GET", Path: "/users/{id}"}},
	}
	a, _ := model.Plan("hello", []model.Function{api})
	// The order of capabilities does not change the revision.
	api.Capabilities = []string{"kv", "log"}
	b, _ := model.Plan("hello", []model.Function{api})
	fmt.Println(a.ID == b.ID, len(a.ID), a.Functions[0].Capabilities)

	// A change does.
	api.TimeoutMS = 5000
	c, _ := model.Plan("hello", []model.Function{api})
	fmt.Println(a.ID == c.ID)
	// Output:
	// true 64 [kv log]
	// false
}
