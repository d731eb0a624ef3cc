package capture

import (
	"net/netip"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	base := Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337, ExcludeInboundPorts: []uint16{15090, 15021}}
	with := func(f func(*Options)) Options { o := base; f(&o); return o }
	for name, tc := range map[string]struct {
		opts Options
		// Lines of the prerouting and output chains after the type line, and
		// the set elements, as nft prints them.
		inboundSet, outboundSet string
		prerouting, output      []string
	}{
		"injector defaults": {
			opts:       base,
			inboundSet: "elements = { 15001, 15006, 15021, 15090 }",
			prerouting: []string{
				`meta l4proto != tcp return comment "only TCP is captured"`,
				`iifname "lo" return comment "the pod's own traffic"`,
				`tcp dport @excluded_inbound_ports return comment "excluded inbound ports and the proxy's own"`,
				`meta l4proto tcp redirect to :15006 comment "inbound to the proxy"`,
			},
			output: []string{
				`meta l4proto != tcp return comment "only TCP is captured"`,
				`meta skuid 1337 return comment "the proxy's own connections"`,
				`oifname "lo" return comment "localhost and the pod's own addresses"`,
				`tcp dport @excluded_outbound_ports return comment "excluded outbound ports"`,
				`meta l4proto tcp redirect to :15001 comment "outbound to the proxy"`,
			},
		},
		"exclusions, other ports and uid": {
			opts: with(func(o *Options) {
				o.InboundPort, o.OutboundPort, o.ProxyUID = 16006, 16001, 2000
				o.ExcludeInboundPorts = []uint16{8081, 15090, 8081, 15021}
				o.ExcludeOutboundPorts = []uint16{5432, 443, 5432}
				o.ExcludeOutboundCIDRs = []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.96.0.1/32"),
					netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("::/0"),
				}
			}),
			inboundSet:  "elements = { 8081, 15021, 15090, 16001, 16006 }",
			outboundSet: "elements = { 443, 5432 }",
			prerouting: []string{
				`meta l4proto != tcp return comment "only TCP is captured"`,
				`iifname "lo" return comment "the pod's own traffic"`,
				`tcp dport @excluded_inbound_ports return comment "excluded inbound ports and the proxy's own"`,
				`meta l4proto tcp redirect to :16006 comment "inbound to the proxy"`,
			},
			output: []string{
				`meta l4proto != tcp return comment "only TCP is captured"`,
				`meta skuid 2000 return comment "the proxy's own connections"`,
				`oifname "lo" return comment "localhost and the pod's own addresses"`,
				`tcp dport @excluded_outbound_ports return comment "excluded outbound ports"`,
				`ip daddr 10.0.0.0/8 return comment "excluded outbound range"`,
				`ip daddr 10.96.0.1 return comment "excluded outbound range"`,
				`ip6 daddr fd00::/8 return comment "excluded outbound range"`,
				`ip6 daddr 2001:db8::1 return comment "excluded outbound range"`,
				`meta nfproto ipv6 return comment "excluded outbound range"`,
				`meta l4proto tcp redirect to :16001 comment "outbound to the proxy"`,
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			rs := Build(tc.opts)
			text := rs.TableText()
			if rs.Table != "meshtls" || !strings.HasPrefix(text, "table inet meshtls {\n") {
				t.Fatalf("table = %q, text starts %q; want inet meshtls", rs.Table, text[:min(len(text), 30)])
			}
			set := func(name string) string {
				_, after, _ := strings.Cut(text, "set "+name+" {\n\t\ttype inet_service\n")
				body, _, _ := strings.Cut(after, "\t}")
				return strings.TrimSpace(body)
			}
			if got := set(SetExcludedInboundPorts); got != tc.inboundSet {
				t.Errorf("inbound set = %q, want %q", got, tc.inboundSet)
			}
			if got := set(SetExcludedOutboundPorts); got != tc.outboundSet {
				t.Errorf("outbound set = %q, want %q", got, tc.outboundSet)
			}
			chain := func(name, typeLine string) []string {
				_, after, ok := strings.Cut(text, "chain "+name+" {\n\t\t"+typeLine+"\n")
				if !ok {
					t.Fatalf("no chain %s with %q in\n%s", name, typeLine, text)
				}
				body, _, _ := strings.Cut(after, "\t}")
				var lines []string
				for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
					lines = append(lines, strings.TrimSpace(l))
				}
				return lines
			}
			compare := func(name string, got, want []string) {
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("chain %s:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
			compare("prerouting", chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;"), tc.prerouting)
			compare("output", chain("output", "type nat hook output priority -100; policy accept;"), tc.output)

			// The dry-run script replaces the table in one nft transaction.
			if want := "table inet meshtls\ndelete table inet meshtls\n" + text; rs.String() != want {
				t.Errorf("String() does not create-delete-create the table:\n%s", rs.String())
			}
		})
	}
}

// Build must not alias or reorder the caller's slices.
func TestBuildLeavesOptionsAlone(t *testing.T) {
	o := Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337, ExcludeInboundPorts: []uint16{9000, 80}, ExcludeOutboundPorts: []uint16{443, 80}}
	Build(o)
	if o.ExcludeInboundPorts[0] != 9000 || o.ExcludeOutboundPorts[0] != 443 {
		t.Errorf("Build reordered its input: %v %v", o.ExcludeInboundPorts, o.ExcludeOutboundPorts)
	}
}
