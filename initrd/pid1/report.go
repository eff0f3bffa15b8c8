package pid1

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bootd/bootd/boot"
)

// stageReport is the body of a POST to boot.ReportPath: the node says it
// reached a stage. The init sends root; the image's bootd-report.service
// sends up and down with the same fields, from boot.ReportEnv.
type stageReport struct {
	MAC        string `json:"mac"`
	Stage      string `json:"stage"`
	Image      string `json:"image"`
	Generation int    `json:"generation"`
	Hostname   string `json:"hostname"`
	Detail     string `json:"detail"`
}

// reportTimeout bounds a report, connection included: the boot goes on
// after it whatever became of the report.
const reportTimeout = 2 * time.Second

// hostnameRE is what bootd takes as a hostname in a report; it is also
// what makes the name safe in a file the booted system sources.
var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$`)

// newReport says who the node is. A hostname bootd would refuse (the
// whole report with it) is left out.
func newReport(params boot.Params, mac net.HardwareAddr, hostname string) stageReport {
	r := stageReport{MAC: mac.String()}
	r.Image, r.Generation, _ = params.Image()
	if hostnameRE.MatchString(hostname) {
		r.Hostname = hostname
	}
	return r
}

// sendReport POSTs a report to bootd's HTTP server at to.
func sendReport(to netip.AddrPort, r stageReport, timeout time.Duration) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+to.String()+boot.ReportPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// No proxy from the environment, no idle connection left behind at
	// switch_root.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("bootd answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// reportEnv is the content of boot.ReportEnv: where and as whom the
// booted system reports. Every value is an address, a number or a name
// checked by newReport (hostname) or boot.Params.Image (image), so none
// holds a quote; single quotes make them literal for the shell and for
// systemd's EnvironmentFile alike.
func reportEnv(to netip.AddrPort, r stageReport) string {
	var b strings.Builder
	b.WriteString("# Written by bootd-init: where and as whom this node reports its stages\n# (bootd-report.service).\n")
	for _, kv := range [][2]string{
		{"BOOTD_REPORT", to.String()},
		{"BOOTD_REPORT_HOST", to.Addr().String()},
		{"BOOTD_REPORT_PORT", strconv.Itoa(int(to.Port()))},
		{"BOOTD_MAC", r.MAC},
		{"BOOTD_IMAGE", r.Image},
		{"BOOTD_GENERATION", strconv.Itoa(r.Generation)},
		{"BOOTD_HOSTNAME", r.Hostname},
	} {
		fmt.Fprintf(&b, "%s='%s'\n", kv[0], kv[1])
	}
	return b.String()
}
