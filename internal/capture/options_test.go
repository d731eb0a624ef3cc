package capture

import (
	"errors"
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for name, tc := range map[string]struct {
		args    []string
		want    Options
		dryRun  bool
		wantErr string // substring; "" means success
	}{
		"what the injector passes": {
			args: []string{"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337", "--exclude-inbound-ports=15090,15021,8081", "--exclude-outbound-ports=5432", "--exclude-outbound-ip-ranges=10.0.0.0/8, fd00::/8"},
			want: Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337,
				ExcludeInboundPorts:  []uint16{8081, 15021, 15090},
				ExcludeOutboundPorts: []uint16{5432},
				ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		},
		"defaults and dry run": {
			args:   []string{"--proxy-uid=1337", "--dry-run", "--exclude-inbound-ports="},
			want:   Options{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337},
			dryRun: true,
		},
		"proxy uid missing":         {args: []string{"--inbound-port=15006"}, wantErr: "--proxy-uid is required"},
		"proxy uid root":            {args: []string{"--proxy-uid=0"}, wantErr: "--proxy-uid=0 would exempt every process running as root"},
		"proxy uid negative":        {args: []string{"--proxy-uid=-5"}, wantErr: "--proxy-uid=-5 is not a user ID"},
		"proxy uid too large":       {args: []string{"--proxy-uid=4294967295"}, wantErr: "is not a user ID"},
		"proxy uid not a number":    {args: []string{"--proxy-uid=envoy"}, wantErr: `invalid value "envoy" for flag -proxy-uid`},
		"inbound port zero":         {args: []string{"--proxy-uid=1337", "--inbound-port=0"}, wantErr: "--inbound-port=0 is not a port"},
		"outbound port too large":   {args: []string{"--proxy-uid=1337", "--outbound-port=70000"}, wantErr: "--outbound-port=70000 is not a port"},
		"same listener ports":       {args: []string{"--proxy-uid=1337", "--outbound-port=15006"}, wantErr: "are both 15006"},
		"bad inbound exclusion":     {args: []string{"--proxy-uid=1337", "--exclude-inbound-ports=80,http"}, wantErr: `--exclude-inbound-ports: "http" is not a port`},
		"empty port in list":        {args: []string{"--proxy-uid=1337", "--exclude-outbound-ports=80,,443"}, wantErr: `--exclude-outbound-ports: "" is not a port`},
		"port out of range in list": {args: []string{"--proxy-uid=1337", "--exclude-outbound-ports=65536"}, wantErr: `"65536" is not a port`},
		"bad cidr":                  {args: []string{"--proxy-uid=1337", "--exclude-outbound-ip-ranges=10.0.0.0/33"}, wantErr: `--exclude-outbound-ip-ranges: "10.0.0.0/33" is not a CIDR`},
		"host bits":                 {args: []string{"--proxy-uid=1337", "--exclude-outbound-ip-ranges=10.1.2.3/8"}, wantErr: "did you mean 10.0.0.0/8?"},
		"unknown flag":              {args: []string{"--proxy-uid=1337", "--exclude-inbound-port=80"}, wantErr: "flag provided but not defined: -exclude-inbound-port"},
		"positional argument":       {args: []string{"--proxy-uid=1337", "8080"}, wantErr: `unexpected argument "8080"`},
	} {
		t.Run(name, func(t *testing.T) {
			got, dryRun, err := ParseArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(got, tc.want) || dryRun != tc.dryRun {
				t.Errorf("ParseArgs(%q) = %+v, dryRun %v; want %+v, dryRun %v", tc.args, got, dryRun, tc.want, tc.dryRun)
			}
		})
	}
}

func TestParseArgsHelp(t *testing.T) {
	_, _, err := ParseArgs([]string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseArgs(-h) error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"usage: meshtls-proxy capture", "-exclude-outbound-ip-ranges", "-dry-run"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("help text lacks %q:\n%s", want, err)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		" ":                                "",
		"10.0.0.0/8":                       "10.0.0.0/8",
		"10.96.0.1":                        "10.96.0.1/32",
		"fd00::1":                          "fd00::1/128",
		"10.0.0.0/8,10.0.0.0/8, fd00::/8 ": "10.0.0.0/8 fd00::/8",
		"0.0.0.0/0,::/0":                   "0.0.0.0/0 ::/0",
		"192.168.1.0/25":                   "192.168.1.0/25",
	} {
		got, err := ParseCIDRs(in)
		if err != nil {
			t.Errorf("ParseCIDRs(%q): %v", in, err)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if strings.Join(s, " ") != want {
			t.Errorf("ParseCIDRs(%q) = %v, want %s", in, s, want)
		}
	}
	for in, wantErr := range map[string]string{
		"10.0.0.0/8,":         `"" is not a CIDR or an IP address`,
		"10.0.0/8":            `"10.0.0/8" is not a CIDR`,
		"example.com":         `"example.com" is not a CIDR or an IP address`,
		"fd00::1/8":           "did you mean fd00::/8?",
		"::ffff:10.0.0.0/104": "write the IPv4 range instead",
		"fe80::1%eth0":        "an IPv6 zone has no meaning",
	} {
		if _, err := ParseCIDRs(in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseCIDRs(%q) error = %v, want one containing %q", in, err, wantErr)
		}
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts(" 9000, 80,9000,1 ,65535")
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{1, 80, 9000, 65535}; !reflect.DeepEqual(got, want) {
		t.Errorf("ParsePorts = %v, want %v (sorted, without duplicates)", got, want)
	}
	for _, bad := range []string{"0", "-1", "80-90", "8o", "80;90"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) succeeded, want an error", bad)
		}
	}
}
