// Command meshtls-proxy is the meshtls data plane: the sidecar that enforces a pod's
// inbound mTLS modes (`meshtls-proxy proxy`), and, as other subcommands registered by
// their own files, the steps injection runs around it (`meshtls-proxy capture`). One
// binary, so that one distroless image carries everything the pod needs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// subcommands maps a subcommand name to its entry point. Files of this package
// register theirs from init(); `proxy` is registered in proxy.go.
var subcommands = map[string]func(ctx context.Context, args []string) error{}

func usage() {
	names := make([]string, 0, len(subcommands))
	for name := range subcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: meshtls-proxy <%s> [flags]\n(run a subcommand with -h for its flags)\n", strings.Join(names, "|"))
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	run, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "meshtls-proxy: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "meshtls-proxy %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
