/* The engine's hot path in C: put, put_many, get and get_many over the SAME
 * segment layout as ring.py/queue.py (see layout.py), with the same lock
 * protocol as lock.py (the robust mutex in the header, its dirty word, the
 * repair after EOWNERDEAD), on the same mutexes. Optional: without a
 * compiler, or with ZOLDYQ_PURE_PYTHON=1, the pure-Python path runs instead,
 * and both interoperate on one namespace because they read and write the
 * same words the same way and take the same mutexes.
 *
 * What one C call now covers, for a put: take the locks, write the records,
 * store the tail (the commit point, one aligned 8-byte release store), bump
 * the totals and the histogram, release the locks, ring the doorbell. For a
 * get: take the locks, parse the records between head and tail, copy them
 * out, store the head (its commit point), bump totals, histogram and waiter
 * count, release. No Python bytecode runs between the lock and the unlock
 * except two callbacks that already run under the lock in the pure path
 * (lock._repair after EOWNERDEAD or with the dirty word set, and the
 * queue's _reserve when the ring grows past its fallocate'd bytes). A kill -9
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
#define W_HEAD 16
#define W_DEQ_TOTAL 17
#define W_WAITERS 18
#define W_TIMEOUTS 19
#define W_BYTES_OUT 20
#define W_ENQ_HIST 24
#define W_DEQ_HIST 48
#define W_PUT_LOCK 496 /* a lock's cache line: the robust mutex, then its dirty word */
#define W_GET_LOCK 504
#define LOCK_WORDS 8
#define LOCK_DIRTY 7
#define SPIN_TRIES 16 /* lock.SPIN_TRIES */
_Static_assert(sizeof(pthread_mutex_t) <= LOCK_DIRTY * 8, "a mutex fits before its dirty word");
#define SW_DUE 77   /* side table (side.py): work due, under the get lock */
#define SW_READY 82 /* side table: returned messages that go before the ring */
#define SW_BYTES 86 /* side table: bytes held, which the caps must count */
#define FLAG_CLOSED 1
#define KIND_JSON 1
#define KIND_BYTES 2
#define KIND_WRAP 0xFFFFFFFFu
#define HDR 16
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
    uint64_t size, max_messages;
    PyObject *name, *put_lock, *get_lock, *reserve, *owner; /* owner: the mmap */
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
    static char *kwlist[] = {"buffer", "name", "put_lock", "get_lock", "bell", "reserve", NULL};
    PyObject *buf, *name, *put_lock = Py_None, *get_lock = Py_None, *reserve = Py_None;
    const char *bell = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OU|OOzO", kwlist, &buf, &name, &put_lock,
                                     &get_lock, &bell, &reserve))
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
    Py_VISIT(self->owner);
    return 0;
}

static int Fast_clear(Fast *self) { /* the reserve callback is a bound method of our owner */
    Py_CLEAR(self->reserve);
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

typedef struct {
    Py_buffer *bufs;
    uint32_t *kinds;
    Py_ssize_t n;
} Batch;

/* Plan, check, reserve and write the batch past the tail; set *new_tail. 0, or -1 with an
 * exception (QueueFull, or what reserve raised) and nothing visible. Put lock held. */
static int write_batch(Fast *self, Batch *b, int64_t ts, uint64_t *new_tail, uint64_t *nbytes) {
    volatile uint64_t *w = self->w;
    uint64_t size = self->size, tail = load(w, W_TAIL), head = load(w, W_HEAD);
    uint64_t seq = tail >> 32, off = tail & SEQ_MASK;
    uint64_t count = (seq - (head >> 32)) & SEQ_MASK;
    uint64_t n = (uint64_t)b->n, need = 0, high = 0, pos = off, total = 0;
    if (count + n > self->max_messages) {
        w[W_FULL_TOTAL] += 1;
        PyObject *a = Py_BuildValue("(OKKKi)", self->name, self->max_messages, count, size, 0);
        PyErr_SetObject(QueueFull, a);
        Py_XDECREF(a);
        return -1;
    }
    for (Py_ssize_t i = 0; i < b->n; i++) {
        uint64_t len = (uint64_t)b->bufs[i].len, rec = (HDR + len + 7) & ~7ull;
        uint64_t room = size - pos, used, top;
        if (rec <= room) {
            used = rec;
            top = pos + rec;
        } else {
            used = room + rec;
            top = room >= HDR ? (rec > pos + HDR ? rec : pos + HDR) : rec;
        }
        need += used;
        if (top > high) high = top;
        pos = (pos + used) % size;
        total += len;
    }
    uint64_t used_now = 0;
    if (count) {
        uint64_t d = (off + size - (head & SEQ_MASK)) % size;
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
    unsigned char *data = self->data;
    pos = off;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        uint32_t len = (uint32_t)b->bufs[i].len;
        uint64_t rec = (HDR + (uint64_t)len + 7) & ~7ull;
        if (rec > size - pos) {
            if (size - pos >= HDR) {
                uint32_t wrap[2] = {0, KIND_WRAP};
                int64_t zero = 0;
                memcpy(data + pos, wrap, 8);
                memcpy(data + pos + 8, &zero, 8);
            }
            pos = 0;
        }
        uint32_t hdr[2] = {len, b->kinds[i]};
        memcpy(data + pos, hdr, 8);
        memcpy(data + pos + 8, &ts, 8);
        memcpy(data + pos + HDR, b->bufs[i].buf, len);
        if (rec > HDR + len) memset(data + pos + HDR + len, 0, rec - HDR - len);
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
    now = wall_us();
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
    if ((uint64_t)len > self->size / 2) { /* the caller checks max_message_bytes first */
        PyErr_SetString(PyExc_ValueError, "record larger than half the ring");
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
        Batch b = {&buf, &kind, 1};
        r = do_put(self, &b, t0);
        leave(self);
    }
    PyBuffer_Release(&buf);
    return r;
}

static PyObject *Fast_put(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    /* put(records, t0_ns): records a sequence of (kind, data); all or none */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "put(records, t0)");
        return NULL;
    }
    uint64_t t0 = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    PyObject *seq = PySequence_Fast(args[0], "records must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    PyObject *r = NULL;
    Batch b = {PyMem_Calloc(n ? n : 1, sizeof(Py_buffer)),
               PyMem_Calloc(n ? n : 1, sizeof(uint32_t)), n};
    if (!b.bufs || !b.kinds) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "a record is a (kind, data) tuple");
            goto done;
        }
        b.kinds[got] = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 0));
        if (PyErr_Occurred()) goto done;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 1), &b.bufs[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (check_len(self, b.bufs[got].len) < 0) {
            got++;
            goto done;
        }
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "no records");
        goto done;
    }
    if (enter(self) == 0) {
        r = do_put(self, &b, t0);
        leave(self);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&b.bufs[i]);
    PyMem_Free(b.bufs);
    PyMem_Free(b.kinds);
    Py_DECREF(seq);
    return r;
}

/* -- get ---------------------------------------------------------------------- */

static PyObject *corrupt(Fast *self, const char *what, uint64_t a, uint64_t b) {
    PyErr_Format(BrokenError, "queue '%U': %s (%llu, %llu)", self->name, what,
                 (unsigned long long)a, (unsigned long long)b);
    return NULL;
}

/* Parse up to max_n records from the head into a new list; *new_head, *nbytes. Lock held. */
static PyObject *read_records(Fast *self, Py_ssize_t max_n, PyObject *tag, PyTypeObject *make,
                              uint64_t *new_head, uint64_t *nbytes) {
    volatile uint64_t *w = self->w;
    uint64_t head = load(w, W_HEAD), seq = head >> 32, off = head & SEQ_MASK;
    uint64_t size = self->size, available = ((load(w, W_TAIL) >> 32) - seq) & SEQ_MASK;
    if (available > self->max_messages || off >= size || (off & 7))
        return corrupt(self, "bad head: offset, records", off, available);
    Py_ssize_t n = (Py_ssize_t)(available < (uint64_t)max_n ? available : (uint64_t)max_n);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    const unsigned char *data = self->data;
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t hdr[2];
        int64_t ts;
        if (size - off < HDR) off = 0;
        memcpy(hdr, data + off, 8);
        if (hdr[1] == KIND_WRAP) {
            off = 0;
            memcpy(hdr, data, 8);
        }
        memcpy(&ts, data + off + 8, 8);
        uint64_t start = off + HDR, end = start + hdr[0];
        if ((hdr[1] != KIND_JSON && hdr[1] != KIND_BYTES) || end > size) {
            Py_DECREF(out);
            return corrupt(self, "bad record: offset, kind", off, hdr[1]);
        }
        PyObject *t = make ? make->tp_alloc(make, 4) : PyTuple_New(4);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)data + start, hdr[0]);
        PyObject *stamp = PyLong_FromLongLong(ts);
        if (!t || !payload || !stamp) {
            Py_XDECREF(t);
            Py_XDECREF(payload);
            Py_XDECREF(stamp);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(t, 0, PyLong_FromLong(hdr[1])); /* 1 or 2: cached small ints */
        PyTuple_SET_ITEM(t, 1, payload);
        PyTuple_SET_ITEM(t, 2, stamp);
        Py_INCREF(tag);
        PyTuple_SET_ITEM(t, 3, tag);
        PyList_SET_ITEM(out, i, t);
        total += hdr[0];
        off = (end + 7) & ~7ull;
        if (off == size) off = 0;
    }
    *new_head = (((seq + (uint64_t)n) & SEQ_MASK) << 32) | off;
    *nbytes = total;
    return out;
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
    if (PyErr_Occurred()) return NULL;
    if (nargs == 6 && args[5] != Py_None) {
        if (!PyType_Check(args[5]) || !PyType_IsSubtype((PyTypeObject *)args[5], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "make must be a tuple subclass");
            return NULL;
        }
        make = (PyTypeObject *)args[5];
    }
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
        /* drained, and by an old record: not a stream; queue.trim can give memory back */
        if ((new_head >> 32) == (load(w, W_TAIL) >> 32) && w[W_RESERVED] > TRIM_KEEP) {
            PyObject *last = PyList_GET_ITEM(out, n - 1);
            long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(last, 2));
            if (ts + TRIM_AGE_US < wall_us()) self->trim_due = 1;
        }
    }
    if (was_waiting || keep_waiting) {
        int wait = keep_waiting && !n;
        if (wait != was_waiting) {
            if (wait)
                w[W_WAITERS] += 1;
            else if (w[W_WAITERS])
                w[W_WAITERS] -= 1;
        }
        if (was_waiting && !keep_waiting && !n) w[W_TIMEOUTS] += 1;
    }
unlock:
    if (self->get_lock) release(lw);
done:
    leave(self);
    return out;
}

static PyMethodDef Fast_methods[] = {
    {"put_one", (PyCFunction)(void (*)(void))Fast_put_one, METH_FASTCALL,
     "put_one(kind, data, t0_ns) -> (queue_size, enqueued_at_us), or None (nothing done) "
     "when the side table holds messages"},
    {"put", (PyCFunction)(void (*)(void))Fast_put, METH_FASTCALL,
     "put(records, t0_ns) -> (queue_size, enqueued_at_us), all or none; None as put_one"},
    {"take", (PyCFunction)(void (*)(void))Fast_take, METH_FASTCALL,
     "take(max_n, t0_ns, was_waiting, keep_waiting, tag, make=None) -> records, or None "
     "(nothing done) when the side table has due or ready work"},
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

static PyGetSetDef Fast_getset[] = {
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

static PyMethodDef module_methods[] = {
    {"atomic_add", (PyCFunction)(void (*)(void))atomic_add, METH_FASTCALL,
     "atomic_add(buffer, word_index, n): add n to an i64 word with one atomic instruction"},
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
    if (PyType_Ready(&FastType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "Fast", (PyObject *)&FastType) < 0) return NULL;
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
        add_int(layout, "KIND_BYTES", KIND_BYTES) || add_int(layout, "KIND_WRAP", KIND_WRAP) ||
        add_int(layout, "HDR", HDR) || add_int(layout, "HIST_BUCKETS", NBOUNDS + 1) ||
        add_int(layout, "SW_DUE", SW_DUE) || add_int(layout, "SW_READY", SW_READY) ||
        add_int(layout, "SW_BYTES", SW_BYTES) || add_int(layout, "W_PUT_LOCK", W_PUT_LOCK) ||
        add_int(layout, "W_GET_LOCK", W_GET_LOCK) || add_int(layout, "LOCK_WORDS", LOCK_WORDS) ||
        add_int(layout, "LOCK_DIRTY", LOCK_DIRTY) || add_int(layout, "TRIM_KEEP", TRIM_KEEP) || add_int(layout, "TRIM_AGE_US", TRIM_AGE_US) ||
        PyModule_AddObject(m, "LAYOUT", layout) < 0)
        return NULL;
    PyObject *bounds = PyTuple_New(NBOUNDS);
    if (bounds == NULL) return NULL;
    for (int i = 0; i < NBOUNDS; i++)
        PyTuple_SET_ITEM(bounds, i, PyLong_FromUnsignedLongLong(HIST_NS[i]));
    if (PyModule_AddObject(m, "HIST_BOUNDS_NS", bounds) < 0) return NULL;
    return m;
}
