package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/bootd/bootd/image"
	"github.com/bootd/bootd/store"
)

// These are the values that `image build` and the boot plan used to be the
// first to look at, a build's minutes or a node's boot later: here they are
// checked when the file is read, with its line.

// failFunc reports key as wrong, with the file and line where it is set.
type failFunc func(key, format string, args ...any) error

// validateImage checks the image section and the images the nodes name.
func (c *Config) validateImage(fail failFunc) error {
	s := &c.Image
	if err := image.CheckMounts(s.Mounts); err != nil {
		// CheckMounts names the key ("image.mounts[1].target: ..."): the
		// rule stays where fstab is written, the line is found here.
		key, msg, _ := strings.Cut(err.Error(), ": ")
		return fail(key, "%s", msg)
	}
	if n := s.NIS; n != nil && (n.Domain == "" || n.Server == "") {
		return fail("image.nis", "want both domain and server")
	}
	if s.Mirror == "" {
		s.Mirror = image.DefaultMirror
	}
	if u, err := url.Parse(s.Mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.ContainsFunc(s.Mirror, isSpaceOrControl) {
		return fail("image.mirror", "want the http:// or https:// URL of a Debian mirror, such as %q, got %q", image.DefaultMirror, s.Mirror)
	}
	for i, p := range s.Include {
		// mmdebstrap splits --include at commas and blanks.
		if p == "" || strings.ContainsFunc(p, func(r rune) bool { return r == ',' || isSpaceOrControl(r) }) {
			return fail(fmt.Sprintf("image.include[%d]", i), "want one package name per entry (a list such as [htop, slurmd]), got %q", p)
		}
	}
	if msg := checkPasswordHash(s.RootPasswordHash); msg != "" {
		return fail("image.root_password_hash", "%s", msg)
	}
	for i, k := range s.AuthorizedKeys {
		key := fmt.Sprintf("image.authorized_keys[%d]", i)
		// The entries are joined with newlines: one holding a line break
		// would be two entries, the second unchecked.
		if strings.ContainsAny(k, "\r\n") {
			return fail(key, "want one authorized_keys line per entry, got one with a line break")
		}
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(rest) != 0 {
			return fail(key, "want an OpenSSH public key line such as \"ssh-ed25519 AAAA... admin@master\" (the contents of a .pub file), got %q", k)
		}
	}
	if _, _, err := image.SyslogTarget(s.Syslog); err != nil {
		return fail("image.syslog", "%v", err)
	}
	// A node whose image is not a plain store name would have its files
	// looked up outside the store ("../etc").
	for i, n := range c.Nodes {
		if n.Image != "" {
			if err := store.ValidName(n.Image); err != nil {
				return fail(fmt.Sprintf("nodes[%d].image", i), "%v", err)
			}
		}
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// cryptHash matches the crypt(3) hashes Debian's libxcrypt makes for
// passwords: yescrypt (Debian's default), gost-yescrypt, scrypt, SHA-512,
// SHA-256 and bcrypt, each with the length its hash has.
var cryptHash = regexp.MustCompile(`^(` +
	`\$g?y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43}` +
	`|\$7\$[./0-9A-Za-z]{11,97}\$[./0-9A-Za-z]{43}` +
	`|\$6\$(rounds=[0-9]{1,9}\$)?[^$:\s]{1,16}\$[./0-9A-Za-z]{86}` +
	`|\$5\$(rounds=[0-9]{1,9}\$)?[^$:\s]{1,16}\$[./0-9A-Za-z]{43}` +
	`|\$2[abxy]\$[0-9]{2}\$[./0-9A-Za-z]{53}` +
	`)$`)

// checkPasswordHash says what is wrong with root_password_hash, or "".
// It goes into /etc/shadow as it is: a plain-text password there matches
// no password, and the admin who wrote it would not know why.
func checkPasswordHash(h string) string {
	const how = "make one with `mkpasswd -m yescrypt` (package whois) or `openssl passwd -6`"
	switch {
	case h == "" || h == "!" || h == "*" || h == "!*":
		return "" // root locked
	case cryptHash.MatchString(strings.TrimPrefix(h, "!")):
		return "" // a hash; "!" before it locks it, as passwd -l does
	case strings.HasPrefix(h, "$1$") || strings.HasPrefix(h, "$md5") || strings.HasPrefix(h, "_") || len(h) == 13 && !strings.HasPrefix(h, "$"):
		return "an MD5 or DES crypt hash, which today's hardware cracks quickly: " + how
	case strings.HasPrefix(h, "$"):
		return "not a whole crypt(3) hash (want $y$, $6$, $5$ or $2b$ with the length each has; was it cut, or a \"$\" lost to the shell?): " + how
	}
	return "this is not a crypt(3) hash but, it seems, a plain-text password, which must not be in the config (and in /etc/shadow would match no password): " + how +
		`, or leave it out ("" keeps root's password locked)`
}

