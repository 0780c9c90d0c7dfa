package main

import "context"

func runMemory(ctx context.Context, b *bench) ([]row, error) { return nil, nil }
