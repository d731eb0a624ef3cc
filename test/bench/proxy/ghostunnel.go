package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const ghostunnelVersion = "v1.8.4"

// ghostunnel returns the ghostunnel binary, building it once in a throwaway module
// in the meshtls cache (never in this repository), as the control plane's binaries
// are built. The checksum database lacks one of its dependencies' pseudo-versions,
// so that build alone runs with GONOSUMDB=github.com/landlock-lsm.
func ghostunnel(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	dir := filepath.Join(testenv.CacheDir(), "ghostunnel-"+ghostunnelVersion)
	bin := filepath.Join(dir, "ghostunnel")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Printf("building ghostunnel %s in %s (once)...\n", ghostunnelVersion, dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module meshtls.local/ghostunnel-build\n\ngo 1.26\n"), 0o644); err != nil {
		return "", err
	}
	env := append(os.Environ(), "GONOSUMDB=github.com/landlock-lsm", "GOFLAGS=-mod=mod")
	for _, args := range [][]string{
		{"get", "github.com/ghostunnel/ghostunnel@" + ghostunnelVersion},
		{"build", "-o", bin, "github.com/ghostunnel/ghostunnel"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
		}
	}
	return bin, nil
}

// ghostServer runs `ghostunnel server` in front of target, allowing the client's
// SPIFFE ID (--allow-uri), as users run it.
func (b *bench) ghostServer(listen, target string) (*process, error) {
	p, err := b.start("ghostunnel-server", exec.Command(b.ghostBin, "server", "--listen="+listen, "--target="+target,
		"--cert="+b.pki.serverCert, "--key="+b.pki.serverKey, "--cacert="+b.pki.caFile,
		"--allow-uri="+clientID, "--quiet=conns"), nil)
	if err != nil {
		return nil, err
	}
	return p, waitTCP(listen)
}

// ghostClient runs `ghostunnel client` to a ghostunnel server, verifying the
// server's SPIFFE ID (--verify-uri).
func (b *bench) ghostClient(listen, target string) (*process, error) {
	p, err := b.start("ghostunnel-client", exec.Command(b.ghostBin, "client", "--listen="+listen, "--target="+target,
		"--cert="+b.pki.clientCert, "--key="+b.pki.clientKey, "--cacert="+b.pki.caFile,
		"--verify-uri="+serverID, "--quiet=conns"), nil)
	if err != nil {
		return nil, err
	}
	return p, waitTCP(listen)
}
