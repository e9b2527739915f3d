package fleetdb

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/pgtest"
)

// BenchmarkCheckInStore measures persisted check-ins per second through
// the store alone (CheckInAs: the credential checked in the batch, group
// commit; each op returns after its commit), with
// 512 concurrent writers over 5,000 hosts. Baseline: the same ops into a
// channel-and-wait with no database (the queueing cost).
func BenchmarkCheckInStore(b *testing.B) {
	b.Run("baseline-queue-only", func(b *testing.B) {
		q := make(chan chan error, 4096)
		go func() {
			for done := range q {
				done <- nil
			}
		}()
		defer close(q)
		b.SetParallelism(256)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done := make(chan error, 1)
				q <- done
				<-done
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checkins/s")
	})
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			dsn := ""
			if backend == "postgres" {
				dsn = pgtest.StartDurable(b).NewDatabase(b)
			}
			s, err := Open(context.Background(), dsn, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			key, _ := s.AddOrg(ctx, "bench")
			const hosts = 5000
			ids, creds := make([]string, hosts), make([]string, hosts)
			for i := range ids {
				if ids[i], creds[i], _, err = s.Register(ctx, key, fmt.Sprintf("host%05d", i)); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.SetParallelism(256)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1))
					c := checkin(ids[i%hosts], time.Now(), int64(i%4), ResultOK)
					if err := s.CheckInAs(ctx, creds[i%hosts], c, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checkins/s")
			var n int
			s.queryRow(ctx, `SELECT COUNT(*) FROM checkins`).Scan(&n)
			if n != b.N {
				b.Fatalf("%d check-ins acknowledged, %d stored", b.N, n)
			}
		})
	}
}
