package main

import (
	"context"
	"errors"
)

func init() { subcommands["proxy"] = runProxy }

func runProxy(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
