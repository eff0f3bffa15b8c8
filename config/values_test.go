package config

import (
	"strings"
	"testing"
)

// Hashes made by real programs: openssl passwd -6 / -5, and perl's crypt
// (libxcrypt) for yescrypt and bcrypt.
var goodHashes = []string{
	"$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.",
	"$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0",
	"$y$j9T$/vDf5sPG0y3RJ3OqM5q6A/$NtNZOQgddrRkEPHEhBvTiWRmdFNa2NIKHlu1VH9JfPB",
	"$y$j9T$abcdefghijklmnop$3dL1LkYnZM.OVXuVdnnaKVDlLYT92dRwOzDZ5XiVCe.",
	"$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
	"!$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.",
	"!", "*", "",
}

const edKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyx2fXSmIbHFN9B5qQe1GnlI6YsQKIXMBfDL2tx3NL9 admin@master"

func TestImageValuesAccepted(t *testing.T) {
	for _, h := range goodHashes {
		y := "nfs: {listen: \"\"}\nimage:\n  root_password_hash: '" + h + "'\n"
		if _, err := Parse("bootd.yaml", []byte(y)); err != nil {
			t.Errorf("hash %q refused: %v", h, err)
		}
	}
	cfg, err := Parse("bootd.yaml", []byte(`nfs: {listen: ""}
image:
  mirror: https://mirror.example.org:8443/debian/
  authorized_keys:
    - "`+edKey+`"
    - 'from="10.0.0.0/24",no-pty `+edKey+`'
  syslog: loghost.example.org:6514
  include: [htop, slurmd, "linux-image-amd64"]
  mounts: [{source: "files:/home", target: /home, type: nfs, options: "vers=3,hard"}]
nodes:
  - {mac: "52:54:00:00:00:01", image: trixie-gpu}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Image.Syslog != "loghost.example.org:6514" || len(cfg.Image.AuthorizedKeys) != 2 {
		t.Errorf("parsed %+v", cfg.Image)
	}
	for _, s := range []string{"none", "10.0.0.1", "10.0.0.1:514", "loghost"} {
		if _, err := Parse("bootd.yaml", []byte("nfs: {listen: \"\"}\nimage: {syslog: \""+s+"\"}\n")); err != nil {
			t.Errorf("image.syslog %q refused: %v", s, err)
		}
	}
}

func TestImageValuesRefusedWithTheirLine(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"nfs: {listen: \"\"}\nnodes:\n  - {mac: \"52:54:00:00:00:01\"}\n  - mac: \"52:54:00:00:00:02\"\n    image: \"../etc\"\n",
			`bootd.yaml:5: nodes[1].image: image name "../etc"`},
		{"nfs: {listen: \"\"}\nimage:\n  mirror: deb.debian.org/debian\n", `bootd.yaml:3: image.mirror: want the http:// or https:// URL`},
		{"nfs: {listen: \"\"}\nimage:\n  mirror: \"ftp://ftp.debian.org/debian\"\n", `bootd.yaml:3: image.mirror: want the http:// or https:// URL`},
		{"nfs: {listen: \"\"}\nimage:\n  mirror: \"http:///debian\"\n", `bootd.yaml:3: image.mirror: want`},
		{"nfs: {listen: \"\"}\nimage:\n  root_password_hash: hunter2\n", `bootd.yaml:3: image.root_password_hash: this is not a crypt(3) hash but, it seems, a plain-text password`},
		{"nfs: {listen: \"\"}\nimage:\n  root_password_hash: \"$6$abcdefgh$ltjgWl6579Nlu\"\n", `bootd.yaml:3: image.root_password_hash: not a whole crypt(3) hash`},
		// What the shell leaves of "$6$salt$hash" in double quotes.
		{"nfs: {listen: \"\"}\nimage:\n  root_password_hash: \"$\"\n", `bootd.yaml:3: image.root_password_hash: not a whole crypt(3) hash`},
		{"nfs: {listen: \"\"}\nimage:\n  root_password_hash: \"$1$abc$0123456789012345678901\"\n", `bootd.yaml:3: image.root_password_hash: an MD5 or DES crypt hash`},
		{"nfs: {listen: \"\"}\nimage:\n  root_password_hash: \"$6$a:b$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\"\n", `bootd.yaml:3: image.root_password_hash: not a whole`},
		{"nfs: {listen: \"\"}\nimage:\n  authorized_keys:\n    - \"" + edKey + "\"\n    - \"ssh-ed25519 AAAAbroken admin@x\"\n", `bootd.yaml:5: image.authorized_keys[1]: want an OpenSSH public key line`},
		{"nfs: {listen: \"\"}\nimage:\n  authorized_keys: [\"" + edKey + "\\n" + edKey + "\"]\n", `bootd.yaml:3: image.authorized_keys[0]: want one authorized_keys line per entry`},
		{"nfs: {listen: \"\"}\nimage:\n  authorized_keys: [\"# just a comment\"]\n", `bootd.yaml:3: image.authorized_keys[0]: want an OpenSSH public key line`},
		{"nfs: {listen: \"\"}\nimage:\n  syslog: \"fd00::1\"\n", `bootd.yaml:3: image.syslog: want "" (the master the node booted from), "none", or the site's log host`},
		{"nfs: {listen: \"\"}\nimage:\n  syslog: \"loghost:99999\"\n", `bootd.yaml:3: image.syslog: want`},
		{"nfs: {listen: \"\"}\nimage:\n  syslog: \"log host\"\n", `bootd.yaml:3: image.syslog: want`},
		{"nfs: {listen: \"\"}\nimage:\n  syslog: \"0.0.0.0\"\n", `bootd.yaml:3: image.syslog: want`},
		{"nfs: {listen: \"\"}\nimage:\n  include: [\"htop slurmd\"]\n", `bootd.yaml:3: image.include[0]: want one package name per entry`},
		{"nfs: {listen: \"\"}\nimage:\n  mounts:\n    - {source: \"files:/home\", target: /home, type: nfs}\n    - {source: x, target: /scratch/, type: ext4}\n",
			`bootd.yaml:5: image.mounts[1].target: want a clean absolute path`},
		{"nfs: {listen: \"\"}\nimage:\n  mounts:\n    - {source: x, type: ext4}\n", `bootd.yaml:4: image.mounts[0].target: missing`},
		{"nfs: {listen: \"\"}\nimage:\n  nis: {domain: x}\n", `bootd.yaml:3: image.nis: want both domain and server`},
	}
	for _, c := range cases {
		_, err := Parse("bootd.yaml", []byte(c.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Parse(%q):\n got %v\nwant prefix %s", c.yaml, err, c.want)
		}
	}
}
