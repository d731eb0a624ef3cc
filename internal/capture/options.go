package capture

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Defaults of the capture step; the injector passes them explicitly.
const (
	DefaultInboundPort  = 15006
	DefaultOutboundPort = 15001
	// TableName is the nftables table capture owns (family inet). Re-running the
	// step replaces this table and nothing else.
	TableName = "meshtls"
)

// Options are what the init step's flags say: where to redirect, whose traffic
// and which destinations to leave alone.
type Options struct {
	// InboundPort receives the pod's inbound TCP (the proxy's 15006).
	InboundPort uint16
	// OutboundPort receives the pod's outbound TCP (the proxy's 15001).
	OutboundPort uint16
	// ProxyUID is the proxy's user: its connections are never redirected, which
	// is what keeps the proxy from capturing its own forwarded traffic.
	ProxyUID uint32
	// ExcludeInboundPorts are destination ports of inbound TCP left alone. The
	// injector always lists the proxy's metrics and health ports here; Build adds
	// InboundPort and OutboundPort themselves.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports of outbound TCP left alone.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destination ranges of outbound TCP left alone.
	ExcludeOutboundCIDRs []netip.Prefix
}

// ParseArgs reads the capture subcommand's flags. Every value is checked; an error
// names the flag and says what a good value looks like. dryRun asks for the ruleset
// to be printed instead of programmed.
func ParseArgs(args []string) (opts Options, dryRun bool, err error) {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.Usage = func() {} // the error carries the usage
	inbound := fs.Int("inbound-port", DefaultInboundPort, "port the proxy's inbound listener runs on; inbound TCP is redirected there")
	outbound := fs.Int("outbound-port", DefaultOutboundPort, "port the proxy's outbound listener runs on; outbound TCP is redirected there")
	uid := fs.Int64("proxy-uid", 0, "user the proxy runs as; its traffic is never redirected (required)")
	exIn := fs.String("exclude-inbound-ports", "", "comma-separated inbound destination ports not to redirect")
	exOut := fs.String("exclude-outbound-ports", "", "comma-separated outbound destination ports not to redirect")
	exCIDR := fs.String("exclude-outbound-ip-ranges", "", "comma-separated outbound destination CIDRs (IPv4 or IPv6) not to redirect")
	fs.BoolVar(&dryRun, "dry-run", false, "print the nftables ruleset instead of programming it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage.Reset()
			fs.PrintDefaults()
			return Options{}, false, helpError("usage: meshtls-proxy capture [flags]\n" + usage.String())
		}
		return Options{}, false, fmt.Errorf("%w", err)
	}
	if fs.NArg() > 0 {
		return Options{}, false, fmt.Errorf("unexpected argument %q; every setting is a --flag=value", fs.Arg(0))
	}
	if opts.InboundPort, err = port("--inbound-port", *inbound); err != nil {
		return Options{}, false, err
	}
	if opts.OutboundPort, err = port("--outbound-port", *outbound); err != nil {
		return Options{}, false, err
	}
	uidSet := false
	fs.Visit(func(f *flag.Flag) { uidSet = uidSet || f.Name == "proxy-uid" })
	switch {
	case !uidSet:
		return Options{}, false, errors.New("--proxy-uid is required: the proxy's user, whose traffic is never redirected")
	case *uid == 0:
		// Exempting root would exempt every root process in the pod, the
		// application too when it runs as root.
		return Options{}, false, errors.New("--proxy-uid=0 would exempt every process running as root from capture; run the proxy as a dedicated non-root user (the injector uses 1337)")
	case *uid < 0 || *uid >= math.MaxUint32:
		return Options{}, false, fmt.Errorf("--proxy-uid=%d is not a user ID (1-%d)", *uid, uint32(math.MaxUint32-1))
	}
	opts.ProxyUID = uint32(*uid)
	if opts.ExcludeInboundPorts, err = ParsePorts(*exIn); err != nil {
		return Options{}, false, fmt.Errorf("--exclude-inbound-ports: %w", err)
	}
	if opts.ExcludeOutboundPorts, err = ParsePorts(*exOut); err != nil {
		return Options{}, false, fmt.Errorf("--exclude-outbound-ports: %w", err)
	}
	if opts.ExcludeOutboundCIDRs, err = ParseCIDRs(*exCIDR); err != nil {
		return Options{}, false, fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return Options{}, false, err
	}
	return opts, dryRun, nil
}

// Validate checks what the flags cannot check one by one.
func (o Options) Validate() error {
	if o.InboundPort == 0 || o.OutboundPort == 0 {
		return errors.New("--inbound-port and --outbound-port must be ports 1-65535")
	}
	if o.InboundPort == o.OutboundPort {
		return fmt.Errorf("--inbound-port and --outbound-port are both %d; the proxy needs two listeners to tell inbound from outbound", o.InboundPort)
	}
	if o.ProxyUID == 0 {
		return errors.New("the proxy UID must not be 0 (root)")
	}
	return nil
}

func port(name string, v int) (uint16, error) {
	if v < 1 || v > 65535 {
		return 0, fmt.Errorf("%s=%d is not a port; use 1-65535", name, v)
	}
	return uint16(v), nil
}

// ParsePorts reads a comma-separated list of TCP ports ("8081, 9000"). An empty
// string is no ports. The result is sorted, without duplicates.
func ParsePorts(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port; write a comma-separated list of ports 1-65535, e.g. 8081,9000", f)
		}
		out = append(out, uint16(p))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ParseCIDRs reads a comma-separated list of IPv4 and IPv6 ranges
// ("10.0.0.0/8, fd00::/8"); a bare address is a range of one. An empty string is
// no ranges. A range with host bits set (10.1.2.3/8) is refused rather than
// silently widened or narrowed: the writer's intent is unclear. The result keeps
// the order given, without duplicates.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR; write a comma-separated list such as 10.0.0.0/8,fd00::/8", f)
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address; write a comma-separated list such as 10.0.0.0/8,fd00::/8", f)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("%q: an IPv6 zone has no meaning in a range; drop the %%%s", f, a.Zone())
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q is an IPv4-mapped IPv6 range; write the IPv4 range instead", f)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has host bits set; did you mean %s?", f, p.Masked())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// helpError is what ParseArgs returns for -h: the usage text, matching flag.ErrHelp.
type helpError string

func (e helpError) Error() string        { return string(e) }
func (e helpError) Is(target error) bool { return target == flag.ErrHelp }
