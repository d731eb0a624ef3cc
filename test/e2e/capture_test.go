package e2e

// Transparent capture in network namespaces: the real `meshtls-proxy capture`
// step, run with the arguments the injector gives it and with CAP_NET_ADMIN
// only, programs a "pod" namespace; a client in a second namespace, joined to it
// by a veth pair, reaches the application's real ports and is redirected to the
// proxy's inbound port, and the pod's own outbound connections to the proxy's
// outbound port, except what the rules exclude.
//
// The proxy here is a minimal forwarder (role "forwarder" below) built on
// capture.OriginalDst, running as the proxy's UID: it tells each client which
// listener caught the connection and what original destination the kernel
// reported, then splices the connection to where the real proxy would send it.
//
// Helper processes (application servers, the forwarder, dialers) are this test
// binary re-executed inside the namespaces with MESHTLS_CAPTURE_HELPER set; the
// init function below runs them before any test. Addresses are in 198.18.0.0/15
// (RFC 2544, for benchmarking) and fdaa:6d74:6c73::/48 (unique local), and exist
// only in the namespaces this test makes.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshtls/meshtls-operator/internal/capture"
	"github.com/meshtls/meshtls-operator/internal/inject"
	"github.com/meshtls/meshtls-operator/internal/testenv"
)

const (
	helperEnv = "MESHTLS_CAPTURE_HELPER"

	podV4      = "198.18.0.2"
	clientV4   = "198.18.0.1"
	externalV4 = "198.18.1.1" // in the excluded range
	podV6      = "fdaa:6d74:6c73::2"
	clientV6   = "fdaa:6d74:6c73::1"
	externalV6 = "fdaa:6d74:6c73:1::1" // in the excluded range

	appUID = 1000
)

func init() {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
}

func TestCaptureInNetworkNamespaces(t *testing.T) {
	for _, tool := range []string{"ip", "nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 util-linux): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces and programs nftables: needs root (CI runs as root)")
	}
	proxyUID := inject.DefaultConfig().ProxyUID

	// What the injector gives the capture step for a pod with every exclusion.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{
			inject.AnnotationExcludeInboundPorts:  "8081",
			inject.AnnotationExcludeOutboundPorts: "9091",
			inject.AnnotationExcludeOutboundCIDRs: "198.18.1.0/24,fdaa:6d74:6c73:1::/64",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if err := inject.Inject(pod, inject.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	step := pod.Spec.InitContainers[0]
	if step.Name != inject.CaptureContainer || step.Args[0] != "capture" {
		t.Fatalf("first init container = %s %v, want the capture step", step.Name, step.Args)
	}
	if caps := step.SecurityContext.Capabilities.Add; len(caps) != 1 || caps[0] != "NET_ADMIN" {
		t.Fatalf("capture step capabilities = %v; this test grants NET_ADMIN only", caps)
	}

	bin := binDir(t)
	proxyBin := filepath.Join(bin, "meshtls-proxy")
	build := exec.Command("go", "build", "-o", proxyBin, "./cmd/proxy")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/proxy: %v\n%s", err, out)
	}
	self := filepath.Join(bin, "e2e.test")
	copyExecutable(t, self)

	podNS, clientNS := makeNamespaces(t)

	// Without NET_ADMIN the step fails, and says what it needs.
	out, err := inNS(podNS, nsOpts{caps: "-all"}, proxyBin, step.Args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Fatalf("capture without NET_ADMIN: err %v, output %s; want a failure naming CAP_NET_ADMIN", err, out)
	}
	// With NET_ADMIN only, twice: re-running replaces the table.
	for i := 0; i < 2; i++ {
		out, err := inNS(podNS, nsOpts{caps: "-all,+net_admin"}, proxyBin, step.Args...).CombinedOutput()
		if err != nil {
			if bytes.Contains(out, []byte("not supported")) {
				t.Skipf("this kernel cannot run nf_tables nat (needs nf_tables, nft_nat, nft_redir, nf_conntrack): %s", out)
			}
			t.Fatalf("meshtls-proxy %s: %v\n%s", strings.Join(step.Args, " "), err, out)
		}
		if i == 0 {
			t.Logf("capture step:\n%s", out)
		}
	}
	if nft, err := exec.LookPath("nft"); err == nil {
		out, _ := inNS(podNS, nsOpts{}, nft, "list", "ruleset").CombinedOutput()
		if n := strings.Count(string(out), "table inet meshtls"); n != 1 {
			t.Errorf("after two runs the pod namespace holds %d meshtls tables:\n%s", n, out)
		}
	}

	// The pod: the application on its real ports (8080 captured, 8081 excluded)
	// and the forwarder on the proxy's ports, as the proxy's user.
	startHelper(t, podNS, nsOpts{uid: appUID}, self, "app", "PORTS=8080,8081")
	events := startHelper(t, podNS, nsOpts{uid: proxyUID}, self, "forwarder",
		fmt.Sprintf("INBOUND=%d", inject.InboundPort), fmt.Sprintf("OUTBOUND=%d", inject.OutboundPort))
	// Outside the pod: servers for the pod's outbound connections.
	startHelper(t, clientNS, nsOpts{uid: appUID}, self, "app", "PORTS=9090,9091")

	via := func(port int, dst string) string { return fmt.Sprintf("via %d original %s", port, dst) }
	for _, tc := range []struct {
		name string
		ns   string
		uid  int64
		dst  string
		want []string // lines received, in order; "peer <prefix>" checks the app's view
	}{
		// Inbound.
		{"inbound IPv4 is captured", clientNS, appUID, podV4 + ":8080",
			[]string{via(inject.InboundPort, podV4+":8080"), "app 8080 peer " + podV4 + ":"}},
		{"inbound IPv6 is captured", clientNS, appUID, "[" + podV6 + "]:8080",
			[]string{via(inject.InboundPort, "["+podV6+"]:8080"), "app 8080 peer [" + podV6 + "]:"}},
		{"inbound to an excluded port goes straight to the application", clientNS, appUID, podV4 + ":8081",
			[]string{"app 8081 peer " + clientV4 + ":"}},
		{"inbound IPv6 to an excluded port goes straight to the application", clientNS, appUID, "[" + podV6 + "]:8081",
			[]string{"app 8081 peer [" + clientV6 + "]:"}},
		// Outbound.
		{"outbound IPv4 is captured", podNS, appUID, clientV4 + ":9090",
			[]string{via(inject.OutboundPort, clientV4+":9090"), "app 9090 peer " + podV4 + ":"}},
		{"outbound IPv6 is captured", podNS, appUID, "[" + clientV6 + "]:9090",
			[]string{via(inject.OutboundPort, "["+clientV6+"]:9090"), "app 9090 peer [" + podV6 + "]:"}},
		{"outbound to an excluded port is not captured", podNS, appUID, clientV4 + ":9091",
			[]string{"app 9091 peer " + podV4 + ":"}},
		{"outbound to an excluded IPv4 range is not captured", podNS, appUID, externalV4 + ":9090",
			[]string{"app 9090 peer " + podV4 + ":"}},
		{"outbound to an excluded IPv6 range is not captured", podNS, appUID, "[" + externalV6 + "]:9090",
			[]string{"app 9090 peer [" + podV6 + "]:"}},
		{"the proxy's user is not captured", podNS, proxyUID, clientV4 + ":9090",
			[]string{"app 9090 peer " + podV4 + ":"}},
		{"the application reaching itself on localhost is not captured", podNS, appUID, "127.0.0.1:8080",
			[]string{"app 8080 peer 127.0.0.1:"}},
		{"the application reaching itself on its pod address is not captured", podNS, appUID, podV4 + ":8080",
			[]string{"app 8080 peer " + podV4 + ":"}},
		{"root in the pod is captured like the application", podNS, 0, clientV4 + ":9090",
			[]string{via(inject.OutboundPort, clientV4+":9090"), "app 9090 peer " + podV4 + ":"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dial(t, tc.ns, tc.uid, self, tc.dst)
			if len(got) != len(tc.want) {
				t.Fatalf("received %q, want lines starting %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Fatalf("received %q, want lines starting %q", got, tc.want)
				}
			}
		})
	}

	// A connection made to the proxy's inbound port itself is not redirected:
	// OriginalDst says so, and the forwarder refuses it rather than forwarding it
	// to itself.
	t.Run("a connection to the proxy's own port has no original destination", func(t *testing.T) {
		got := dial(t, clientNS, appUID, self, podV4+":"+strconv.Itoa(inject.InboundPort))
		if len(got) != 0 {
			t.Fatalf("received %q, want nothing (refused)", got)
		}
	})

	// The forwarder saw each captured connection exactly once: the inbound pair,
	// the outbound pair, root's outbound and the refused one. A loop (the proxy's
	// own forwarded connections captured again) would show more.
	want := map[string]int{
		"inbound " + podV4 + ":8080":          1,
		"inbound [" + podV6 + "]:8080":        1,
		"outbound " + clientV4 + ":9090":      2,
		"outbound [" + clientV6 + "]:9090":    1,
		"refused inbound no original address": 1,
	}
	got := map[string]int{}
	deadline := time.After(5 * time.Second)
	for total := 0; total < 6; {
		select {
		case line := <-events:
			if strings.HasPrefix(line, "refused inbound") {
				line = "refused inbound no original address"
			}
			got[line]++
			total++
		case <-deadline:
			t.Fatalf("forwarder events %v, want %v", got, want)
		}
	}
	select {
	case line := <-events:
		got[line]++
	case <-time.After(200 * time.Millisecond):
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("forwarder events %v, want %v", got, want)
	}
}

// makeNamespaces creates the pod and client namespaces joined by a veth pair,
// with both address families, and removes them when the test ends.
func makeNamespaces(t *testing.T) (podNS, clientNS string) {
	t.Helper()
	suffix := strconv.Itoa(os.Getpid())
	podNS, clientNS = "meshtls-pod-"+suffix, "meshtls-client-"+suffix
	for _, ns := range []string{podNS, clientNS} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	run(t, "ip", "-n", clientNS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", podNS)
	for _, c := range [][]string{
		{podNS, "addr", "add", podV4 + "/16", "dev", "eth0"},
		{podNS, "addr", "add", podV6 + "/48", "dev", "eth0", "nodad"},
		{clientNS, "addr", "add", clientV4 + "/16", "dev", "eth0"},
		{clientNS, "addr", "add", externalV4 + "/16", "dev", "eth0"},
		{clientNS, "addr", "add", clientV6 + "/48", "dev", "eth0", "nodad"},
		// Deprecated at once (preferred_lft 0), so that the client's connections
		// keep clientV6 as their source address.
		{clientNS, "addr", "add", externalV6 + "/48", "dev", "eth0", "nodad", "preferred_lft", "0"},
		{podNS, "link", "set", "lo", "up"},
		{podNS, "link", "set", "eth0", "up"},
		{clientNS, "link", "set", "lo", "up"},
		{clientNS, "link", "set", "eth0", "up"},
	} {
		run(t, "ip", append([]string{"-n", c[0]}, c[1:]...)...)
	}
	return podNS, clientNS
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// binDir is a directory other users may read and run from: helpers run as the
// proxy's and the application's users, and the go test work dir is private.
func binDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "meshtls-capture-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

type nsOpts struct {
	uid  int64  // run as this user (and group); 0 stays root
	caps string // for root: the capability bounding set, as setpriv spells it
}

// inNS builds a command that runs name in the named network namespace.
func inNS(ns string, o nsOpts, name string, args ...string) *exec.Cmd {
	argv := []string{"--net=/run/netns/" + ns}
	if o.uid != 0 {
		argv = append(argv, "--setuid="+strconv.FormatInt(o.uid, 10), "--setgid="+strconv.FormatInt(o.uid, 10))
	}
	if o.caps != "" {
		argv = append(argv, "setpriv", "--bounding-set="+o.caps)
	}
	return exec.Command("nsenter", append(append(argv, name), args...)...)
}

// startHelper runs a helper role in a namespace until the test ends, waits for
// it to print "ready", and returns the further lines it prints.
func startHelper(t *testing.T, ns string, o nsOpts, self, role string, env ...string) <-chan string {
	t.Helper()
	cmd := inNS(ns, o, self)
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("%s in %s: %s", role, ns, stderr.String())
		}
	})
	lines := make(chan string, 100)
	sc := bufio.NewScanner(stdout)
	ready := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				continue
			}
			lines <- sc.Text()
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("%s in %s exited before it was ready: %s", role, ns, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s in %s not ready after 10s: %s", role, ns, stderr.String())
	}
	return lines
}

// dial connects from a namespace, as a user, and returns the lines received
// until the server closes.
func dial(t *testing.T, ns string, uid int64, self, dst string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := inNS(ns, nsOpts{uid: uid}, self)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Env = append(os.Environ(), helperEnv+"=dial", "TARGET="+dst)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dial %s from %s as %d: %v: %s", dst, ns, uid, err, stderr.String())
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// runHelper runs a helper role in this re-executed test binary.
func runHelper(role string) int {
	var err error
	switch role {
	case "app":
		err = helperApp(os.Getenv("PORTS"))
	case "forwarder":
		err = helperForwarder(os.Getenv("INBOUND"), os.Getenv("OUTBOUND"))
	case "dial":
		err = helperDial(os.Getenv("TARGET"))
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

// helperApp listens on each port (both families) and tells every client which
// port it reached and from where, then closes.
func helperApp(ports string) error {
	for _, p := range strings.Split(ports, ",") {
		addr := ":" + p // a bare port: every address; else HOST:PORT
		if strings.Contains(p, ":") {
			addr = p
			_, p, _ = strings.Cut(p, ":")
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "app %s peer %s\n", p, c.RemoteAddr())
				c.Close()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

// helperForwarder is the stand-in for the proxy's transparent listeners: it asks
// the kernel for each connection's original destination, reports it on stdout and
// to the client, and splices the connection to the original destination (inbound:
// the application on the pod's address, as meshtls-proxy does by default).
func helperForwarder(inbound, outbound string) error {
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	for dir, port := range map[string]string{"inbound": inbound, "outbound": outbound} {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					dst, err := capture.OriginalDst(c.(*net.TCPConn))
					if err != nil {
						report("refused %s %v", dir, err)
						return
					}
					// Both directions go to the original destination, as the
					// proxy does: inbound, the pod's own address, dialled from
					// it as the proxy's user, which the rules must not capture
					// again (the event count below would show a loop).
					d := net.Dialer{Timeout: 5 * time.Second}
					if dir == "inbound" {
						d.LocalAddr = &net.TCPAddr{IP: dst.Addr().AsSlice()}
					}
					up, err := d.Dial("tcp", dst.String())
					if err != nil {
						report("failed %s %s: %v", dir, dst, err)
						return
					}
					defer up.Close()
					report("%s %s", dir, dst)
					fmt.Fprintf(c, "via %s original %s\n", port, dst)
					_, _ = io.Copy(c, up)
				}()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

// helperDial connects, prints what the server sends until it closes, and exits.
func helperDial(target string) error {
	c, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(os.Stdout, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s sent no end of stream within 5s", target)
	}
	return err
}
