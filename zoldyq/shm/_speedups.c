/* The engine's hot path in C: put, put_many, get and get_many, and a leased get
 * and an ack (the side table's hot steps, see "the side table" below), over the SAME
 * segment layout as ring.py/queue.py/side.py (see layout.py), with the same lock
 * protocol as lock.py (the robust mutex in the header, its dirty word, the repair
 * after EOWNERDEAD), on the same mutexes. Optional: without a compiler, or with
 * ZOLDYQ_PURE_PYTHON=1, the pure-Python path runs instead, and both interoperate on
 * one namespace because they read and write the same words the same way and take
 * the same mutexes.
 *
 * What one C call now covers, for a put (put_one, put and put_json all go through
 * do_put, their records pointing into the caller's buffers): take the locks,
 * (rewind_empty: an empty ring's offsets back to 0 if the get lock is free at once),
 * write the records, store the tail (the commit point, one aligned 8-byte release store),
 * bump the totals and the histogram, release the locks, ring the doorbell. For a
 * get: take the locks, parse the records between head and tail, copy them
 * out, store the head (its commit point), bump totals, histogram and waiter
 * count, (rewind_empty if that drained the ring and the put lock is free),
 * release. No Python bytecode runs between the lock and the unlock
 * except the callbacks that already run under the lock in the pure path
 * (lock._repair after EOWNERDEAD or with the dirty word set, and the queue's
 * _reserve / _reserve_side when the ring or the side table grows past its
 * fallocate'd bytes). A kill -9
 * anywhere therefore leaves exactly the states the pure path can leave
 * (lock.py's argument holds unchanged): before the commit store nothing is
 * visible, after it only derived totals can lag, and repair recomputes them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HEADER_BYTES 4096
#define W_RING_SIZE 2
#define W_MAX_MESSAGES 3
#define W_FLAGS 7
#define W_TAIL 8
#define W_ENQ_TOTAL 9
#define W_RESERVED 10
#define W_FULL_TOTAL 11
#define W_BYTES_IN 12
#define W_TABLE 13 /* byte offset of the block table: a base µs per BLOCK of ring */
#define W_HEAD 16
#define W_DEQ_TOTAL 17
#define W_WAITERS 18
#define W_TIMEOUTS 19
#define W_BYTES_OUT 20
#define W_ENQ_HIST 24
#define W_DEQ_HIST 48
#define W_MAX_MESSAGE_BYTES 4
#define W_SLOT_GEN 6
/* the side table (side.py), all under the get lock */
#define SW_NSLOTS 72
#define SW_DSIZE 73
#define SW_HIGH 74
#define SW_FREE 75
#define SW_TOKEN 76
#define SW_DUE 77   /* work due (µs), 0 when none */
#define SW_DHEAD 78
#define SW_DTAIL 79
#define SW_SRES 80
#define SW_DRES 81
#define SW_READY 82 /* returned messages that go before the ring */
#define SW_LEASED 83
#define SW_DELAYED 84
#define SW_DEAD 85
#define SW_BYTES 86 /* bytes held, which the caps must count */
#define SW_ACKED 88
#define SLOT_W 16
#define S_DEADLINE 1
#define S_KEY 2
#define S_SEQ 3
#define S_POS 4
#define S_LENKIND 5
#define S_ENQ 6
#define S_AUX 7
#define S_ORIGIN 8
#define ST_FREE 0
#define ST_PENDING 1
#define ST_LEASED 2
#define DHDR 16 /* side.DREC: payload length u32, slot u32, own position u64 */
#define DSKIP 0xFFFFFFFFu
#define W_PUT_LOCK 496 /* a lock's cache line: the robust mutex, then its dirty word */
#define W_GET_LOCK 504
#define LOCK_WORDS 8
#define LOCK_DIRTY 7
#define SPIN_TRIES 16 /* lock.SPIN_TRIES */
_Static_assert(sizeof(pthread_mutex_t) <= LOCK_DIRTY * 8, "a mutex fits before its dirty word");
#define FLAG_CLOSED 1
#define KIND_JSON 1
#define KIND_BYTES 2
#define LAYOUT_VERSION 5
/* a record's header (layout.py): a u32 with a 3-bit tag; compact: kind | len << 3 | delta
 * << 15; medium: (kind | 4) | len << 3 | delta >> 32 << 30, then delta's low u32; long: 7 |
 * len << 3 | kind << 30, then enqueued_at (i64); a wrap marker: the lone u32 3 */
#define TAG_MASK 7
#define LEN_SHIFT 3
#define TAG_WRAP 3
#define TAG_MEDIUM 4
#define TAG_LONG 7
#define LEN_BITS 27
#define LEN_MASK ((1ull << LEN_BITS) - 1)
#define TIME_HI_SHIFT 30
#define KIND_SHIFT 30
#define COMPACT_LEN 4096 /* payloads shorter than this may be compact */
#define COMPACT_TIME_SHIFT 15
#define COMPACT_RANGE (1ll << 17)
#define MEDIUM_RANGE (1ll << 34)
#define BLOCK_SHIFT 13
#define HDR 4 /* compact: the u32 alone; medium 8, long 12 (the form names its size) */
#define COMPACT 4
#define MEDIUM 8
#define LONG 12
#define SEQ_MASK 0xFFFFFFFFull
#define NBOUNDS 16
#define TRIM_KEEP (32 << 10)      /* queue.TRIM_KEEP: ring bytes an empty queue keeps backed */
#define TRIM_AGE_US 1000000       /* queue.TRIM_AGE: a drained record this old means idle */

static const uint64_t HIST_NS[NBOUNDS] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 25000000, 50000000, 100000000, 250000000, 500000000,
    1000000000};

static PyObject *ClosedError, *QueueDeleted, *QueueFull, *BrokenError;
static PyObject *s_wait, *s_repair;

static inline uint64_t load(volatile uint64_t *w, int i) {
    return __atomic_load_n(&w[i], __ATOMIC_ACQUIRE);
}
static inline void store(volatile uint64_t *w, int i, uint64_t v) {
    __atomic_store_n(&w[i], v, __ATOMIC_RELEASE);
}
static inline uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* -- the record header: ring.date, ring.header and ring.decode's twins, the one place here */

static inline uint64_t rec_size(uint64_t form, uint64_t len) { return (form + len + 3) & ~3ull; }

/* ring.date: the form of a record of len bytes put at t, to start at start, its delta, and
 * the block whose base to store first (-1: none). busy: a committed record or one of this
 * batch lies between head and tail; prev: where the newest ends; head: the head offset;
 * first, last: the blocks this batch stores (their base is t). */
static inline uint64_t date(const volatile uint64_t *table, int64_t t, uint64_t len,
                            uint64_t start, int busy, uint64_t prev, uint64_t head,
                            int64_t first, int64_t last, int64_t *delta, int64_t *store) {
    *delta = 0;
    *store = -1;
    if (t < 0) return LONG;
    for (uint64_t form = len < COMPACT_LEN ? COMPACT : MEDIUM; form <= MEDIUM; form += 4) {
        int64_t x = (int64_t)((start + form + len - 1) >> BLOCK_SHIFT);
        uint64_t lo = (uint64_t)x << BLOCK_SHIFT, hi = lo + (1ull << BLOCK_SHIFT);
        if (!busy || !((start == prev && prev > lo) || (start <= head && head < hi))) {
            *store = x;
            return form;
        }
        int64_t d = t - (x == first || x == last ? t : (int64_t)table[x]);
        if (d >= 0 && d < (form == COMPACT ? COMPACT_RANGE : MEDIUM_RANGE)) {
            *delta = d;
            return form;
        }
    }
    return LONG;
}

/* Write the header at at; return where the payload goes. */
static inline unsigned char *put_header(unsigned char *at, uint64_t form, uint64_t len,
                                        uint32_t kind, int64_t delta, int64_t ts) {
    uint32_t word = (uint32_t)(len << LEN_SHIFT);
    if (form == COMPACT) {
        word |= kind | (uint32_t)delta << COMPACT_TIME_SHIFT;
    } else if (form == MEDIUM) {
        uint32_t low = (uint32_t)((uint64_t)delta & SEQ_MASK);
        word |= kind | TAG_MEDIUM | (uint32_t)((uint64_t)delta >> 32) << TIME_HI_SHIFT;
        memcpy(at + 4, &low, 4);
    } else {
        word |= TAG_LONG | kind << KIND_SHIFT;
        memcpy(at + 4, &ts, 8);
    }
    memcpy(at, &word, 4);
    return at + form;
}

static inline int bucket(uint64_t ns) { /* bisect_left over HIST_NS */
    int i = 0;
    while (i < NBOUNDS && HIST_NS[i] < ns) i++;
    return i;
}
static inline void observe(volatile uint64_t *w, int base, uint64_t t0) {
    uint64_t now = mono_ns(), elapsed = now > t0 ? now - t0 : 0;
    w[base + bucket(elapsed)] += 1;
    w[base + NBOUNDS + 1] += elapsed;
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view, released, active, trim_due;
    volatile uint64_t *w;
    unsigned char *data;
    volatile uint64_t *table; /* the block table (layout.py): one base µs per 8 KiB of ring */
    uint64_t size, max_messages;
    long long clock_us; /* tests: the time puts are dated at (0: the wall clock) */
    volatile uint64_t *slots; /* the side table after the ring (NULL: none in the buffer) */
    unsigned char *sdata;
    uint64_t nslots, dsize;
    PyObject *name, *put_lock, *get_lock, *reserve, *owner; /* owner: the mmap */
    PyObject *reserve_side;
    sem_t *bell;
} Fast;

/* -- the lock protocol of lock.py ------------------------------------------ */

/* Take the robust mutex at lw (a lock's cache line: the mutex, then its dirty word), with
 * the GIL held while it is free; contended, yield and retry with the GIL released, then
 * wait as this thread's policy says (lock._wait, which may raise LockBusy). A dead holder
 * (EOWNERDEAD) sets the dirty word before the mutex is made consistent; a dirty word sends
 * us to lock._repair, which returns holding the lock, repaired, or raises having released
 * it. 0 holding it, or -1 with an exception, not holding it. */
static int acquire(PyObject *lock, volatile uint64_t *lw) {
    pthread_mutex_t *m = (pthread_mutex_t *)lw;
    int rc = pthread_mutex_trylock(m);
    if (rc == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < SPIN_TRIES && rc == EBUSY; i++) {
            sched_yield();
            rc = pthread_mutex_trylock(m);
        }
        Py_END_ALLOW_THREADS
        if (rc == EBUSY) {
            PyObject *r = PyObject_CallMethodNoArgs(lock, s_wait);
            if (r == NULL) return -1;
            rc = (int)PyLong_AsLong(r); /* pthread's answer: small, never fails */
            Py_DECREF(r);
        }
    }
    if (rc == EOWNERDEAD) {
        lw[LOCK_DIRTY] = 1; /* first: the mutex forgets the death at consistent */
        pthread_mutex_consistent(m);
    } else if (rc) { /* not held: ENOTRECOVERABLE (never released inconsistent), EDEADLK */
        PyErr_Format(rc == ENOTRECOVERABLE ? BrokenError : PyExc_RuntimeError, "lock: %s",
                     strerror(rc));
        return -1;
    }
    if (lw[LOCK_DIRTY]) {
        PyObject *r = PyObject_CallMethodNoArgs(lock, s_repair);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

static inline void release(volatile uint64_t *lw) {
    pthread_mutex_unlock((pthread_mutex_t *)lw);
}

/* -- object ----------------------------------------------------------------- */

static int Fast_init(Fast *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buffer", "name", "put_lock", "get_lock", "bell", "reserve",
                             "reserve_side", NULL};
    PyObject *buf, *name, *put_lock = Py_None, *get_lock = Py_None, *reserve = Py_None;
    PyObject *reserve_side = Py_None;
    const char *bell = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OU|OOzOO", kwlist, &buf, &name, &put_lock,
                                     &get_lock, &bell, &reserve, &reserve_side))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE) < 0) return -1;
    self->has_view = 1;
    Py_INCREF(buf);
    self->owner = buf;
    if (self->view.len < HEADER_BYTES || ((uintptr_t)self->view.buf & 7)) {
        PyErr_SetString(PyExc_ValueError, "buffer too small or misaligned");
        return -1;
    }
    self->w = (volatile uint64_t *)self->view.buf;
    self->data = (unsigned char *)self->view.buf + HEADER_BYTES;
    self->size = self->w[W_RING_SIZE];
    self->max_messages = self->w[W_MAX_MESSAGES];
    if (self->size & 7 || (uint64_t)self->view.len < HEADER_BYTES + self->size ||
        self->size < 2 * HDR) {
        PyErr_SetString(PyExc_ValueError, "ring size does not fit the buffer");
        return -1;
    }
    uint64_t table_at = self->w[W_TABLE];
    uint64_t table_len = (self->size + (1ull << BLOCK_SHIFT) - 1) >> BLOCK_SHIFT << 3;
    if (table_at & 7 || table_at < HEADER_BYTES + self->size ||
        table_at > (uint64_t)self->view.len || (uint64_t)self->view.len - table_at < table_len) {
        PyErr_SetString(PyExc_ValueError, "the block table does not fit the buffer");
        return -1;
    }
    self->table = (volatile uint64_t *)((unsigned char *)self->view.buf + table_at);
    /* the side table follows the ring when the buffer holds one (a queue segment) */
    uint64_t nslots = self->w[SW_NSLOTS], dsize = self->w[SW_DSIZE];
    uint64_t side_at = HEADER_BYTES + self->size;
    if (nslots && dsize >= 2 * DHDR && nslots <= (1u << 20) && !(dsize & 7) &&
        (uint64_t)self->view.len >= side_at + nslots * SLOT_W * 8 + dsize) {
        self->slots = (volatile uint64_t *)((unsigned char *)self->view.buf + side_at);
        self->sdata = (unsigned char *)self->view.buf + side_at + nslots * SLOT_W * 8;
        self->nslots = nslots;
        self->dsize = dsize;
    }
    Py_INCREF(name);
    self->name = name;
    int locked = put_lock != Py_None;
    if (locked && (get_lock == Py_None || !bell)) {
        PyErr_SetString(PyExc_ValueError, "locks need the bell");
        return -1;
    }
    if (locked) {
        self->bell = sem_open(bell, 0);
        if (self->bell == SEM_FAILED) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        Py_INCREF(put_lock);
        Py_INCREF(get_lock);
        self->put_lock = put_lock;
        self->get_lock = get_lock;
    }
    if (reserve != Py_None) {
        Py_INCREF(reserve);
        self->reserve = reserve;
    }
    if (reserve_side != Py_None) {
        Py_INCREF(reserve_side);
        self->reserve_side = reserve_side;
    }
    return 0;
}

static void drop_view(Fast *self) {
    if (self->has_view && self->active == 0) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        self->w = NULL;
        if (self->released && self->owner && PyObject_HasAttrString(self->owner, "close")) {
            /* release() found a call inside: the owner's close failed on our export, so
             * close the mapping now that the last call left (SharedQueue.close) */
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyObject *r = PyObject_CallMethod(self->owner, "close", NULL);
            if (r == NULL) PyErr_Clear(); /* a Python view still out: unmapped with it */
            Py_XDECREF(r);
            PyErr_Restore(t, v, tb);
        }
    }
}

static void close_sem(sem_t **s) {
    if (*s && *s != SEM_FAILED) sem_close(*s);
    *s = NULL;
}

static int Fast_traverse(Fast *self, visitproc visit, void *arg) {
    Py_VISIT(self->put_lock);
    Py_VISIT(self->get_lock);
    Py_VISIT(self->reserve);
    Py_VISIT(self->reserve_side);
    Py_VISIT(self->owner);
    return 0;
}

static int Fast_clear(Fast *self) { /* the reserve callback is a bound method of our owner */
    Py_CLEAR(self->reserve);
    Py_CLEAR(self->reserve_side);
    return 0;
}

static void Fast_dealloc(Fast *self) {
    PyObject_GC_UnTrack(self);
    if (self->has_view) PyBuffer_Release(&self->view);
    self->has_view = 0;
    close_sem(&self->bell);
    Py_CLEAR(self->name);
    Py_CLEAR(self->put_lock);
    Py_CLEAR(self->get_lock);
    Py_CLEAR(self->reserve);
    Py_CLEAR(self->reserve_side);
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Fast_release(Fast *self, PyObject *unused) {
    /* Let go of the mapping, so its mmap can close; when a call is still inside, the last
     * one out drops the view and closes the mmap itself. */
    if (self->has_view && self->active == 0) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        self->w = NULL;
    }
    self->released = 1;
    Py_RETURN_NONE;
}

static int enter(Fast *self) {
    if (self->released || !self->has_view) {
        PyErr_Format(ClosedError, "queue '%U'", self->name);
        return -1;
    }
    self->active++;
    return 0;
}
static void leave(Fast *self) {
    self->active--;
    if (self->released) drop_view(self);
}

/* -- put ---------------------------------------------------------------------- */

/* One record to put: its payload (owned by the caller for the call) and kind. */
typedef struct {
    const unsigned char *buf;
    uint64_t len;
    PyObject *ref; /* the bytes object Fast_put holds, NULL for put_one's buffer */
    uint32_t kind;
    uint32_t form;            /* write_batch's plan: COMPACT, MEDIUM or LONG, */
    uint64_t start;           /* where the record goes (0 after a wrap), */
    int64_t delta, store;     /* its µs past its block's base, the block whose base to store */
} Rec;

typedef struct {
    Rec *recs;
    Py_ssize_t n;
} Batch;

/* An empty ring's offsets back to 0 once they passed TRIM_KEEP (queue.trim's first step,
 * the same two stores in the same order, memory kept), when the other side's lock ``lw``
 * is free at once: a put that finds the ring empty or a take that drained it. A stream
 * then keeps writing the same few mapped, cached pages instead of walking the whole ring
 * through cold ones (a page fault and cache misses every 4 KiB). The caller holds its own
 * side's lock; the other is only ever tried, so no lock order is added, and only once per
 * TRIM_KEEP bytes, so the other side seldom finds its lock taken. A holder found dead is
 * left to the next one to repair, as acquire does. */
static void rewind_empty(Fast *self, volatile uint64_t *lw) {
    volatile uint64_t *w = self->w;
    pthread_mutex_t *m = (pthread_mutex_t *)lw;
    uint64_t tail = load(w, W_TAIL);
    if (!self->put_lock || (tail & SEQ_MASK) < TRIM_KEEP || load(w, W_HEAD) != tail) return;
    int rc = pthread_mutex_trylock(m);
    if (rc == EOWNERDEAD) {
        lw[LOCK_DIRTY] = 1;
        pthread_mutex_consistent(m);
    } else if (rc) {
        return;
    } else if (!lw[LOCK_DIRTY] && load(w, W_HEAD) == tail && load(w, W_TAIL) == tail) {
        store(w, W_TAIL, tail & ~SEQ_MASK);
        store(w, W_HEAD, tail & ~SEQ_MASK);
    }
    release(lw);
}

/* Plan, check, reserve and write the batch past the tail; set *new_tail. 0, or -1 with an
 * exception (QueueFull, or what reserve raised) and nothing visible. Put lock held. The plan
 * (each record's form, delta, start and base to store) is ring.write's, kept in the Recs. */
static int write_batch(Fast *self, Batch *b, int64_t ts, uint64_t *new_tail, uint64_t *nbytes) {
    volatile uint64_t *w = self->w;
    uint64_t size = self->size, tail = load(w, W_TAIL), head = load(w, W_HEAD);
    uint64_t seq = tail >> 32, off = tail & SEQ_MASK, head_off = head & SEQ_MASK;
    uint64_t count = (seq - (head >> 32)) & SEQ_MASK;
    uint64_t n = (uint64_t)b->n, need = 0, high = 0, pos = off, total = 0;
    int64_t first = -1, last = -1;
    int busy = count != 0;
    if (count + n > self->max_messages) {
        w[W_FULL_TOTAL] += 1;
        PyObject *a = Py_BuildValue("(OKKKi)", self->name, self->max_messages, count, size, 0);
        PyErr_SetObject(QueueFull, a);
        Py_XDECREF(a);
        return -1;
    }
    for (Py_ssize_t i = 0; i < b->n; i++) {
        Rec *r = &b->recs[i];
        uint64_t len = r->len;
        r->start = rec_size(LONG, len) <= size - pos ? pos : 0;
        r->form = date(self->table, ts, len, r->start, busy, pos, head_off, first, last,
                       &r->delta, &r->store);
        if (r->store >= 0) {
            last = r->store;
            if (first < 0) first = r->store;
        }
        uint64_t end = r->start + rec_size(r->form, len);
        if (r->start == pos) {
            need += end - pos;
        } else { /* a wrap marker at pos (4 bytes, always room for it), the record at 0 */
            need += size - pos + end;
            if (pos + HDR > high) high = pos + HDR;
        }
        if (end > high) high = end;
        pos = end == size ? 0 : end;
        busy = 1;
        total += len;
    }
    uint64_t used_now = 0;
    if (count) {
        uint64_t d = (off + size - head_off) % size;
        used_now = d ? d : size;
    }
    if (need > size - used_now) {
        w[W_FULL_TOTAL] += 1;
        PyObject *a = Py_BuildValue("(OKKKK)", self->name, self->max_messages, count, size, need);
        PyErr_SetObject(QueueFull, a);
        Py_XDECREF(a);
        return -1;
    }
    if (high > w[W_RESERVED] && self->reserve) {
        PyObject *r = PyObject_CallFunction(self->reserve, "K", high);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (self->released || !self->has_view) { /* cannot happen under the lock; be sure */
            PyErr_Format(ClosedError, "queue '%U'", self->name);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < b->n; i++) /* the bases first, as ring.write */
        if (b->recs[i].store >= 0) self->table[b->recs[i].store] = (uint64_t)ts;
    unsigned char *data = self->data;
    pos = off;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        Rec *r = &b->recs[i];
        uint64_t len = r->len, rec = rec_size(r->form, len);
        if (r->start != pos) {
            uint32_t wrap = TAG_WRAP;
            memcpy(data + pos, &wrap, 4);
            pos = 0;
        }
        unsigned char *at = put_header(data + pos, r->form, len, r->kind, r->delta, ts);
        memcpy(at, r->buf, len);
        if (rec > r->form + len) memset(at + len, 0, rec - r->form - len);
        pos += rec;
        if (pos == size) pos = 0;
    }
    *new_tail = (((seq + n) & SEQ_MASK) << 32) | pos;
    *nbytes = total;
    return 0;
}

static PyObject *do_put(Fast *self, Batch *b, uint64_t t0) {
    volatile uint64_t *w = self->w, *lw = w + W_PUT_LOCK;
    uint64_t new_tail, nbytes, size_after;
    int64_t now;
    if (self->put_lock && acquire(self->put_lock, lw) < 0) return NULL;
    if (w[W_FLAGS] & FLAG_CLOSED) {
        PyErr_SetObject(QueueDeleted, self->name);
        goto fail;
    }
    if (w[SW_BYTES]) { /* the side table holds messages: caps need queue.py's check */
        if (self->put_lock) release(lw);
        Py_RETURN_NONE;
    }
    rewind_empty(self, w + W_GET_LOCK);
    now = self->clock_us ? self->clock_us : wall_us();
    if (write_batch(self, b, now, &new_tail, &nbytes) < 0) goto fail;
    store(w, W_TAIL, new_tail); /* the commit point */
    w[W_ENQ_TOTAL] += (uint64_t)b->n;
    w[W_BYTES_IN] += nbytes;
    observe(w, W_ENQ_HIST, t0);
    size_after = ((new_tail >> 32) - (load(w, W_HEAD) >> 32)) & SEQ_MASK;
    if (self->put_lock) release(lw);
    uint64_t waiters = load(w, W_WAITERS);
    if (waiters && self->bell) {
        uint64_t times = waiters < (uint64_t)b->n ? waiters : (uint64_t)b->n;
        int value = 0;
        sem_getvalue(self->bell, &value);
        for (int64_t i = (int64_t)times - (value > 0 ? value : 0); i > 0; i--)
            sem_post(self->bell);
    }
    return Py_BuildValue("(KL)", size_after, (long long)now);
fail:
    if (self->put_lock) release(lw);
    return NULL;
}

static int check_len(Fast *self, Py_ssize_t len) {
    /* the caller checks max_message_bytes (at most LEN_MASK) first */
    if (rec_size(LONG, (uint64_t)len) > self->size / 2 || (uint64_t)len > LEN_MASK) {
        PyErr_SetString(PyExc_ValueError, "record larger than half the ring or a header");
        return -1;
    }
    return 0;
}

static PyObject *Fast_put_one(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* put_one(kind, data, t0_ns) -> (queue_size, enqueued_at_us) */
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "put_one(kind, data, t0)");
        return NULL;
    }
    uint32_t kind = (uint32_t)PyLong_AsUnsignedLong(args[0]);
    uint64_t t0 = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[1], &buf, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *r = NULL;
    if (check_len(self, buf.len) == 0 && enter(self) == 0) {
        Rec rec = {buf.buf, (uint64_t)buf.len, NULL, kind};
        Batch b = {&rec, 1};
        r = do_put(self, &b, t0);
        leave(self);
    }
    PyBuffer_Release(&buf);
    return r;
}

#define STACK_RECS 128 /* a batch up to this size plans on the stack, no allocation */

/* The (kind, data) record ``item`` into *r, holding a reference to its payload as bytes. 1
 * done; with ``screen`` (a limit and json_ok given) 0 for a record the caller's own checks
 * would look at (not a (kind, bytes) tuple, a kind other than bytes or checked JSON, longer
 * than limit), or -1 with an exception. */
static int plan_record(Fast *self, PyObject *item, Rec *r, int screen, uint64_t limit,
                       int json_ok) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        if (screen) return 0;
        PyErr_SetString(PyExc_TypeError, "a record is a (kind, data) tuple");
        return -1;
    }
    PyObject *kind = PyTuple_GET_ITEM(item, 0), *data = PyTuple_GET_ITEM(item, 1);
    if (screen) {
        if (!PyLong_CheckExact(kind) || !PyBytes_CheckExact(data)) return 0;
        long k = PyLong_AsLong(kind);
        if (!(k == KIND_BYTES || (json_ok && k == KIND_JSON)) ||
            (uint64_t)PyBytes_GET_SIZE(data) > limit) {
            PyErr_Clear(); /* an overflowing kind is no kind of ours either */
            return 0;
        }
        r->kind = (uint32_t)k;
    } else {
        r->kind = (uint32_t)PyLong_AsUnsignedLong(kind);
        if (PyErr_Occurred()) return -1;
    }
    if (PyBytes_CheckExact(data)) {
        Py_INCREF(data);
    } else if (PyObject_CheckBuffer(data)) { /* bytearray, memoryview: copied once here */
        if ((data = PyBytes_FromObject(data)) == NULL) return -1;
    } else {
        PyErr_Format(PyExc_TypeError, "a bytes-like object is required, not '%.100s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    if (check_len(self, PyBytes_GET_SIZE(data)) < 0) {
        Py_DECREF(data);
        return -1;
    }
    r->ref = data;
    r->buf = (const unsigned char *)PyBytes_AS_STRING(data);
    r->len = (uint64_t)PyBytes_GET_SIZE(data);
    return 1;
}

static PyObject *Fast_put(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* put(records, t0_ns[, max_message_bytes, json_checked]): records a sequence of
     * (kind, data); all or none. With the limit, Queue.put_records' checks are made here
     * too: a batch with any record they would look at steps aside (None, nothing done). */
    if (nargs != 2 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(records, t0[, max_message_bytes, json_checked])");
        return NULL;
    }
    int screen = nargs == 4, json_ok = screen ? PyObject_IsTrue(args[3]) : 1;
    uint64_t t0 = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t limit = screen ? PyLong_AsUnsignedLongLong(args[2]) : 0;
    if (PyErr_Occurred() || json_ok < 0) return NULL;
    if (screen && !PyList_Check(args[0]) && !PyTuple_Check(args[0])) /* an iterator: once */
        Py_RETURN_NONE;
    PyObject *seq = PySequence_Fast(args[0], "records must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    PyObject *r = NULL;
    Rec stack[STACK_RECS];
    Batch b = {n <= STACK_RECS ? stack : PyMem_Malloc((size_t)n * sizeof(Rec)), n};
    if (!b.recs) {
        PyErr_NoMemory();
        goto done;
    }
    if (n == 0) {
        if (screen) goto aside;
        PyErr_SetString(PyExc_ValueError, "no records");
        goto done;
    }
    for (; got < n; got++) {
        int ok = plan_record(self, PySequence_Fast_GET_ITEM(seq, got), &b.recs[got], screen,
                             limit, json_ok);
        if (ok <= 0) {
            if (ok == 0) goto aside;
            goto done;
        }
    }
    if (enter(self) == 0) {
        r = do_put(self, &b, t0);
        leave(self);
    }
    goto done;
aside:
    Py_INCREF(Py_None);
    r = Py_None;
done:
    for (Py_ssize_t i = 0; i < got; i++) Py_DECREF(b.recs[i].ref);
    if (b.recs != stack) PyMem_Free(b.recs);
    Py_DECREF(seq);
    return r;
}

/* -- get ---------------------------------------------------------------------- */

static PyObject *corrupt(Fast *self, const char *what, uint64_t a, uint64_t b) {
    PyErr_Format(BrokenError, "queue '%U': %s (%llu, %llu)", self->name, what,
                 (unsigned long long)a, (unsigned long long)b);
    return NULL;
}

/* The record at *off (past a wrap marker): where its payload starts, its length, kind and
 * stamp; *off moves past it. 0, or -1 with BrokenError. ring.decode's twin. */
static int next_record(Fast *self, uint64_t *off, uint64_t *start, uint32_t *len, uint32_t *kind,
                       int64_t *ts) {
    const unsigned char *data = self->data;
    uint64_t size = self->size, at = *off, begin, length;
    uint32_t word, low = 0;
    memcpy(&word, data + at, 4);
    uint32_t tag = word & TAG_MASK;
    if (tag == TAG_WRAP) {
        at = 0;
        memcpy(&word, data, 4);
        tag = word & TAG_MASK;
    }
    uint32_t k = tag & ~(uint32_t)TAG_MEDIUM;
    if (tag == TAG_LONG) {
        begin = at + LONG;
        k = word >> KIND_SHIFT;
        length = word >> LEN_SHIFT & LEN_MASK;
    } else if (tag & TAG_MEDIUM) {
        begin = at + MEDIUM;
        length = word >> LEN_SHIFT & LEN_MASK;
    } else {
        begin = at + COMPACT;
        length = word >> LEN_SHIFT & (COMPACT_LEN - 1);
    }
    uint64_t end = begin + length;
    if ((k != KIND_JSON && k != KIND_BYTES) || end > size) {
        corrupt(self, "bad record: offset, header", at, word);
        return -1;
    }
    /* a base after the tail (available() loaded it): what the record was dated against */
    if (tag == TAG_LONG) {
        memcpy(ts, data + at + 4, 8);
    } else if (tag & TAG_MEDIUM) {
        memcpy(&low, data + at + 4, 4);
        *ts = (int64_t)self->table[(end - 1) >> BLOCK_SHIFT] +
              (int64_t)((uint64_t)(word >> TIME_HI_SHIFT) << 32 | low);
    } else {
        *ts = (int64_t)self->table[(end - 1) >> BLOCK_SHIFT] + (int64_t)(word >> COMPACT_TIME_SHIFT);
    }
    *start = begin;
    *len = (uint32_t)length;
    *kind = k;
    at = (end + 3) & ~3ull;
    *off = at == size ? 0 : at;
    return 0;
}

/* How many records a get may take from the head (up to max_n); -1 with BrokenError. */
static Py_ssize_t available(Fast *self, Py_ssize_t max_n) {
    volatile uint64_t *w = self->w;
    uint64_t head = load(w, W_HEAD), off = head & SEQ_MASK;
    uint64_t n = ((load(w, W_TAIL) >> 32) - (head >> 32)) & SEQ_MASK;
    if (n > self->max_messages || off >= self->size || (off & 3)) {
        corrupt(self, "bad head: offset, records", off, n);
        return -1;
    }
    return (Py_ssize_t)(n < (uint64_t)max_n ? n : (uint64_t)max_n);
}

/* Parse up to max_n records from the head into a new list; *new_head, *nbytes. Lock held. */
static PyObject *read_records(Fast *self, Py_ssize_t max_n, PyObject *tag, PyTypeObject *make,
                              uint64_t *new_head, uint64_t *nbytes) {
    volatile uint64_t *w = self->w;
    uint64_t head = load(w, W_HEAD), seq = head >> 32, off = head & SEQ_MASK;
    Py_ssize_t n = available(self, max_n);
    if (n < 0) return NULL;
    PyObject *out = PyList_New(n), *stamp = NULL; /* a batch's records share one stamp */
    if (out == NULL) return NULL;
    uint64_t total = 0;
    int64_t stamp_ts = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t start;
        uint32_t len, kind;
        int64_t ts;
        if (next_record(self, &off, &start, &len, &kind, &ts) < 0) goto fail;
        if (stamp == NULL || ts != stamp_ts) {
            Py_XDECREF(stamp);
            if ((stamp = PyLong_FromLongLong(ts)) == NULL) goto fail;
            stamp_ts = ts;
        }
        PyObject *t = make ? make->tp_alloc(make, 4) : PyTuple_New(4);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)self->data + start, len);
        if (!t || !payload) {
            Py_XDECREF(t);
            Py_XDECREF(payload);
            goto fail;
        }
        PyTuple_SET_ITEM(t, 0, PyLong_FromLong(kind)); /* 1 or 2: cached small ints */
        PyTuple_SET_ITEM(t, 1, payload);
        Py_INCREF(stamp);
        PyTuple_SET_ITEM(t, 2, stamp);
        Py_INCREF(tag);
        PyTuple_SET_ITEM(t, 3, tag);
        PyList_SET_ITEM(out, i, t);
        total += len;
    }
    Py_XDECREF(stamp);
    *new_head = (((seq + (uint64_t)n) & SEQ_MASK) << 32) | off;
    *nbytes = total;
    return out;
fail:
    Py_XDECREF(stamp);
    Py_DECREF(out);
    return NULL;
}

/* ``make`` (None, or a tuple subclass the records are built as) into *make. */
static int tuple_type(PyObject *o, PyTypeObject **make) {
    if (o == Py_None) return 0;
    if (!PyType_Check(o) || !PyType_IsSubtype((PyTypeObject *)o, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "make must be a tuple subclass");
        return -1;
    }
    *make = (PyTypeObject *)o;
    return 0;
}

/* A get registers as a waiter, unregisters, or counts a timeout (queue._take). */
static void count_waiter(volatile uint64_t *w, int was_waiting, int keep_waiting, Py_ssize_t n) {
    if (!was_waiting && !keep_waiting) return;
    int wait = keep_waiting && !n;
    if (wait != was_waiting) {
        if (wait)
            w[W_WAITERS] += 1;
        else if (w[W_WAITERS])
            w[W_WAITERS] -= 1;
    }
    if (was_waiting && !keep_waiting && !n) w[W_TIMEOUTS] += 1;
}

/* Drained, and by an old record: not a stream; queue.trim can give memory back. */
static void note_drained(Fast *self, uint64_t new_head, PyObject *last) {
    volatile uint64_t *w = self->w;
    if ((new_head >> 32) == (load(w, W_TAIL) >> 32) && w[W_RESERVED] > TRIM_KEEP) {
        long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(last, 2));
        if (ts + TRIM_AGE_US < wall_us()) self->trim_due = 1;
    }
}

static PyObject *Fast_take(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* take(max_n, t0_ns, was_waiting, keep_waiting, tag, make=None) -> list of records:
     * queue.SharedQueue._take in one call; ``make`` (a tuple subclass) types the records. */
    if (nargs < 5 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError, "take(max_n, t0, was_waiting, keep_waiting, tag, make)");
        return NULL;
    }
    Py_ssize_t max_n = PyLong_AsSsize_t(args[0]);
    uint64_t t0 = PyLong_AsUnsignedLongLong(args[1]);
    int was_waiting = PyObject_IsTrue(args[2]), keep_waiting = PyObject_IsTrue(args[3]);
    PyObject *tag = args[4];
    PyTypeObject *make = NULL;
    if (PyErr_Occurred() || (nargs == 6 && tuple_type(args[5], &make) < 0)) return NULL;
    if (max_n < 0) max_n = 0;
    if (enter(self) < 0) return NULL;
    volatile uint64_t *w = self->w, *lw = w + W_GET_LOCK;
    PyObject *out = NULL;
    uint64_t new_head = 0, nbytes = 0;
    Py_ssize_t n = 0;
    if (self->get_lock && acquire(self->get_lock, lw) < 0) goto done;
    if (w[W_FLAGS] & FLAG_CLOSED) {
        PyErr_SetObject(QueueDeleted, self->name);
        goto unlock;
    }
    uint64_t due = w[SW_DUE]; /* the earliest lease/delay deadline (µs), 0 when none */
    if (w[SW_READY] || (due && due <= (uint64_t)wall_us())) { /* side work goes first */
        Py_INCREF(Py_None);
        out = Py_None;
        goto unlock;
    }
    out = read_records(self, max_n, tag, make, &new_head, &nbytes);
    if (out == NULL) goto unlock;
    n = PyList_GET_SIZE(out);
    if (n) {
        store(w, W_HEAD, new_head); /* the commit point */
        w[W_DEQ_TOTAL] += (uint64_t)n;
        w[W_BYTES_OUT] += nbytes;
        observe(w, W_DEQ_HIST, t0);
        note_drained(self, new_head, PyList_GET_ITEM(out, n - 1));
        rewind_empty(self, w + W_PUT_LOCK);
    }
    count_waiter(w, was_waiting, keep_waiting, n);
unlock:
    if (self->get_lock) release(lw);
done:
    leave(self);
    return out;
}

/* -- the side table: leases and acks -------------------------------------------
 *
 * side.py's store_leases/confirm_leases and ack_many over the same words, with the
 * same stores in the same order (word 0 of a slot and the ring's head are the
 * commit points, each one aligned 8-byte release store), so side.py's crash
 * argument holds unchanged. One lease call covers, under the get lock: read the
 * records at the head, write each into a data record and a slot committed PENDING
 * (store 1), commit the ring's head (store 2: the messages are leased), make the
 * slots LEASED (one store each), the totals. One ack call covers, under the get
 * lock: one store of word 0 per lease (LEASED -> FREE), then the derived counts.
 * Either call steps aside (returns None, nothing done) when the side table has
 * work only queue.py does: returned messages to serve first, or a deadline that
 * has passed (reclaim_due). A call that cannot finish (no slot or data room, a
 * reserve that failed) frees what it stored, as store_leases does. */

static inline uint64_t rec_bytes(uint64_t n) { return (DHDR + n + 7) & ~7ull; }

static uint64_t side_count(volatile uint64_t *w) {
    return w[SW_READY] + w[SW_LEASED] + w[SW_DELAYED] + w[SW_DEAD];
}

/* queue._reserve_side(which, upto): back slot-table (0) or data-ring (1) bytes. */
static int reserve_side(Fast *self, int which, uint64_t upto) {
    PyObject *r = PyObject_CallFunction(self->reserve_side, "iK", which, (unsigned long long)upto);
    if (r == NULL) return -1;
    Py_DECREF(r);
    if (self->released || !self->has_view) { /* cannot happen under the lock; be sure */
        PyErr_Format(ClosedError, "queue '%U'", self->name);
        return -1;
    }
    return 0;
}

/* side._alloc: 1 with a slot in *idx, 0 when none is left, -1 with an exception. */
static int side_alloc(Fast *self, uint64_t *idx) {
    volatile uint64_t *w = self->w;
    uint64_t head = w[SW_FREE];
    if (head) {
        if (head > self->nslots) {
            corrupt(self, "bad free list: slot, slots", head, self->nslots);
            return -1;
        }
        *idx = head - 1;
        w[SW_FREE] = self->slots[(head - 1) * SLOT_W + S_AUX];
        return 1;
    }
    uint64_t i = w[SW_HIGH];
    if (i >= self->nslots) return 0;
    uint64_t end = (i + 1) * SLOT_W * 8;
    if (end > w[SW_SRES] && self->reserve_side && reserve_side(self, 0, end) < 0) return -1;
    w[SW_HIGH] = i + 1;
    *idx = i;
    return 1;
}

static void side_release(Fast *self, uint64_t idx) { /* side._release */
    self->slots[idx * SLOT_W + S_AUX] = self->w[SW_FREE];
    self->w[SW_FREE] = idx + 1;
}

static void put_drec(Fast *self, uint64_t at, uint32_t n, uint32_t idx, uint64_t pos) {
    uint32_t hdr[2] = {n, idx};
    memcpy(self->sdata + at, hdr, 8);
    memcpy(self->sdata + at + 8, &pos, 8);
}

/* side._reclaim_one: 1 advanced the data head, 0 stuck, -1 with an exception. */
static int side_reclaim_one(Fast *self) {
    volatile uint64_t *w = self->w, *s = self->slots;
    uint64_t dsize = self->dsize, head = w[SW_DHEAD], tail = w[SW_DTAIL];
    if (head >= tail) return 0;
    uint64_t off = head % dsize;
    if (dsize - off < DHDR) {
        w[SW_DHEAD] = head + dsize - off;
        return 1;
    }
    uint32_t hdr[2];
    uint64_t pos;
    memcpy(hdr, self->sdata + off, 8);
    memcpy(&pos, self->sdata + off + 8, 8);
    uint32_t n = hdr[0], idx = hdr[1];
    if (n == DSKIP) {
        w[SW_DHEAD] = head + dsize - off;
        return 1;
    }
    uint64_t rec = rec_bytes(n);
    if (off + rec > dsize) {
        corrupt(self, "bad data record: offset, length", off, n);
        return -1;
    }
    if (pos == head && idx < self->nslots && (s[idx * SLOT_W] & 0xFF) != ST_FREE &&
        s[idx * SLOT_W + S_POS] == head) { /* live: move it to the tail */
        uint64_t new_off = tail % dsize, pad = dsize - new_off < rec ? dsize - new_off : 0;
        if (tail + pad + rec - head > dsize) return 0;
        uint64_t to = tail + pad, start = to % dsize;
        if (pad && pad >= DHDR) put_drec(self, new_off, DSKIP, 0, tail);
        if (start + rec > w[SW_DRES] && self->reserve_side && reserve_side(self, 1, start + rec) < 0)
            return -1;
        memmove(self->sdata + start + DHDR, self->sdata + off + DHDR, n);
        put_drec(self, start, n, idx, to);
        store(w, SW_DTAIL, to + rec);
        store(s, (int)(idx * SLOT_W + S_POS), to); /* the relocation's commit point */
    }
    w[SW_DHEAD] = head + rec;
    return 1;
}

/* side._write_data: 1 with the record's position in *pos, 0 when no room, -1 error. */
static int side_write_data(Fast *self, uint64_t idx, const unsigned char *payload, uint32_t n,
                           uint64_t *pos) {
    volatile uint64_t *w = self->w;
    uint64_t dsize = self->dsize, rec = rec_bytes(n), tail, head, off, pad;
    /* room to relocate the largest record (with its wrap padding) stays free */
    int64_t limit = (int64_t)dsize - 2 * (int64_t)rec_bytes(w[W_MAX_MESSAGE_BYTES]);
    int64_t tries = (int64_t)side_count(w) + 64;
    for (;;) {
        tail = w[SW_DTAIL];
        head = w[SW_DHEAD];
        off = tail % dsize;
        pad = dsize - off < rec ? dsize - off : 0;
        if ((int64_t)(tail + pad + rec - head) <= limit) break;
        if (--tries < 0) return 0;
        int r = side_reclaim_one(self);
        if (r <= 0) return r;
    }
    uint64_t at = tail + pad, start = at % dsize;
    if (pad && pad >= DHDR) put_drec(self, off, DSKIP, 0, tail);
    if (start + rec > w[SW_DRES] && self->reserve_side && reserve_side(self, 1, start + rec) < 0)
        return -1;
    put_drec(self, start, n, (uint32_t)idx, at);
    memcpy(self->sdata + start + DHDR, payload, n);
    store(w, SW_DTAIL, at + rec); /* published; the slot store that references it commits */
    *pos = at;
    return 1;
}

/* side._rewind: nothing is held, so the next data record starts at offset 0 again. */
static void side_rewind(Fast *self) {
    volatile uint64_t *w = self->w;
    uint64_t dsize = self->dsize, tail = w[SW_DTAIL], off = tail % dsize;
    if (!off || (dsize - off >= DHDR && off + DHDR > w[SW_DRES])) return;
    if (dsize - off >= DHDR) put_drec(self, off, DSKIP, 0, tail);
    store(w, SW_DTAIL, tail + dsize - off);
    store(w, SW_DHEAD, tail + dsize - off);
}

typedef struct {
    uint64_t start, idx, token;
    uint32_t len, kind;
    int64_t ts;
} Lease;

/* Free the first k slots a lease batch stored PENDING (side.store_leases on SideFull). */
static void unstore(Fast *self, Lease *got, Py_ssize_t k) {
    for (Py_ssize_t i = 0; i < k; i++) {
        volatile uint64_t *sl = self->slots + got[i].idx * SLOT_W;
        store(sl, 0, sl[0] & ~0xFFull);
        side_release(self, got[i].idx);
    }
}

static PyObject *side_full(Fast *self) {
    volatile uint64_t *w = self->w;
    uint64_t count = ((load(w, W_TAIL) >> 32) - (load(w, W_HEAD) >> 32)) & SEQ_MASK;
    PyObject *a = Py_BuildValue("(OKKKi)", self->name, self->max_messages,
                                count + side_count(w), self->size, 0);
    PyErr_SetObject(QueueFull, a);
    Py_XDECREF(a);
    return NULL;
}

/* The n records from the head into PENDING slots with one lease deadline (lock held):
 * side.store_leases. 0, or -1 with an exception and nothing stored. */
static int store_leases(Fast *self, Lease *got, Py_ssize_t n, uint64_t seq, uint64_t deadline) {
    volatile uint64_t *w = self->w;
    uint64_t token = w[SW_TOKEN], nbytes = 0;
    Py_ssize_t k = 0;
    int r = 1;
    for (; k < n; k++) {
        uint64_t idx, pos;
        Lease *m = &got[k];
        if ((r = side_alloc(self, &idx)) <= 0) break;
        m->idx = idx;
        if ((r = side_write_data(self, idx, self->data + m->start, m->len, &pos)) <= 0) {
            k++;
            break;
        }
        volatile uint64_t *sl = self->slots + idx * SLOT_W;
        uint64_t rseq = (seq + (uint64_t)k) & SEQ_MASK;
        sl[S_DEADLINE] = deadline;
        sl[S_KEY] = (uint64_t)m->ts; /* served by first enqueue when given back */
        sl[S_SEQ] = rseq;
        sl[S_POS] = pos;
        sl[S_LENKIND] = (uint64_t)m->kind << 32 | m->len;
        sl[S_ENQ] = (uint64_t)m->ts;
        sl[S_AUX] = rseq; /* repair: leased iff the head is past this ring record */
        sl[S_ORIGIN] = 0;
        token = (token + 1) & 0xFFFFFFFFull;
        if (!token) token = 1;
        m->token = token;
        store(sl, 0, token << 32 | 1 << 8 | ST_PENDING); /* the head commits them all */
        nbytes += rec_bytes(m->len);
    }
    w[SW_TOKEN] = token;
    if (r <= 0) {
        unstore(self, got, k);
        if (r == 0) side_full(self);
        return -1;
    }
    w[SW_BYTES] += nbytes;
    return 0;
}

/* v in lowercase hex, no leading zeros, into out (16 bytes at most); its length. The
 * length first, then the digits from the last: no reversing copy. */
static int hex(char *out, uint64_t v) {
    int n = (64 - __builtin_clzll(v | 1) + 3) / 4;
    for (int i = n - 1; i >= 0; i--, v >>= 4) out[i] = "0123456789abcdef"[v & 15];
    return n;
}

/* The records a lease hands out: (kind, data, enqueued_at, tag, lease_id, 1, expires[,
 * extra]), typed ``make``. */
static PyObject *lease_records(Fast *self, Lease *got, Py_ssize_t n, PyObject *tag,
                               PyTypeObject *make, PyObject *extra, uint64_t deadline) {
    Py_ssize_t width = extra ? 8 : 7;
    uint64_t gen = self->w[W_SLOT_GEN] & 0xFFFFFFFFull;
    PyObject *expires = PyLong_FromUnsignedLongLong(deadline), *one = PyLong_FromLong(1);
    PyObject *out = PyList_New(n);
    if (!out || !expires || !one) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        char id[64];
        int len = hex(id, gen);
        id[len++] = '.';
        len += hex(id + len, got[i].idx);
        id[len++] = '.';
        len += hex(id + len, got[i].token); /* queue.lease_id: f"{gen:x}.{idx:x}.{token:x}" */
        PyObject *t = make ? make->tp_alloc(make, width) : PyTuple_New(width);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)self->data + got[i].start,
                                                      got[i].len);
        PyObject *stamp = PyLong_FromLongLong(got[i].ts);
        PyObject *lid = PyUnicode_New(len, 127); /* ASCII: no decoder needed */
        if (lid) memcpy(PyUnicode_1BYTE_DATA(lid), id, (size_t)len);
        if (!t || !payload || !stamp || !lid) {
            Py_XDECREF(t);
            Py_XDECREF(payload);
            Py_XDECREF(stamp);
            Py_XDECREF(lid);
            goto fail;
        }
        PyTuple_SET_ITEM(t, 0, PyLong_FromLong(got[i].kind)); /* cached small ints */
        PyTuple_SET_ITEM(t, 1, payload);
        PyTuple_SET_ITEM(t, 2, stamp);
        Py_INCREF(tag);
        PyTuple_SET_ITEM(t, 3, tag);
        PyTuple_SET_ITEM(t, 4, lid);
        Py_INCREF(one);
        PyTuple_SET_ITEM(t, 5, one);
        Py_INCREF(expires);
        PyTuple_SET_ITEM(t, 6, expires);
        if (extra) {
            Py_INCREF(extra);
            PyTuple_SET_ITEM(t, 7, extra);
        }
        PyList_SET_ITEM(out, i, t);
    }
    Py_DECREF(expires);
    Py_DECREF(one);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(expires);
    Py_XDECREF(one);
    return NULL;
}

/* A non-negative int below 2**63 into *v: 0, or -1 with OverflowError or TypeError.
 * PyLong_AsUnsignedLongLong goes through _PyLong_AsByteArray, a cost a lease+ack paid
 * four times per message. */
static int u64_arg(PyObject *o, uint64_t *v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (x < 0 || overflow) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "expected an int in 0..2**63");
        return -1;
    }
    *v = (uint64_t)x;
    return 0;
}

static PyObject *Fast_lease(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* lease(max_n, t0_ns, was_waiting, keep_waiting, tag, make, lease_us, now_ns, extra):
     * queue.SharedQueue._take with a lease, from the ring, in one call (now in ns, as
     * time_ns gives it: the division is cheaper here than in Python) */
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "lease(max_n, t0, was_waiting, keep_waiting, tag, "
                                         "make, lease_us, now_ns, extra)");
        return NULL;
    }
    Py_ssize_t max_n = PyLong_AsSsize_t(args[0]);
    uint64_t t0, lease_us, now_us;
    if ((max_n == -1 && PyErr_Occurred()) || u64_arg(args[1], &t0) < 0 ||
        u64_arg(args[6], &lease_us) < 0 || u64_arg(args[7], &now_us) < 0)
        return NULL;
    now_us /= 1000;
    int was_waiting = PyObject_IsTrue(args[2]), keep_waiting = PyObject_IsTrue(args[3]);
    PyObject *tag = args[4], *extra = args[8] == Py_None ? NULL : args[8];
    PyTypeObject *make = NULL;
    if (PyErr_Occurred() || tuple_type(args[5], &make) < 0) return NULL;
    if (max_n < 0) max_n = 0;
    if (enter(self) < 0) return NULL;
    volatile uint64_t *w = self->w, *lw = w + W_GET_LOCK;
    PyObject *out = NULL;
    Lease few[4], *got = NULL; /* a get of a few needs no allocation */
    Py_ssize_t n = 0;
    if (self->get_lock && acquire(self->get_lock, lw) < 0) goto done;
    if (w[W_FLAGS] & FLAG_CLOSED) {
        PyErr_SetObject(QueueDeleted, self->name);
        goto unlock;
    }
    uint64_t due = w[SW_DUE];
    if (!self->slots || w[SW_READY] || (due && due <= now_us)) { /* queue.py's work first */
        Py_INCREF(Py_None);
        out = Py_None;
        goto unlock;
    }
    if ((n = available(self, max_n)) < 0) goto unlock;
    if (n) {
        uint64_t head = load(w, W_HEAD), seq = head >> 32, off = head & SEQ_MASK, nbytes = 0;
        uint64_t deadline = now_us + lease_us;
        if (!(got = n <= 4 ? few : PyMem_Malloc((size_t)n * sizeof(Lease)))) {
            PyErr_NoMemory();
            goto unlock;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (next_record(self, &off, &got[i].start, &got[i].len, &got[i].kind, &got[i].ts) < 0)
                goto unlock;
            nbytes += got[i].len;
        }
        uint64_t new_head = (((seq + (uint64_t)n) & SEQ_MASK) << 32) | off;
        if (store_leases(self, got, n, seq, deadline) < 0) goto unlock;
        out = lease_records(self, got, n, tag, make, extra, deadline);
        if (out == NULL) { /* nothing was handed out: free the slots again */
            for (Py_ssize_t i = 0; i < n; i++)
                w[SW_BYTES] -= rec_bytes(got[i].len);
            unstore(self, got, n);
            goto unlock;
        }
        store(w, W_HEAD, new_head); /* the commit point */
        w[W_DEQ_TOTAL] += (uint64_t)n;
        w[W_BYTES_OUT] += nbytes;
        for (Py_ssize_t i = 0; i < n; i++) { /* side.confirm_leases */
            volatile uint64_t *sl = self->slots + got[i].idx * SLOT_W;
            store(sl, 0, (sl[0] & ~0xFFull) | ST_LEASED);
        }
        w[SW_LEASED] += (uint64_t)n;
        if (!w[SW_DUE] || deadline < w[SW_DUE]) w[SW_DUE] = deadline;
        observe(w, W_DEQ_HIST, t0);
        note_drained(self, new_head, PyList_GET_ITEM(out, n - 1));
    } else if ((out = PyList_New(0)) == NULL) {
        goto unlock;
    }
    count_waiter(w, was_waiting, keep_waiting, n);
unlock:
    if (self->get_lock) release(lw);
done:
    if (got != few) PyMem_Free(got);
    leave(self);
    return out;
}

/* A lease id in queue.lease_id's form, "gen.slot.token" in hex: 1 when parsed (*idx is
 * UINT64_MAX for one that holds nothing here), 0 for any other form (queue._parse
 * decides, on the pure path). */
static int parse_lease(PyObject *o, uint64_t gen, uint64_t *idx, uint64_t *token) {
    if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_ASCII(o)) return 0;
    const unsigned char *c = PyUnicode_1BYTE_DATA(o);
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    uint64_t v[3] = {0, 0, 0};
    int field = 0, digits = 0, bad = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char ch = c[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d >= 0) {
            if (field < 3 && v[field] <= 0xFFFFFFFFull) v[field] = v[field] << 4 | (uint64_t)d;
            digits++;
        } else if (ch == '.') {
            if (!digits) bad = 1;
            field++;
            digits = 0;
        } else {
            return 0;
        }
    }
    if (!digits || field != 2) bad = 1; /* the pure path: ValueError, not held */
    *idx = bad || v[0] != gen || v[1] > 0xFFFFFFFFull ? UINT64_MAX : v[1];
    *token = v[2];
    return 1;
}

/* side.ack_many over the n parsed (slot, token) pairs, under the get lock (entered):
 * pairs[2i] becomes 1 for a lease acked, 0 for one not held. The number acked, -1 with
 * an exception, or -2 with nothing done (a deadline passed: reclaim_due first, queue.py). */
static Py_ssize_t ack_pairs(Fast *self, uint64_t *pairs, Py_ssize_t n, uint64_t now_us) {
    volatile uint64_t *w = self->w, *s = self->slots, *lw = w + W_GET_LOCK;
    if (self->get_lock && acquire(self->get_lock, lw) < 0) return -1;
    if (w[W_FLAGS] & FLAG_CLOSED) {
        PyErr_SetObject(QueueDeleted, self->name);
        if (self->get_lock) release(lw);
        return -1;
    }
    uint64_t due = w[SW_DUE];
    if (!s || (due && due <= now_us)) {
        if (self->get_lock) release(lw);
        return -2;
    }
    uint64_t high = w[SW_HIGH], head = w[SW_FREE], acked = 0, freed = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* side.ack_many */
        uint64_t idx = pairs[2 * i], b = idx * SLOT_W, v;
        pairs[2 * i] = 0; /* now: acked? */
        if (idx >= high) continue;
        v = s[b];
        if ((v & 0xFF) != ST_LEASED || v >> 32 != pairs[2 * i + 1] || s[b + S_DEADLINE] <= now_us)
            continue;
        store(s, (int)b, v & ~0xFFull); /* FREE: the commit point */
        freed += rec_bytes(s[b + S_LENKIND] & 0xFFFFFFFFull);
        s[b + S_AUX] = head;
        head = idx + 1;
        acked++;
        pairs[2 * i] = 1;
    }
    w[SW_FREE] = head;
    w[SW_LEASED] -= acked;
    w[SW_BYTES] -= freed;
    w[SW_ACKED] += acked;
    if (acked && !w[SW_BYTES]) side_rewind(self);
    if (self->get_lock) release(lw);
    return (Py_ssize_t)acked;
}

static PyObject *Fast_ack(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* ack(lease_ids, now_ns) -> the ids not held: queue.SharedQueue.ack in one call */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ack(lease_ids, now_ns)");
        return NULL;
    }
    uint64_t now_us;
    if (u64_arg(args[1], &now_us) < 0) return NULL;
    now_us /= 1000;
    PyObject *ids = PySequence_Fast(args[0], "lease_ids must be a sequence");
    if (ids == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ids);
    PyObject **items = PySequence_Fast_ITEMS(ids), *out = NULL;
    uint64_t *pairs = PyMem_Malloc((size_t)(n ? n : 1) * 2 * sizeof(uint64_t));
    if (pairs == NULL) {
        Py_DECREF(ids);
        return PyErr_NoMemory();
    }
    if (enter(self) < 0) goto done;
    uint64_t gen = self->w[W_SLOT_GEN] & 0xFFFFFFFFull;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!parse_lease(items[i], gen, &pairs[2 * i], &pairs[2 * i + 1])) goto aside;
    Py_ssize_t acked = ack_pairs(self, pairs, n, now_us);
    if (acked == -1) goto left;
    if (acked == -2) goto aside;
    out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < n; i++)
        if (!pairs[2 * i] && PyList_Append(out, items[i]) < 0) Py_CLEAR(out);
    goto left;
aside:
    Py_INCREF(Py_None);
    out = Py_None;
left:
    leave(self);
done:
    PyMem_Free(pairs);
    Py_DECREF(ids);
    return out;
}

static PyObject *Fast_ack_one(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* ack_one(lease_id, now_ns) -> True (acked), False (not held) or None (nothing done):
     * ack for one id, without a sequence to unpack or a list to build. It also steps
     * aside while dead letters wait to move, so that the caller's full ack moves them
     * (the common answer then needs no look at the queue after the call). */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ack_one(lease_id, now_ns)");
        return NULL;
    }
    uint64_t now_us, pair[2];
    if (u64_arg(args[1], &now_us) < 0 || enter(self) < 0) return NULL;
    now_us /= 1000;
    PyObject *out = Py_None;
    if (!self->w[SW_DEAD] &&
        parse_lease(args[0], self->w[W_SLOT_GEN] & 0xFFFFFFFFull, &pair[0], &pair[1])) {
        Py_ssize_t acked = ack_pairs(self, pair, 1, now_us);
        out = acked == -1 ? NULL : acked == -2 ? Py_None : acked ? Py_True : Py_False;
    }
    Py_XINCREF(out);
    leave(self);
    return out;
}

static PyObject *Fast_put_json(Fast *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef Fast_methods[] = {
    {"put_one", (PyCFunction)(void (*)(void))Fast_put_one, METH_FASTCALL,
     "put_one(kind, data, t0_ns) -> (queue_size, enqueued_at_us), or None (nothing done) "
     "when the side table holds messages"},
    {"put", (PyCFunction)(void (*)(void))Fast_put, METH_FASTCALL,
     "put(records, t0_ns) -> (queue_size, enqueued_at_us), all or none; None as put_one"},
    {"put_json", (PyCFunction)(void (*)(void))Fast_put_json, METH_FASTCALL,
     "put_json(array, count, t0_ns, max_message_bytes) -> (queue_size, enqueued_at_us): "
     "the elements of a parsed JSON array as JSON records, all or none; None (nothing done) "
     "when put_records' own checks must look"},
    {"take", (PyCFunction)(void (*)(void))Fast_take, METH_FASTCALL,
     "take(max_n, t0_ns, was_waiting, keep_waiting, tag, make=None) -> records, or None "
     "(nothing done) when the side table has due or ready work"},
    {"lease", (PyCFunction)(void (*)(void))Fast_lease, METH_FASTCALL,
     "lease(max_n, t0_ns, was_waiting, keep_waiting, tag, make, lease_us, now_ns, extra) -> "
     "records with (lease_id, 1, lease_expires_at[, extra]) after the tag, or None (nothing "
     "done) when the side table has due or ready work"},
    {"ack", (PyCFunction)(void (*)(void))Fast_ack, METH_FASTCALL,
     "ack(lease_ids, now_ns) -> the ids not held, or None (nothing done) when a deadline "
     "has passed or an id is not in lease_id's form"},
    {"ack_one", (PyCFunction)(void (*)(void))Fast_ack_one, METH_FASTCALL,
     "ack_one(lease_id, now_ns) -> True (acked), False (not held), or None (nothing done) as "
     "ack, and while dead letters wait to move"},
    {"release", (PyCFunction)Fast_release, METH_NOARGS, "let go of the mapping"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Fast_get_trim_due(Fast *self, void *closure) {
    /* True once after a take drained the queue of old records (then reset) */
    int due = self->trim_due;
    self->trim_due = 0;
    return PyBool_FromLong(due);
}

static PyObject *Fast_get_busy(Fast *self, void *closure) {
    return PyBool_FromLong(self->active > 0);
}

static PyObject *Fast_get_clock(Fast *self, void *closure) {
    return PyLong_FromLongLong(self->clock_us);
}
static int Fast_set_clock(Fast *self, PyObject *value, void *closure) {
    long long us = value ? PyLong_AsLongLong(value) : 0;
    if (us == -1 && PyErr_Occurred()) return -1;
    self->clock_us = us;
    return 0;
}

static PyGetSetDef Fast_getset[] = {
    {"clock_us", (getter)Fast_get_clock, (setter)Fast_set_clock,
     "tests: the µs puts are dated at (0, the default: the wall clock)", NULL},
    {"busy", (getter)Fast_get_busy, NULL, "a call of this process is inside", NULL},
    {"trim_due", (getter)Fast_get_trim_due, NULL, "a take drained the queue: trim it", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zoldyq.shm._speedups.Fast",
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Fast_traverse,
    .tp_clear = (inquiry)Fast_clear,
    .tp_doc = "Fast(buffer, name, put_lock=None, get_lock=None, bell=None, reserve=None): one queue's put and get paths in C. Without locks it "
              "works on a bare buffer (header + ring), for tests.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fast_init,
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_methods = Fast_methods,
    .tp_getset = Fast_getset,
};

/* -- item(i): a message's fields ---------------------------------------------- */

/* A read-only attribute that is item i of a tuple: broker.Message's fields, read for
 * every message of a batch (property(itemgetter(i)) costs two calls per read). */
typedef struct {
    PyObject_HEAD
    Py_ssize_t i;
} Item;

static PyObject *Item_get(Item *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return (PyObject *)self;
    }
    if (!PyTuple_Check(obj) || self->i >= PyTuple_GET_SIZE(obj)) {
        PyErr_Format(PyExc_AttributeError, "no item %zd", self->i);
        return NULL;
    }
    PyObject *v = PyTuple_GET_ITEM(obj, self->i);
    Py_INCREF(v);
    return v;
}

static int Item_set(Item *self, PyObject *obj, PyObject *value) {
    PyErr_SetString(PyExc_AttributeError, "read-only attribute");
    return -1;
}

static PyObject *Item_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "n:item", &i)) return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "item(i) needs i >= 0");
        return NULL;
    }
    Item *self = (Item *)type->tp_alloc(type, 0);
    if (self) self->i = i;
    return (PyObject *)self;
}

static PyTypeObject ItemType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zoldyq.shm._speedups.item",
    .tp_basicsize = sizeof(Item),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "item(i): a read-only attribute that is item i of the tuple it is read on",
    .tp_new = Item_new,
    .tp_descr_get = (descrgetfunc)Item_get,
    .tp_descr_set = (descrsetfunc)Item_set,
};

static PyObject *atomic_add(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    /* atomic_add(buffer, word_index, n): one locked add on an aligned shared i64 word, so
     * shared counters need no lock to count (counters.Counters.add) */
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "atomic_add(buffer, word_index, n)");
        return NULL;
    }
    Py_ssize_t idx = PyLong_AsSsize_t(args[1]);
    long long n = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) return NULL;
    if (idx < 0 || (idx + 1) * 8 > view.len || ((uintptr_t)view.buf & 7)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_IndexError, "word index out of the buffer");
        return NULL;
    }
    __atomic_fetch_add((int64_t *)view.buf + idx, (int64_t)n, __ATOMIC_SEQ_CST);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* -- a batch body's elements ---------------------------------------------------
 *
 * json_items(array, out, kind): append to the list ``out`` the exact bytes of each
 * element of the JSON array ``array`` (JSON whitespace around an element left out),
 * each as (kind, bytes) when kind is not None. ``array`` must already be valid JSON
 * (orjson parsed it): this is a linear scan of strings, escapes and nesting depth,
 * not a validator, so an element is the text between two commas at depth 1 and
 * parsing it again would prove nothing new. Input that is not an array, or that
 * ends inside one, raises ValueError (never a read past the end). The same scan
 * feeds Fast.put_json, which writes the elements into the ring with do_put; json_items
 * touches no segment. */

/* the bytes the scan stops at outside strings */
static const unsigned char JSON_STRUCT[256] = {
    ['"'] = 1, [','] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1,
};

static inline int json_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Hand each element of the JSON array s[0:len] to emit(ctx, start, length), in order.
 * 0 done; what emit returned when it was not 0 (>0: stop, -1: stop with its exception);
 * -2 for input that is not one whole array, whitespace around it (no exception set). */
typedef int (*emit_fn)(void *ctx, const unsigned char *p, Py_ssize_t n);

static int scan_items(const unsigned char *s, Py_ssize_t len, emit_fn emit, void *ctx) {
    const unsigned char *end = s + len, *p = s;
    int first = 1, rc;
    while (p < end && json_ws(*p)) p++;
    if (p == end || *p++ != '[') return -2;
    for (;;) {
        while (p < end && json_ws(*p)) p++;
        if (p == end) return -2;
        if (*p == ']' && first) { /* [] (or [ ]) */
            p++;
            break;
        }
        first = 0;
        const unsigned char *start = p;
        Py_ssize_t depth = 0;
        for (; p < end; p++) {
            while (p < end && !JSON_STRUCT[*p]) p++;
            if (p == end) break;
            unsigned char c = *p;
            if (c == '"') { /* to the closing quote: one not after an odd run of backslashes */
                for (;;) {
                    const unsigned char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
                    if (q == NULL) return -2;
                    const unsigned char *b = q;
                    while (b[-1] == '\\') b--; /* stops at the opening quote at worst */
                    p = q;
                    if (((q - b) & 1) == 0) break;
                }
            } else if (c == '[' || c == '{') {
                depth++;
            } else if (c == ']' || c == '}') {
                if (depth == 0) break;
                depth--;
            } else if (c == ',' && depth == 0) {
                break;
            }
        }
        if (p == end) return -2;
        const unsigned char *stop = p;
        while (stop > start && json_ws(stop[-1])) stop--;
        if (stop == start) return -2; /* [1,,2] or [1,]: orjson refuses those */
        if ((rc = emit(ctx, start, stop - start)) != 0) return rc;
        if (*p++ == ']') break;
    }
    while (p < end && json_ws(*p)) p++;
    return p == end ? 0 : -2; /* "[1] [2]": what follows the array is not ours to drop */
}

typedef struct {
    PyObject *out, *kind;
} ListSink;

static int items_append(void *ctx, const unsigned char *p, Py_ssize_t n) {
    ListSink *k = ctx;
    PyObject *item = PyBytes_FromStringAndSize((const char *)p, n);
    if (item == NULL) return -1;
    if (k->kind != Py_None) {
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(item);
            return -1;
        }
        Py_INCREF(k->kind);
        PyTuple_SET_ITEM(pair, 0, k->kind);
        PyTuple_SET_ITEM(pair, 1, item);
        item = pair;
    }
    int rc = PyList_Append(k->out, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *json_items(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "json_items(array, out: list, kind)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    ListSink k = {args[1], args[2]};
    int rc = scan_items(view.buf, view.len, items_append, &k);
    if (rc == -2) PyErr_SetString(PyExc_ValueError, "json_items: not a whole JSON array");
    PyBuffer_Release(&view);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* -- a batch body's payloads straight into the ring ---------------------------------- */

/* Fast.put_json: the elements of a parsed JSON array become Recs pointing into the array's
 * own buffer, so a batch of n payloads costs no Python object per payload (json_items
 * then put made 2n). The records written are the same bytes: the put is do_put's. */
typedef struct {
    Rec *recs, *stack;
    Py_ssize_t n, cap;
    uint64_t limit; /* the longest element put here: longer ones go to put_records' checks */
} RecSink;

static int rec_append(void *ctx, const unsigned char *p, Py_ssize_t n) {
    RecSink *k = ctx;
    if ((uint64_t)n > k->limit) return 1;
    if (k->n == k->cap) {
        Py_ssize_t cap = k->cap * 2;
        Rec *recs = k->recs == k->stack ? PyMem_Malloc((size_t)cap * sizeof(Rec))
                                        : PyMem_Realloc(k->recs, (size_t)cap * sizeof(Rec));
        if (recs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (k->recs == k->stack) memcpy(recs, k->stack, (size_t)k->n * sizeof(Rec));
        k->recs = recs;
        k->cap = cap;
    }
    k->recs[k->n++] = (Rec){p, (uint64_t)n, NULL, KIND_JSON};
    return 0;
}

static PyObject *Fast_put_json(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* put_json(array, count, t0_ns, max_message_bytes) -> (queue_size, enqueued_at_us):
     * the count elements of a JSON array orjson parsed, each a JSON record, all or none;
     * None (nothing done) for an empty array, an element longer than the limit or half
     * the ring, or a side table holding messages: put_records' checks then decide. */
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put_json(array, count, t0, max_message_bytes)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    uint64_t t0 = PyLong_AsUnsignedLongLong(args[2]);
    uint64_t limit = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    Rec stack[STACK_RECS];
    uint64_t half = self->size / 2 - 16; /* check_len's bound: a long record fits half */
    RecSink k = {stack, stack, 0, STACK_RECS, limit < half ? limit : half};
    if (k.limit > LEN_MASK) k.limit = LEN_MASK;
    PyObject *r = NULL;
    int rc = scan_items(view.buf, view.len, rec_append, &k);
    if (rc == -2) {
        PyErr_SetString(PyExc_ValueError, "put_json: not a whole JSON array");
    } else if (rc == 0 && k.n != count) { /* never for what orjson parsed: refuse, not guess */
        PyErr_Format(PyExc_ValueError, "put_json: %zd elements, expected %zd", k.n, count);
    } else if (rc > 0 || (rc == 0 && k.n == 0)) {
        Py_INCREF(Py_None);
        r = Py_None;
    } else if (rc == 0 && enter(self) == 0) {
        Batch b = {k.recs, k.n};
        r = do_put(self, &b, t0);
        leave(self);
    }
    if (k.recs != stack) PyMem_Free(k.recs);
    PyBuffer_Release(&view);
    return r;
}

static PyMethodDef module_methods[] = {
    {"atomic_add", (PyCFunction)(void (*)(void))atomic_add, METH_FASTCALL,
     "atomic_add(buffer, word_index, n): add n to an i64 word with one atomic instruction"},
    {"json_items", (PyCFunction)(void (*)(void))json_items, METH_FASTCALL,
     "json_items(array, out, kind): append each element of a parsed JSON array to out"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_speedups",
                                       "The engine's put/get hot path in C.", -1,
                                       module_methods};

static int add_int(PyObject *d, const char *k, long long v) {
    PyObject *o = PyLong_FromLongLong(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *errors = PyImport_ImportModule("zoldyq.errors");
    if (errors == NULL) return NULL;
    ClosedError = PyObject_GetAttrString(errors, "ClosedError");
    QueueDeleted = PyObject_GetAttrString(errors, "QueueDeleted");
    QueueFull = PyObject_GetAttrString(errors, "QueueFull");
    BrokenError = PyObject_GetAttrString(errors, "BrokenError");
    Py_DECREF(errors);
    if (!ClosedError || !QueueDeleted || !QueueFull || !BrokenError) return NULL;
    s_wait = PyUnicode_InternFromString("_wait");
    s_repair = PyUnicode_InternFromString("_repair");
    if (PyType_Ready(&FastType) < 0 || PyType_Ready(&ItemType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "Fast", (PyObject *)&FastType) < 0) return NULL;
    Py_INCREF(&ItemType);
    if (PyModule_AddObject(m, "item", (PyObject *)&ItemType) < 0) return NULL;
    PyObject *layout = PyDict_New(); /* checked against layout.py at import */
    if (layout == NULL) return NULL;
    if (add_int(layout, "HEADER_BYTES", HEADER_BYTES) || add_int(layout, "W_RING_SIZE", W_RING_SIZE) ||
        add_int(layout, "W_MAX_MESSAGES", W_MAX_MESSAGES) || add_int(layout, "W_FLAGS", W_FLAGS) ||
        add_int(layout, "W_TAIL", W_TAIL) || add_int(layout, "W_ENQ_TOTAL", W_ENQ_TOTAL) ||
        add_int(layout, "W_RESERVED", W_RESERVED) || add_int(layout, "W_FULL_TOTAL", W_FULL_TOTAL) ||
        add_int(layout, "W_BYTES_IN", W_BYTES_IN) || add_int(layout, "W_HEAD", W_HEAD) ||
        add_int(layout, "W_DEQ_TOTAL", W_DEQ_TOTAL) || add_int(layout, "W_WAITERS", W_WAITERS) ||
        add_int(layout, "W_TIMEOUTS", W_TIMEOUTS) || add_int(layout, "W_BYTES_OUT", W_BYTES_OUT) ||
        add_int(layout, "W_ENQ_HIST", W_ENQ_HIST) || add_int(layout, "W_DEQ_HIST", W_DEQ_HIST) ||
        add_int(layout, "FLAG_CLOSED", FLAG_CLOSED) || add_int(layout, "KIND_JSON", KIND_JSON) ||
        add_int(layout, "KIND_BYTES", KIND_BYTES) || add_int(layout, "TAG_WRAP", TAG_WRAP) ||
        add_int(layout, "HDR", HDR) || add_int(layout, "HIST_BUCKETS", NBOUNDS + 1) ||
        add_int(layout, "SW_DUE", SW_DUE) || add_int(layout, "SW_READY", SW_READY) ||
        add_int(layout, "SW_BYTES", SW_BYTES) || add_int(layout, "TRIM_KEEP", TRIM_KEEP) ||
        add_int(layout, "TRIM_AGE_US", TRIM_AGE_US) ||
        add_int(layout, "W_PUT_LOCK", W_PUT_LOCK) || add_int(layout, "W_GET_LOCK", W_GET_LOCK) ||
        add_int(layout, "LOCK_WORDS", LOCK_WORDS) || add_int(layout, "LOCK_DIRTY", LOCK_DIRTY) ||
        add_int(layout, "W_MAX_MESSAGE_BYTES", W_MAX_MESSAGE_BYTES) ||
        add_int(layout, "W_SLOT_GEN", W_SLOT_GEN) || add_int(layout, "SW_NSLOTS", SW_NSLOTS) ||
        add_int(layout, "SW_DSIZE", SW_DSIZE) || add_int(layout, "SW_HIGH", SW_HIGH) ||
        add_int(layout, "SW_FREE", SW_FREE) || add_int(layout, "SW_TOKEN", SW_TOKEN) ||
        add_int(layout, "SW_DHEAD", SW_DHEAD) || add_int(layout, "SW_DTAIL", SW_DTAIL) ||
        add_int(layout, "SW_SRES", SW_SRES) || add_int(layout, "SW_DRES", SW_DRES) ||
        add_int(layout, "SW_LEASED", SW_LEASED) || add_int(layout, "SW_DELAYED", SW_DELAYED) ||
        add_int(layout, "SW_DEAD", SW_DEAD) || add_int(layout, "SW_ACKED", SW_ACKED) ||
        add_int(layout, "SLOT_W", SLOT_W) || add_int(layout, "S_DEADLINE", S_DEADLINE) ||
        add_int(layout, "S_POS", S_POS) || add_int(layout, "S_KEY", S_KEY) ||
        add_int(layout, "S_SEQ", S_SEQ) || add_int(layout, "S_ENQ", S_ENQ) ||
        add_int(layout, "S_ORIGIN", S_ORIGIN) || add_int(layout, "S_LENKIND", S_LENKIND) ||
        add_int(layout, "S_AUX", S_AUX) || add_int(layout, "FREE", ST_FREE) ||
        add_int(layout, "PENDING", ST_PENDING) || add_int(layout, "LEASED", ST_LEASED) ||
        add_int(layout, "DHDR", DHDR) || add_int(layout, "SKIP", DSKIP) ||
        add_int(layout, "W_TABLE", W_TABLE) || add_int(layout, "LEN_BITS", LEN_BITS) ||
        add_int(layout, "TIME_HI_SHIFT", TIME_HI_SHIFT) || add_int(layout, "TAG_LONG", TAG_LONG) ||
        add_int(layout, "TAG_MEDIUM", TAG_MEDIUM) || add_int(layout, "TAG_MASK", TAG_MASK) ||
        add_int(layout, "LEN_SHIFT", LEN_SHIFT) || add_int(layout, "KIND_SHIFT", KIND_SHIFT) ||
        add_int(layout, "COMPACT_LEN", COMPACT_LEN) ||
        add_int(layout, "COMPACT_TIME_SHIFT", COMPACT_TIME_SHIFT) ||
        add_int(layout, "COMPACT_RANGE", COMPACT_RANGE) ||
        add_int(layout, "MEDIUM_RANGE", MEDIUM_RANGE) || add_int(layout, "BLOCK_SHIFT", BLOCK_SHIFT) ||
        add_int(layout, "LAYOUT_VERSION", LAYOUT_VERSION) ||
        PyModule_AddObject(m, "LAYOUT", layout) < 0)
        return NULL;
    PyObject *bounds = PyTuple_New(NBOUNDS);
    if (bounds == NULL) return NULL;
    for (int i = 0; i < NBOUNDS; i++)
        PyTuple_SET_ITEM(bounds, i, PyLong_FromUnsignedLongLong(HIST_NS[i]));
    if (PyModule_AddObject(m, "HIST_BOUNDS_NS", bounds) < 0) return NULL;
    return m;
}
