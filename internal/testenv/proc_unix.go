//go:build unix

package testenv

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the child in a group of its own, so that stopping it stops
// what it started too, and a Ctrl-C in the terminal reaches only our handler.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func terminate(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }

func kill(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
