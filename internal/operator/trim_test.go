package operator

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrimAfterBursts(t *testing.T) {
	var count, frees atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		trimAfterBursts(ctx, 10*time.Millisecond, count.Load, func() { frees.Add(1) })
		close(done)
	}()
	step := func(d int64) { count.Add(d); time.Sleep(35 * time.Millisecond) }
	step(10) // a trickle: no burst
	if frees.Load() != 0 {
		t.Fatal("freed after a trickle of reconciles")
	}
	step(600)
	step(600) // still busy
	time.Sleep(50 * time.Millisecond)
	if got := frees.Load(); got != 1 {
		t.Fatalf("want one free once idle after a burst, got %d", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := frees.Load(); got != 1 {
		t.Fatalf("want no second free while idle, got %d", got)
	}
	cancel()
	<-done
}
