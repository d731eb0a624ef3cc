package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/meshtls/meshtls-operator/internal/capture"
)

func init() { subcommands["capture"] = runCapture }

// runCapture is the injected init step (container meshtls-init): it programs the
// pod's transparent-capture rules through netlink and exits. It needs root with
// CAP_NET_ADMIN in the pod's network namespace, and nothing else: no iptables or
// nft binary, so it runs from the proxy's distroless image. See docs/capture.md.
func runCapture(_ context.Context, args []string) error {
	opts, dryRun, err := capture.ParseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, err)
		return flag.ErrHelp
	}
	if err != nil {
		return err
	}
	rs := capture.Build(opts)
	if dryRun {
		fmt.Print(rs.String())
		return nil
	}
	if err := rs.Apply(); err != nil {
		return err
	}
	// The init container's log is where someone debugging a pod looks first.
	fmt.Fprintf(os.Stdout, "programmed nftables table inet %s:\n%s", rs.Table, rs.TableText())
	return nil
}
