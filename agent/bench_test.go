package agent

import (
	"context"
	"testing"

	"github.com/livefix/livefix/internal/patchtest"
)

// BenchmarkUpdateNoChange is one agent's full update (TUF refresh,
// policy, status) when nothing new is published: what every agent of a
// fleet does when its poll sees a new timestamp.
func BenchmarkUpdateNoChange(b *testing.B) {
	e := newEnv(b, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	if _, err := e.agent.Update(context.Background(), UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := e.agent.Update(context.Background(), UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
