package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestNewWorkloadID(t *testing.T) {
	tests := map[string]struct {
		td, ns, sa string
		want       string
		wantErr    string
	}{
		"should build spiffe://td/ns/<ns>/sa/<sa>": {
			td: "cluster.local", ns: "shop", sa: "finance", want: "spiffe://cluster.local/ns/shop/sa/finance"},
		"should accept dots and dashes in names": {
			td: "prod.example-1", ns: "a-b", sa: "svc.v1", want: "spiffe://prod.example-1/ns/a-b/sa/svc.v1"},
		"should refuse an upper-case trust domain": {
			td: "Cluster.local", ns: "shop", sa: "finance", wantErr: "trust domain \"Cluster.local\" is not valid"},
		"should refuse a trust domain with a port": {
			td: "cluster.local:8443", ns: "shop", sa: "finance", wantErr: "is not valid"},
		"should refuse a trust domain with userinfo": {
			td: "user@cluster.local", ns: "shop", sa: "finance", wantErr: "is not valid"},
		"should refuse an empty trust domain": {
			td: "", ns: "shop", sa: "finance", wantErr: "is not valid"},
		"should refuse a trust domain longer than 255 bytes": {
			td: strings.Repeat("a", 256), ns: "shop", sa: "finance", wantErr: "at most 255"},
		"should refuse a dot segment": {
			td: "cluster.local", ns: "..", sa: "finance", wantErr: "namespace \"..\" cannot be a SPIFFE path segment"},
		"should refuse a slash in a segment": {
			td: "cluster.local", ns: "shop", sa: "a/b", wantErr: "service account \"a/b\""},
		"should refuse an ID longer than 2048 bytes": {
			td: "cluster.local", ns: strings.Repeat("n", 1000), sa: strings.Repeat("s", 1100), wantErr: "at most 2048"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := NewWorkloadID(tc.td, tc.ns, tc.sa)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    WorkloadID
		wantErr string
	}{
		"should parse a workload ID":            {in: "spiffe://cluster.local/ns/shop/sa/finance", want: WorkloadID{"cluster.local", "shop", "finance"}},
		"should refuse another scheme":          {in: "https://cluster.local/ns/shop/sa/finance", wantErr: "scheme"},
		"should refuse an upper-case scheme":    {in: "SPIFFE://cluster.local/ns/shop/sa/finance", wantErr: "scheme"},
		"should refuse a port":                  {in: "spiffe://cluster.local:443/ns/shop/sa/finance", wantErr: "trust domain"},
		"should refuse userinfo":                {in: "spiffe://u@cluster.local/ns/shop/sa/finance", wantErr: "trust domain"},
		"should refuse a query":                 {in: "spiffe://cluster.local/ns/shop/sa/finance?x=1", wantErr: "path"},
		"should refuse a fragment":              {in: "spiffe://cluster.local/ns/shop/sa/finance#x", wantErr: "path"},
		"should refuse percent-encoding":        {in: "spiffe://cluster.local/ns/shop/sa/fin%41nce", wantErr: "path"},
		"should refuse an empty segment":        {in: "spiffe://cluster.local/ns//sa/finance", wantErr: "empty"},
		"should refuse a trailing slash":        {in: "spiffe://cluster.local/ns/shop/sa/finance/", wantErr: "trailing"},
		"should refuse a dot segment":           {in: "spiffe://cluster.local/ns/../sa/finance", wantErr: "dot"},
		"should refuse a missing trust domain":  {in: "spiffe:///ns/shop/sa/finance", wantErr: "trust domain"},
		"should refuse another path shape":      {in: "spiffe://cluster.local/sa/finance/ns/shop", wantErr: "not a workload ID"},
		"should refuse extra segments":          {in: "spiffe://cluster.local/ns/shop/sa/finance/x", wantErr: "not a workload ID"},
		"should refuse an ID without a path":    {in: "spiffe://cluster.local", wantErr: "not a workload ID"},
		"should refuse an ID over 2048 bytes":   {in: "spiffe://cluster.local/ns/shop/sa/" + strings.Repeat("a", 2048), wantErr: "at most 2048"},
		"should refuse a trust domain over 255": {in: "spiffe://" + strings.Repeat("a", 256) + "/ns/shop/sa/x", wantErr: "at most 255"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseWorkloadID(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := ParseWorkloadID("spiffe://cluster.local/x"); !errors.Is(err, ErrNotWorkloadID) {
		t.Fatalf("a valid SPIFFE ID of another shape should wrap ErrNotWorkloadID, got %v", err)
	}
}

func TestSPIFFEIDDefaultsTheTrustDomain(t *testing.T) {
	if got := SPIFFEID("", "shop", "finance"); got != "spiffe://cluster.local/ns/shop/sa/finance" {
		t.Fatalf("got %s", got)
	}
}
