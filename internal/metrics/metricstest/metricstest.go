// Package metricstest reads values out of parsed Prometheus metric
// families, for tests that scrape /metrics.
package metricstest

import dto "github.com/prometheus/client_model/go"

// Value is the value of the series of name whose labels include labels
// (name, value pairs): a counter's or gauge's value, a histogram's sample
// count. ok is false when there is no such series.
func Value(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
next:
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}
