package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the sets and chains in the capture table.
const (
	SetExcludedInboundPorts  = "excluded_inbound_ports"
	SetExcludedOutboundPorts = "excluded_outbound_ports"
	ChainPrerouting          = "prerouting"
	ChainOutput              = "output"
)

// Ruleset is the capture table: built by Build from Options, printed by String
// (in the syntax `nft -f` reads and `nft list` prints) and programmed by Apply.
// Both the text and the netlink expressions come from the same terms, so what
// --dry-run prints is what Apply programs.
type Ruleset struct {
	Table  string
	Sets   []PortSet
	Chains []Chain
}

// PortSet is a named set of TCP ports in the capture table.
type PortSet struct {
	Name  string
	Ports []uint16
}

// Chain is a base chain of the capture table: type nat, policy accept.
type Chain struct {
	Name string
	// Hook is "prerouting" or "output"; both run at priority -100 (dstnat).
	Hook  string
	Rules []Rule
}

// Rule is a list of terms (matches, then one action) with a comment that shows in
// `nft list ruleset`, so that someone debugging a node sees why each rule is there.
type Rule struct {
	Terms   []Term
	Comment string
}

// Term is one match or action of a rule: its nft text, and the netlink
// expressions that implement it (all in register 1).
type Term interface {
	Text() string
	exprs(sets map[string]*nftables.Set) []expr.Any
}

// Build turns options into the capture ruleset. It is pure; Options are assumed
// valid (ParseArgs and Validate check them).
//
// Inbound (prerouting): TCP arriving at the pod goes to InboundPort unless its
// destination port is excluded. The proxy's own listeners are always excluded: a
// connection made to 15006 or 15001 directly then stays untranslated,
// OriginalDst reports ErrNotRedirected, and the proxy refuses it instead of
// forwarding it to itself.
//
// Outbound (output): TCP the pod opens goes to OutboundPort unless the proxy's
// user opened it (that is how the proxy's own forwarded connections escape
// capture), it leaves through loopback (localhost, and the pod's own addresses:
// the application talking to itself), or its destination port or address is
// excluded.
func Build(o Options) *Ruleset {
	inbound := append([]uint16{o.InboundPort, o.OutboundPort}, o.ExcludeInboundPorts...)
	slices.Sort(inbound)
	inbound = slices.Compact(inbound)
	outbound := slices.Clone(o.ExcludeOutboundPorts)
	slices.Sort(outbound)
	outbound = slices.Compact(outbound)

	notTCP := Rule{Terms: []Term{l4protoNotTCP{}, ret{}}, Comment: "only TCP is captured"}
	pre := Chain{Name: ChainPrerouting, Hook: "prerouting", Rules: []Rule{
		notTCP,
		{Terms: []Term{ifname{dir: "iifname", name: "lo"}, ret{}}, Comment: "the pod's own traffic"},
		{Terms: []Term{dportIn{set: SetExcludedInboundPorts}, ret{}}, Comment: "excluded inbound ports and the proxy's own"},
		{Terms: []Term{redirect{port: o.InboundPort}}, Comment: "inbound to the proxy"},
	}}
	out := Chain{Name: ChainOutput, Hook: "output", Rules: []Rule{
		notTCP,
		{Terms: []Term{skuid{uid: o.ProxyUID}, ret{}}, Comment: "the proxy's own connections"},
		{Terms: []Term{ifname{dir: "oifname", name: "lo"}, ret{}}, Comment: "localhost and the pod's own addresses"},
		{Terms: []Term{dportIn{set: SetExcludedOutboundPorts}, ret{}}, Comment: "excluded outbound ports"},
	}}
	for _, p := range o.ExcludeOutboundCIDRs {
		out.Rules = append(out.Rules, Rule{Terms: []Term{daddrIn{prefix: p}, ret{}}, Comment: "excluded outbound range"})
	}
	out.Rules = append(out.Rules, Rule{Terms: []Term{redirect{port: o.OutboundPort}}, Comment: "outbound to the proxy"})

	return &Ruleset{
		Table: TableName,
		Sets: []PortSet{
			{Name: SetExcludedInboundPorts, Ports: inbound},
			{Name: SetExcludedOutboundPorts, Ports: outbound},
		},
		Chains: []Chain{pre, out},
	}
}

// String prints the ruleset as an nft script that does what Apply does: create
// the table if missing, delete it, and create it anew, all in one transaction.
// The table body is in the form `nft list table inet meshtls` prints.
func (rs *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", rs.Table, rs.Table)
	b.WriteString(rs.TableText())
	return b.String()
}

// TableText is the table alone, as `nft list table inet <name>` prints it.
func (rs *Ruleset) TableText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	for i, s := range rs.Sets {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype inet_service\n", s.Name)
		if len(s.Ports) > 0 {
			ports := make([]string, len(s.Ports))
			for i, p := range s.Ports {
				ports[i] = strconv.Itoa(int(p))
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(ports, ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, c := range rs.Chains {
		b.WriteString("\n")
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook %s priority %s; policy accept;\n", c.Name, c.Hook, priorityText(c.Hook))
		for _, r := range c.Rules {
			b.WriteString("\t\t")
			b.WriteString(r.Text())
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// priorityText is how nft names priority -100 for a nat chain: "dstnat" only
// where that name is defined (prerouting), the number elsewhere.
func priorityText(hook string) string {
	if hook == "prerouting" {
		return "dstnat"
	}
	return "-100"
}

// Text is the rule in nft syntax.
func (r Rule) Text() string {
	parts := make([]string, 0, len(r.Terms)+1)
	for _, t := range r.Terms {
		parts = append(parts, t.Text())
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

func (r Rule) exprs(sets map[string]*nftables.Set) []expr.Any {
	var out []expr.Any
	for _, t := range r.Terms {
		out = append(out, t.exprs(sets)...)
	}
	return out
}

// l4protoNotTCP: meta l4proto != tcp.
type l4protoNotTCP struct{}

func (l4protoNotTCP) Text() string { return "meta l4proto != tcp" }
func (l4protoNotTCP) exprs(map[string]*nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// isTCP is the dependency nft adds in front of a tcp header match.
func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// skuid: meta skuid N, the user owning the socket (locally generated packets).
type skuid struct{ uid uint32 }

func (m skuid) Text() string { return "meta skuid " + strconv.FormatUint(uint64(m.uid), 10) }
func (m skuid) exprs(map[string]*nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.uid)},
	}
}

// ifname: iifname/oifname "lo".
type ifname struct{ dir, name string }

func (m ifname) Text() string { return m.dir + " " + strconv.Quote(m.name) }
func (m ifname) exprs(map[string]*nftables.Set) []expr.Any {
	key := expr.MetaKeyIIFNAME
	if m.dir == "oifname" {
		key = expr.MetaKeyOIFNAME
	}
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, m.name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
}

// dportIn: tcp dport @set.
type dportIn struct{ set string }

func (m dportIn) Text() string { return "tcp dport @" + m.set }
func (m dportIn) exprs(sets map[string]*nftables.Set) []expr.Any {
	s := sets[m.set]
	return append(isTCP(),
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	)
}

// daddrIn: ip daddr CIDR or ip6 daddr CIDR, with the nfproto dependency an inet
// table needs (the address sits at a different offset in each family).
type daddrIn struct{ prefix netip.Prefix }

func (m daddrIn) Text() string {
	fam, proto := "ip", "ipv4"
	if m.prefix.Addr().Is6() {
		fam, proto = "ip6", "ipv6"
	}
	switch m.prefix.Bits() {
	case 0:
		return "meta nfproto " + proto
	case m.prefix.Addr().BitLen():
		return fam + " daddr " + m.prefix.Addr().String()
	}
	return fam + " daddr " + m.prefix.String()
}

func (m daddrIn) exprs(map[string]*nftables.Set) []expr.Any {
	addr := m.prefix.Addr()
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // struct iphdr.daddr
	if addr.Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24 // struct ipv6hdr.daddr
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if m.prefix.Bits() == 0 {
		return out
	}
	size := uint32(addr.BitLen() / 8)
	out = append(out, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size})
	if m.prefix.Bits() < addr.BitLen() {
		mask := make([]byte, size)
		for i := 0; i < m.prefix.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr.AsSlice()})
}

// ret: return (leave this packet alone; the chain's accept policy lets it pass).
type ret struct{}

func (ret) Text() string { return "return" }
func (ret) exprs(map[string]*nftables.Set) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
}

// redirect: meta l4proto tcp redirect to :port — DNAT to the primary address of
// the incoming interface (prerouting) or to loopback (output), keeping the
// original destination in conntrack for SO_ORIGINAL_DST.
type redirect struct{ port uint16 }

func (m redirect) Text() string { return "meta l4proto tcp redirect to :" + strconv.Itoa(int(m.port)) }
func (m redirect) exprs(map[string]*nftables.Set) []expr.Any {
	return append(isTCP(),
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(m.port)},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	)
}
