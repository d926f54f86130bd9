// Stand-in for github.com/grafana/dskit/crypto/tls, written for sidecrypt's vector generator (not
// dskit code). The real package needs gRPC, which Debian does not package for this build; the
// generator runs the transport with TLS off, so only the names tcp_transport.go uses exist here.
package tls

import (
	"crypto/tls"
	"errors"
	"flag"
)

// ClientConfig keeps the field names of dskit's ClientConfig (the YAML keys the transport inlines).
type ClientConfig struct {
	CertPath           string
	KeyPath            string
	CAPath             string
	ServerName         string
	InsecureSkipVerify bool
	CipherSuites       string
	MinVersion         string
}

// RegisterFlagsWithPrefix registers nothing: the generator never parses flags.
func (cfg *ClientConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {}

// GetTLSConfig refuses: TLS is out of scope for the generator (dskit's TLS wraps the whole
// connection, so there is no framing to record).
func (cfg *ClientConfig) GetTLSConfig() (*tls.Config, error) {
	return nil, errors.New("dskit TLS is not available in the sidecrypt vector generator")
}
