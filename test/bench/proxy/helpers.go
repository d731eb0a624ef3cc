package main

// Helper processes: the benchmark re-executes itself with MESHTLS_BENCH_ROLE set to
// run the applications and the bare crypto/tls reference server in their own
// processes, so that the client's CPU and the servers' are accounted the same way
// for every target.

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshtls/meshtls-operator/internal/proxy"
)

const roleEnv = "MESHTLS_BENCH_ROLE"

func init() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	var err error
	switch role {
	case "echo":
		err = serveApp(os.Getenv("ADDRS"), nil, echo)
	case "sink":
		err = serveApp(os.Getenv("ADDRS"), nil, sink)
	case "bare-echo", "bare-sink":
		var cfg *tls.Config
		if cfg, err = bareConfig(); err == nil {
			handle := echo
			if role == "bare-sink" {
				handle = sink
			}
			err = serveApp(os.Getenv("ADDRS"), cfg, handle)
		}
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
	os.Exit(1)
}

// serveApp listens on each comma-separated address (optionally with TLS) and
// serves every connection with handle.
func serveApp(addrs string, cfg *tls.Config, handle func(net.Conn)) error {
	for _, a := range strings.Split(addrs, ",") {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if cfg != nil {
					c = tls.Server(c, cfg)
				}
				go handle(c)
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

// echo answers what it reads until the client half-closes.
func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
}

// sink reads an 8-byte length, then that many bytes, then answers the count. It
// needs no half-close, which ghostunnel does not pass on.
func sink(c net.Conn) {
	defer c.Close()
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	want := int64(binary.BigEndian.Uint64(b[:]))
	n, _ := io.CopyBuffer(io.Discard, io.LimitReader(struct{ io.Reader }{c}, want), make([]byte, 64<<10))
	binary.BigEndian.PutUint64(b[:], uint64(n))
	_, _ = c.Write(b[:])
	_, _ = io.Copy(io.Discard, c)
}

// bareConfig is the reference server: the same handshake as the proxy's (TLS 1.3,
// its key-exchange groups, a client certificate checked by VerifyPeer), with no
// proxy around it.
func bareConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(os.Getenv("CERT"), os.Getenv("KEY"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(os.Getenv("CA"))
	if err != nil {
		return nil, err
	}
	src := &proxy.MemorySource{}
	src.Set(&cert, caPEM)
	roots := src.Current().Roots
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAnyClientCert,
		CurvePreferences: proxy.DefaultKeyExchange,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := proxy.VerifyPeer(cs.PeerCertificates, proxy.PeerPolicy{TrustDomain: td, Roots: roots, Now: time.Now()})
			return err
		},
	}, nil
}

// process is a helper or a proxy the benchmark started.
type process struct {
	cmd   *exec.Cmd
	name  string
	pprof string // address of the proxy's pprof endpoint, if any
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}
