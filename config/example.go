package config

import _ "embed"

// Example is the commented bootd.yaml that documents every key with its
// default; the Debian package installs it as /etc/bootd/bootd.yaml. It
// loads as it is: Parse gives Default(), and CheckServe names what a
// fresh install must still set.
//
//go:embed bootd.yaml
var Example []byte
