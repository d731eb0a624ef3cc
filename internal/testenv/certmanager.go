package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// certManagerRunnerPkg is the main package that runs cert-manager's controllers.
const certManagerRunnerPkg = "./internal/testenv/cmd/cert-manager"

// CertManagerBinary returns the cached cert-manager runner, building it first when the
// cache has none for this runner source and go.sum. The first build takes several
// minutes; progress goes to progress (may be nil).
func CertManagerBinary(progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	key, err := certManagerCacheKey()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(CacheDir(), "cert-manager-"+CertManagerVersion, key)
	bin := filepath.Join(dir, "cert-manager")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "[controlplane %s] building the cert-manager %s controllers (several minutes, once)\n", time.Now().Format(time.TimeOnly), CertManagerVersion)
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", tmp, certManagerRunnerPkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build the cert-manager runner: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "[controlplane %s] cert-manager ready\n", time.Now().Format(time.TimeOnly))
	return bin, nil
}

// certManagerCacheKey changes whenever the runner's source or any pinned module does.
func certManagerCacheKey() (string, error) {
	h := sha256.New()
	for _, f := range []string{filepath.Join(certManagerRunnerPkg, "main.go"), "go.sum"} {
		b, err := os.ReadFile(filepath.Join(RepoRoot(), f))
		if err != nil {
			return "", fmt.Errorf("failed to read %s: %w", f, err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// process is a child process whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startProcess(logPath string, env []string, name string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() {
		p.done <- cmd.Wait()
		logFile.Close()
	}()
	return p, nil
}

// stop asks the process to end, and kills it when it has not after a grace period.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	terminate(p.cmd)
	select {
	case <-p.done:
	case <-time.After(grace):
		kill(p.cmd)
		<-p.done
	}
}

// exited reports whether the process ended, with its error.
func (p *process) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}
