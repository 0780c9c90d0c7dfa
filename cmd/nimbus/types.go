package main

import (
	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/registry"
)

type (
	registryFunction = registry.Function
	apiInstances     = api.Instances
)
