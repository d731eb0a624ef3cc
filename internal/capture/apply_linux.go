package capture

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/userdata"
)

// Apply programs the ruleset through netlink, in one nf_tables transaction: add
// the table (a no-op when it exists), delete it, and add it anew with its sets,
// chains and rules. So re-running replaces our table whole — no duplicate rules,
// no window with half a ruleset — and touches no other table. Pass
// nftables.WithNetNSFd to program another network namespace.
func (rs *Ruleset) Apply(opts ...nftables.ConnOption) error {
	conn, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	table := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)

	sets := map[string]*nftables.Set{}
	for _, ps := range rs.Sets {
		s := &nftables.Set{Table: table, Name: ps.Name, KeyType: nftables.TypeInetService}
		elems := make([]nftables.SetElement, len(ps.Ports))
		for i, p := range ps.Ports {
			elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		if err := conn.AddSet(s, elems); err != nil {
			return fmt.Errorf("nftables: set %s: %w", ps.Name, err)
		}
		sets[ps.Name] = s
	}
	for _, c := range rs.Chains {
		hook := nftables.ChainHookPrerouting
		if c.Hook == "output" {
			hook = nftables.ChainHookOutput
		}
		policy := nftables.ChainPolicyAccept
		chain := conn.AddChain(&nftables.Chain{
			Name:     c.Name,
			Table:    table,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  hook,
			Priority: nftables.ChainPriorityNATDest,
			Policy:   &policy,
		})
		for _, r := range c.Rules {
			conn.AddRule(&nftables.Rule{
				Table:    table,
				Chain:    chain,
				Exprs:    r.exprs(sets),
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment),
			})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: program table inet %s: %w (the kernel needs nf_tables with nat, and the step needs CAP_NET_ADMIN in the pod's network namespace)", rs.Table, err)
	}
	return nil
}
