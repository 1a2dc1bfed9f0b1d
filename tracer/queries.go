package tracer

import "time"

// maxPendingQueries bounds the socket-table queries waiting for the query
// worker; one more is not queued but answered without the table (counted).
const maxPendingQueries = 64

// queries runs the slow socket-table queries (a sock_diag dump and a scan
// of every process's fds for each failed bind) on a goroutine of their own,
// so that the ring-buffer reader only reads, decodes and tracks. A job runs
// there and returns what to apply; the diagnoser applies it on its own
// goroutine (its state has one owner), at its next tick.
type queries struct {
	jobs    chan func() func()
	results chan func()
	pending int
	dropped uint64 // jobs not queued: the queue was full
}

func newQueries() *queries {
	q := &queries{
		jobs:    make(chan func() func(), maxPendingQueries),
		results: make(chan func(), maxPendingQueries),
	}
	go func() {
		for job := range q.jobs {
			q.results <- job()
		}
		close(q.results)
	}()
	return q
}

// full reports whether a job posted now would be dropped: callers that can
// ask later wait for room instead.
func (q *queries) full() bool { return len(q.jobs) == cap(q.jobs) || q.pending >= 2*maxPendingQueries }

// post queues job; false (counted) when the queue is full.
func (q *queries) post(job func() func()) bool {
	select {
	case q.jobs <- job:
		q.pending++
		return true
	default:
		q.dropped++
		return false
	}
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
	for q.pending > 0 {
		if wait == 0 {
			select {
			case done := <-q.results:
				q.pending--
				done()
				continue
			default:
				return
			}
		}
		select {
		case done := <-q.results:
			q.pending--
			done()
		case <-deadline:
			return
		}
	}
}

// close stops the worker once the queued jobs ran.
func (q *queries) close() { close(q.jobs) }
