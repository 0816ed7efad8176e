package turn

import (
	"net"
	"sync"
	"time"
)

// pendingTTL is how long a quota reservation may wait for its allocation.
// pion resolves each one within the request that made it (the allocation is
// created or the request fails); the expiry only guards against a path that
// does neither.
const pendingTTL = 30 * time.Second

// quota enforces turn.user_quota and turn.total_quota.
//
// pion asks the QuotaHandler before it creates an allocation, and reports the
// allocation afterwards. Counting only created allocations would let a
// client that sends many Allocate requests at once (over many TCP
// connections, each read by its own goroutine) pass the check many times
// before any is counted. So the handler reserves a slot, and the
// OnAllocationCreated event turns the reservation into an allocation, or
// OnAllocationError (the request failed) drops it. Reservations are keyed by
// the client's transport address, which is the same in all three callbacks.
type quota struct {
	// Static after construction.
	perUser, total int
	now            func() time.Time

	mu      sync.Mutex
	active  map[string]int        // allocations per user; guarded by mu
	pending map[string][]reserved // reservations per client address; guarded by mu
	count   int                   // allocations plus reservations; guarded by mu
}

type reserved struct {
	user string
	at   time.Time
}

func newQuota(perUser, total int, now func() time.Time) *quota {
	return &quota{perUser: perUser, total: total, now: now, active: make(map[string]int), pending: make(map[string][]reserved)}
}

// reserve takes a slot for user's next allocation from src, or reports that
// a quota is reached.
func (q *quota) reserve(user string, src net.Addr) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.expire()
	if q.count >= q.total || q.active[user] >= q.perUser {
		return false
	}
	k := addrKey(src)
	q.pending[k] = append(q.pending[k], reserved{user: user, at: q.now()})
	q.active[user]++
	q.count++
	return true
}

// created turns the reservation for src into an allocation. An allocation
// without a reservation (not expected) is counted all the same, so that its
// deletion balances.
func (q *quota) created(user string, src net.Addr) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.take(addrKey(src), user) {
		return // already counted by reserve
	}
	q.active[user]++
	q.count++
}

// failed drops a reservation of src whose allocation was not created.
func (q *quota) failed(src net.Addr) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := addrKey(src)
	if len(q.pending[k]) == 0 {
		return
	}
	r := q.pending[k][0]
	q.take(k, r.user)
	q.release(r.user)
}

// deleted gives back the slot of a deleted allocation.
func (q *quota) deleted(user string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.release(user)
}

// allocations returns the number of allocations and reservations.
func (q *quota) allocations() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

// take removes one reservation of user for k. Called with mu held.
func (q *quota) take(k, user string) bool {
	rs := q.pending[k]
	for i, r := range rs {
		if r.user == user {
			rs = append(rs[:i:i], rs[i+1:]...)
			if len(rs) == 0 {
				delete(q.pending, k)
			} else {
				q.pending[k] = rs
			}
			return true
		}
	}
	return false
}

// release gives back one slot of user. Called with mu held.
func (q *quota) release(user string) {
	if q.active[user] <= 1 {
		delete(q.active, user)
	} else {
		q.active[user]--
	}
	if q.count > 0 {
		q.count--
	}
}

// expire drops reservations older than pendingTTL. Called with mu held.
func (q *quota) expire() {
	if len(q.pending) == 0 {
		return
	}
	limit := q.now().Add(-pendingTTL)
	for k, rs := range q.pending {
		for _, r := range rs {
			if r.at.Before(limit) {
				q.take(k, r.user)
				q.release(r.user)
			}
		}
	}
}

// addrKey names a client transport address; the network keeps a UDP and a
// TCP client on the same IP and port apart.
func addrKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.Network() + "/" + a.String()
}
