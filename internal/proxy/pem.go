package proxy

import (
	"encoding/pem"
	"errors"
)

// nextPEMCertificate returns the DER of the next CERTIFICATE block of b (other
// block types are skipped), or nil when there is none left.
func nextPEMCertificate(b []byte) (der, rest []byte, err error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, nil, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if len(block.Headers) != 0 {
			return nil, nil, errors.New("a CERTIFICATE block of the bundle has PEM headers")
		}
		return block.Bytes, b, nil
	}
}
