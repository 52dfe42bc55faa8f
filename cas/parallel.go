package cas

import (
	"context"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// forEach runs work(i) for every i in [0, n) on GOMAXPROCS goroutines (or workers,
// if positive), and returns the first error, which stops the others. newWorker is
// called once per goroutine, so that each can keep its own buffers.
func forEach(ctx context.Context, workers, n int, newWorker func() func(i int) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(workers, n) {
		work := newWorker()
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := work(i); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
