package tracer

import (
	"sync/atomic"
	"time"
)

// maxPendingQueries bounds the socket-table queries waiting for the query
// worker; one more is not queued but answered without the table (counted).
const maxPendingQueries = 64

// queries runs the slow socket-table queries (a sock_diag dump and a scan
// of every process's fds for each failed bind) on a goroutine of their own,
// so that the ring-buffer reader only reads, decodes and tracks. A job runs
// there and returns what to apply; the diagnoser applies it on its own
// goroutine (its state has one owner), at its next tick.
//
// A job that cannot be answered (the queue is full, or tracing ends before
// its answer) is counted as a failed query and its fallback runs instead:
// the diagnosis is made on tcptrail's own evidence, never dropped.
type queries struct {
	jobs    chan func() func()
	results chan func()
	// fallbacks holds the fallback (nil: none) of each job posted and not
	// yet applied, in posting order: the order the worker answers in.
	fallbacks []func()
	dropped   uint64 // diagnoses made without their answer: queue full, or abandoned
	abandoned atomic.Bool
	quit      chan struct{} // closed on abandon: the worker sends no more
	closed    bool          // jobs is closed
}

func newQueries() *queries {
	q := &queries{
		jobs:    make(chan func() func(), maxPendingQueries),
		results: make(chan func(), maxPendingQueries),
		quit:    make(chan struct{}),
	}
	go func() {
		defer close(q.results)
		for job := range q.jobs {
			if q.abandoned.Load() {
				continue // its fallback ran already
			}
			answer := job()
			select {
			case q.results <- answer:
			case <-q.quit:
			}
		}
	}()
	return q
}

// full reports whether a job posted now would be dropped: callers that can
// ask later wait for room instead.
func (q *queries) full() bool {
	return len(q.jobs) == cap(q.jobs) || len(q.fallbacks) >= 2*maxPendingQueries
}

// post queues job. When the queue is full it returns false, and runs
// fallback, if any, at once, counted as a failed query. Once posted, either
// the job's answer is applied or, if tracing ends first, its fallback runs.
func (q *queries) post(job func() func(), fallback func()) bool {
	if !q.abandoned.Load() {
		select {
		case q.jobs <- job:
			q.fallbacks = append(q.fallbacks, fallback)
			return true
		default:
		}
	}
	if fallback != nil {
		q.dropped++
		fallback()
	}
	return false
}

// apply runs the results of finished jobs, waiting up to wait for the
// pending ones (0: only those already done).
func (q *queries) apply(wait time.Duration) {
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for len(q.fallbacks) > 0 && !q.abandoned.Load() {
		var done func()
		if wait == 0 {
			select {
			case done = <-q.results:
			default:
				return
			}
		} else {
			select {
			case done = <-q.results:
			case <-deadline:
				return
			}
		}
		q.fallbacks[0] = nil
		q.fallbacks = q.fallbacks[1:]
		done()
	}
}

// abandon gives up on the jobs not yet applied: each one with a fallback
// (a diagnosis waiting for its answer) counts as failed and its fallback
// runs; housekeeping (sweeps, polls) is just dropped. Answers that come
// later are never applied, and the worker runs none of the jobs still
// queued.
func (q *queries) abandon() {
	if !q.stop() {
		return
	}
	for _, f := range q.fallbacks {
		if f != nil {
			q.dropped++
			f()
		}
	}
	q.fallbacks = nil
}

// stop has the worker skip what is queued and send nothing more; false if
// it was stopped already.
func (q *queries) stop() bool {
	if q.abandoned.Swap(true) {
		return false
	}
	close(q.quit)
	return true
}

// close stops the worker: it ends once the job it runs, if any, returns.
// Closing twice is harmless.
func (q *queries) close() {
	if q.closed {
		return
	}
	q.closed = true
	q.stop()
	close(q.jobs)
}
