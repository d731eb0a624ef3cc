// Command bundle writes the OLM bundle (bundle/manifests, bundle/metadata) from
// config/default and config/samples. `make bundle` runs it; a test fails when the
// committed bundle is stale.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshtls/meshtls-operator/internal/bundle"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

func main() {
	files, err := bundle.Generate(testenv.RepoRoot())
	if err == nil {
		err = bundle.Write(filepath.Join(testenv.RepoRoot(), "bundle"), files)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bundle: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote bundle/ (%d files) for %s\n", len(files), bundle.Image)
}
