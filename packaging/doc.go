// Package packaging holds the files of bootd's Debian package (the systemd
// unit, the maintainer scripts, the nfpm config that scripts/package.sh
// builds it with) and the test that installs that package into a fresh
// Debian 12 root the way an admin would. It has no Go API.
package packaging
