package capture

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// newNetNS makes a fresh network namespace for one test and returns a file open
// on it; the namespace lives as long as the file. The thread that unshared is
// never unlocked, so Go discards it: no other goroutine runs in the namespace.
func newNetNS(t *testing.T) *os.File {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("programs nftables in a new network namespace: needs root (CI runs as root)")
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.f.Close() })
	return r.f
}

func connIn(t *testing.T, ns *os.File) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyOrSkip applies rs; a kernel without nf_tables is the one reason to skip.
func applyOrSkip(t *testing.T, rs *Ruleset, ns *os.File) {
	t.Helper()
	err := rs.Apply(nftables.WithNetNSFd(int(ns.Fd())))
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skipf("this kernel has no nf_tables (CONFIG_NF_TABLES, nft_nat, nft_redir): %v", err)
	}
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// TestApply programs the table for real in a fresh namespace and reads it back
// through netlink: the kernel holds exactly the rules Build made, in order, a
// second run replaces them rather than adding to them, and other tables (another
// program's, iptables-nft's) are untouched.
func TestApply(t *testing.T) {
	ns := newNetNS(t)
	conn := connIn(t, ns)

	// Someone else's tables: an inet table of another program and what
	// iptables-nft makes for `iptables -t nat`.
	other := conn.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	otherChain := conn.AddChain(&nftables.Chain{Name: "input", Table: other, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	conn.AddRule(&nftables.Rule{Table: other, Chain: otherChain, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	conn.AddTable(&nftables.Table{Name: "nat", Family: nftables.TableFamilyIPv4})
	if err := conn.Flush(); err != nil {
		t.Skipf("this kernel has no nf_tables: %v", err)
	}

	opts := Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337,
		ExcludeInboundPorts:  []uint16{15021, 15090, 8081},
		ExcludeOutboundPorts: []uint16{5432},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/25"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("2001:db8::/33")}}
	rs := Build(opts)
	applyOrSkip(t, rs, ns)
	checkKernelHolds(t, conn, rs)

	// A stray rule in our table (someone debugging) is gone after a re-run, and
	// the re-run adds nothing twice.
	table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	conn.AddRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: ChainOutput, Table: table}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	applyOrSkip(t, rs, ns)
	checkKernelHolds(t, conn, rs)

	// New options replace the old ruleset whole.
	opts.ExcludeOutboundCIDRs = nil
	opts.ExcludeOutboundPorts = []uint16{443}
	rs2 := Build(opts)
	applyOrSkip(t, rs2, ns)
	checkKernelHolds(t, conn, rs2)

	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, fmt.Sprintf("%d/%s", tb.Family, tb.Name))
	}
	for _, want := range []string{fmt.Sprintf("%d/other", nftables.TableFamilyINet), fmt.Sprintf("%d/nat", nftables.TableFamilyIPv4), fmt.Sprintf("%d/meshtls", nftables.TableFamilyINet)} {
		if !containsString(names, want) {
			t.Errorf("tables = %v, want %s among them", names, want)
		}
	}
	if len(names) != 3 {
		t.Errorf("tables = %v, want exactly other, nat and meshtls", names)
	}
	otherRules, err := conn.GetRules(other, otherChain)
	if err != nil || len(otherRules) != 1 {
		t.Errorf("the other program's rule: %d rules, %v; want it untouched", len(otherRules), err)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkKernelHolds compares what the kernel lists with what Build made: set
// elements, chains, and each rule's expressions and comment.
func checkKernelHolds(t *testing.T, conn *nftables.Conn, rs *Ruleset) {
	t.Helper()
	table := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}
	sets := map[string]*nftables.Set{}
	for _, ps := range rs.Sets {
		s, err := conn.GetSetByName(table, ps.Name)
		if err != nil {
			t.Fatalf("set %s: %v", ps.Name, err)
		}
		elems, err := conn.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint16]bool{}
		for _, e := range elems {
			got[uint16(e.Key[0])<<8|uint16(e.Key[1])] = true
		}
		want := map[uint16]bool{}
		for _, p := range ps.Ports {
			want[p] = true
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("set %s holds %v, want %v", ps.Name, got, want)
		}
		sets[ps.Name] = &nftables.Set{Name: ps.Name} // the kernel lists lookups by name only
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, c := range chains {
		if c.Table.Name == rs.Table {
			ours = append(ours, fmt.Sprintf("%s:%s:%d:%d", c.Name, c.Type, *c.Hooknum, *c.Priority))
		}
	}
	wantChains := []string{
		fmt.Sprintf("prerouting:nat:%d:-100", unix.NF_INET_PRE_ROUTING),
		fmt.Sprintf("output:nat:%d:-100", unix.NF_INET_LOCAL_OUT),
	}
	if strings.Join(ours, " ") != strings.Join(wantChains, " ") {
		t.Errorf("chains of table %s = %v, want %v", rs.Table, ours, wantChains)
	}
	for _, c := range rs.Chains {
		rules, err := conn.GetRules(table, &nftables.Chain{Name: c.Name, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != len(c.Rules) {
			t.Errorf("chain %s: the kernel holds %d rules, Build made %d", c.Name, len(rules), len(c.Rules))
			continue
		}
		for i, r := range rules {
			want := c.Rules[i]
			if comment, _ := userdata.GetString(r.UserData, userdata.TypeComment); comment != want.Comment {
				t.Errorf("chain %s rule %d: comment %q, want %q", c.Name, i, comment, want.Comment)
			}
			got := normalize(r.Exprs)
			if w := normalize(want.exprs(sets)); !reflect.DeepEqual(got, w) {
				t.Errorf("chain %s rule %d (%s):\nkernel: %s\nbuilt:  %s", c.Name, i, want.Text(), dump(got), dump(w))
			}
		}
	}
}

// normalize drops what the kernel does not echo (a lookup's transaction set ID).
func normalize(exprs []expr.Any) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok {
			c := *l
			c.SetID = 0
			e = &c
		}
		out[i] = e
	}
	return out
}

func dump(exprs []expr.Any) string {
	var b bytes.Buffer
	for _, e := range exprs {
		fmt.Fprintf(&b, "%T%+v ", e, e)
	}
	return b.String()
}

// With the nft tool installed (CI installs nftables), `nft list table` of what
// Apply programmed prints exactly what --dry-run prints: the text and the netlink
// expressions say the same thing.
func TestApplyMatchesNftListing(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not installed (apt-get install nftables); it is only used here to cross-check the listing")
	}
	ns := newNetNS(t)
	rs := Build(Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337,
		ExcludeInboundPorts:  []uint16{15021, 15090},
		ExcludeOutboundPorts: []uint16{443, 5432},
		ExcludeOutboundCIDRs: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/25"), netip.MustParsePrefix("10.96.0.1/32"),
			netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("2001:db8::/33"), netip.MustParsePrefix("::/0"),
		}})
	applyOrSkip(t, rs, ns)
	// nsenter (util-linux) enters the namespace through the file passed as fd 3.
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", nft, "list", "table", "inet", TableName)
	cmd.ExtraFiles = []*os.File{ns}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter nft list: %v\n%s", err, out)
	}
	if string(out) != rs.TableText() {
		t.Errorf("nft lists:\n%s\n--dry-run prints:\n%s", out, rs.TableText())
	}
}
