package web

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bootd/bootd/events"
)

// nodeCollector turns the node records into metrics at each scrape, so
// that the page and the metrics can never disagree.
type nodeCollector struct {
	log     *events.Log
	list    func() NodeList
	nodes   *prometheus.Desc
	boot    *prometheus.Desc
	lost    *prometheus.Desc
	evicted *prometheus.Desc
	dropped *prometheus.Desc
	unattr  *prometheus.Desc
}

func newNodeCollector(log *events.Log, list func() NodeList) *nodeCollector {
	return &nodeCollector{log: log, list: list,
		nodes:   prometheus.NewDesc("bootd_nodes", "Nodes by the stage of their latest boot (unseen: in the node table, not seen since bootd's records began).", []string{"stage"}, nil),
		boot:    prometheus.NewDesc("bootd_boot_duration_seconds", "Boots that came up, by their duration from the first stage (DHCP) to up.", nil, nil),
		lost:    prometheus.NewDesc("bootd_boots_lost_total", "Boots that stopped short of up: no next stage in time, or started over.", nil, nil),
		evicted: prometheus.NewDesc("bootd_node_records_evicted_total", "Node records dropped to stay within the record limit.", nil, nil),
		dropped: prometheus.NewDesc("bootd_node_lines_dropped_total", "Console and syslog lines dropped or cut to stay within each node's bounds.", nil, nil),
		unattr:  prometheus.NewDesc("bootd_events_unattributed_total", "Events and log lines from addresses no node is known at.", nil, nil),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodes, c.boot, c.lost, c.evicted, c.dropped, c.unattr} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.list().Counts
	for _, st := range append(append([]events.Stage(nil), events.Stages...), StageUnseen) {
		ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	k := c.log.Counters()
	buckets := map[float64]uint64{}
	var cum, total uint64
	for i, b := range events.BootBuckets {
		cum += k.BootSeconds[i]
		buckets[b] = cum
	}
	total = cum + k.BootSeconds[len(events.BootBuckets)]
	ch <- prometheus.MustNewConstHistogram(c.boot, total, k.BootSecondsSum, buckets)
	ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(k.Lost))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(k.Evicted))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(k.LinesDropped))
	ch <- prometheus.MustNewConstMetric(c.unattr, prometheus.CounterValue, float64(k.Unattributed))
}
