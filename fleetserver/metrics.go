package fleetserver

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg           *prometheus.Registry
	checkins      *prometheus.CounterVec
	registrations prometheus.Counter
	rejected      *prometheus.CounterVec
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	batch         prometheus.Histogram
	batchSeconds  prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		checkins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livefix_checkins_total", Help: "Check-ins stored, by the host's last result.",
		}, []string{"result"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livefix_registrations_total", Help: "Hosts registered.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livefix_api_rejected_total", Help: "Host API requests refused, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livefix_http_requests_total", Help: "HTTP requests, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "livefix_http_request_duration_seconds", Help: "HTTP request latency, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"route"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livefix_checkin_batch_size", Help: "Check-ins written per database transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livefix_checkin_batch_seconds", Help: "Time to write one check-in batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}),
	}
	m.reg.MustRegister(m.checkins, m.registrations, m.rejected, m.requests, m.duration, m.batch, m.batchSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&fleetCollector{s: s})
	s.store.ObserveBatches(func(n int, d time.Duration, err error) {
		m.batch.Observe(float64(n))
		m.batchSeconds.Observe(d.Seconds())
	})
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// route names a request for metric labels without unbounded values.
func route(p string) string {
	switch {
	case strings.HasPrefix(p, "/repo/metadata/"):
		return "repo_metadata"
	case strings.HasPrefix(p, "/repo/"):
		return "repo_targets"
	case strings.HasPrefix(p, "/api/"), p == "/metrics", p == "/healthz", p == "/login", p == "/fleet", p == "/logout":
		return p
	case strings.HasPrefix(p, "/static/"):
		return "static"
	default:
		if i := strings.IndexByte(p[1:], '/'); i >= 0 {
			return p[:i+1]
		}
		return p
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		rt := route(r.URL.Path)
		m.requests.WithLabelValues(rt, strconv.Itoa(sw.code)).Inc()
		m.duration.WithLabelValues(rt).Observe(time.Since(start).Seconds())
	})
}

// fleetCollector reports the fleet's state from the database at scrape.
type fleetCollector struct{ s *Server }

var (
	hostsDesc = prometheus.NewDesc("livefix_fleet_hosts", "Registered hosts, and those in each state.", []string{"state"}, nil)
)

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- hostsDesc }

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sum, err := c.s.store.Summarise(ctx, c.s.cfg.Now())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(hostsDesc, err)
		return
	}
	for _, v := range []struct {
		state string
		n     int
	}{{"all", sum.Hosts}, {"behind", sum.Behind}, {"failed", sum.Failed}, {"stalled", sum.Stalled}, {"unseen", sum.Unseen}} {
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(v.n), v.state)
	}
}
