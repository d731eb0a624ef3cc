// Command localcp starts the local control plane (kube-apiserver, etcd, this
// project's CRDs, cert-manager and the mesh-ca ClusterIssuer), prints the KUBECONFIG
// line to use it, runs the command given after "--" against it, and stops everything
// on Ctrl-C or when that command ends. `make run` uses it when there is no cluster.
//
//	localcp [--dir DIR] [--prepare] [-- command args...]
//
// --prepare only builds (or finds) the cached binaries and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

func main() {
	defaultDir := os.Getenv("MESHTLS_RUN_DIR")
	if defaultDir == "" {
		defaultDir = filepath.Join(testenv.CacheDir(), "run")
	}
	dir := flag.String("dir", defaultDir, "directory for the kubeconfig and the logs ($MESHTLS_RUN_DIR)")
	prepare := flag.Bool("prepare", false, "only build the cached control-plane binaries, then exit")
	flag.Parse()
	if err := run(*dir, *prepare, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "localcp: %v\n", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func run(dir string, prepare bool, command []string) error {
	if prepare {
		if _, err := testenv.AssetsDir(); err != nil {
			return err
		}
		bin, err := testenv.CertManagerBinary(os.Stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "cert-manager runner: %s\n", bin)
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	env, err := testenv.Start(ctx, testenv.Options{CertManager: true, Dir: dir, Progress: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "localcp: stopping cert-manager, kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "localcp: %v\n", err)
		}
	}()

	kubectl, _ := testenv.KubectlPath()
	fmt.Printf("\nThe local control plane is up. In another shell:\n\n")
	fmt.Printf("  export KUBECONFIG=%s\n", env.KubeconfigPath)
	fmt.Printf("  alias kubectl=%s\n", kubectl)
	fmt.Printf("  kubectl get meshtls -A\n\n")
	fmt.Printf("KUBECONFIG=%s\n", env.KubeconfigPath)
	fmt.Printf("Logs: %s. Ctrl-C stops everything.\n\n", dir)

	if len(command) == 0 {
		<-ctx.Done()
		return nil
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %v: %w", command, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// Ctrl-C reached the whole foreground process group; make sure the command
		// ends before the API server does.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		return nil
	}
}
