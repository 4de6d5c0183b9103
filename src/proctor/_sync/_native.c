/* proctor._sync._native: the C fast paths of Lock, RLock and Semaphore, and
 * MemSemaphore, a semaphore in anonymous shared memory (Linux; see below).
 *
 * Optional: built when a C compiler is present (hatch_build.py), else proctor
 * runs the same protocol in pure Python (_sync/_lock.py, _sync/_semaphore.py).
 * Nothing here waits but MemSemaphore.acquire, which sleeps at most the
 * timeout it is given, as _multiprocessing.SemLock.acquire does (callers wait
 * through _core._wait.wait_for_post, in slices), a Condition's wait_slice, and
 * a Lock's blocking acquire, which sleeps the first slice of its wait here. Every path of the locks that
 * could sleep, and everything unusual (contention after a short spin, a closed
 * object, odd arguments, an error), calls the pure-Python method of the same
 * name, which holds the whole logic
 * -- timeouts, liveness-aware waits, dead-holder recovery, error messages::
 *
 *     acquire(block, timeout)                      release()
 *     ───────────────────────                      ─────────
 *     sem_trywait ── ok ─▶ owner word := ident     (RLock: not the holder? ─▶ Python)
 *        │ busy            tid := this thread      semaphore already up? ─▶ Python
 *        ▼                 return True               (raises the error)
 *     blocking? spin: trywaits, backing off       owner word := next token (< 0)
 *        │ still busy                              sem_post
 *        ▼                                         call the wake-ups deferred to
 *     Lock, no timeout, another process holds it:    it (_deferred: Condition.notify)
 *       sleep one slice in sem_timedwait (sleep_take)
 *        │ still busy
 *        ▼
 *     the pure-Python acquire (waits in slices,
 *       recovers a dead holder)
 *
 * The owner word is the same double in anonymous shared memory that the pure
 * path writes (see _lock.py): the process identity right after the semaphore
 * is taken, a fresh negative token just before it is released. Only the holder
 * writes it, so plain aligned stores suffice; sem_trywait and sem_post order
 * them (both are atomic read-modify-writes).
 *
 * An object keeps what its pointers point into alive: a reference to the
 * _multiprocessing.SemLock (whose sem_t* it uses; sem_close happens only when
 * that object goes) and a buffer export on the arena holding the owner word (an
 * mmap cannot be unmapped while exported). _detach() drops both; close() calls
 * it before closing the semaphore and the words.
 *
 * Every call holds the GIL: the object needs no lock of its own.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* This file's digest (its CRC-32 and length, 16 hex digits), passed by hatch_build.py:
   the loader (_core/_accel.py) refuses a module built from older source. */
#ifndef PROCTOR_SOURCE_DIGEST
#define PROCTOR_SOURCE_DIGEST ""
#endif
#include <structmember.h>  /* T_OBJECT (Py_T_OBJECT only from 3.12) */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/time.h>

/* A blocking acquire that finds the semaphore taken tries again, with pauses
 * between tries, before it sleeps: for up to SPIN_PAUSES pauses (~11 us on the
 * development VM, whose `pause` takes ~11 ns; Skylake and later server parts
 * take ~4x as long per pause), longer than a short critical section held on
 * another core and shorter than a futex sleep and wake-up (10-20 us there).
 * The pauses between two tries double up to SPIN_BACKOFF_MAX: a try reads the
 * semaphore's word (a failed one only reads it), which pulls its cache line
 * to the spinning core, so the holder's next sem_post and sem_trywait each miss
 * across cores. Trying after every pause (100 tries in ~3 us, until the 21st
 * session) made two processes contending from two CPUs hand the line over at
 * every increment of the benchmark's counter: 2.5M increments/s against 3.7M
 * with the backoff (pinned, bench_sync; the stdlib's 1.5M). A release is
 * noticed at most SPIN_BACKOFF_MAX pauses (~0.7 us here) late. */
#ifndef SPIN_PAUSES
#define SPIN_PAUSES 1024
#endif
#ifndef SPIN_BACKOFF_MAX
#define SPIN_BACKOFF_MAX 64
#endif

/* For the rare branches of the fast paths: kept out of line, so that the usual
 * call saves no registers it does not use (callgrind: acquire + release). */
#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* One wait between two tries of spin_take, which counts its budget in these.
 * On 64-bit ARM an `isb` (tens of nanoseconds, as Rust's spin-loop hint uses
 * there), not `yield`, which retires in a cycle or so on most cores and would
 * shrink the spin to about a microsecond (not built or measured on ARM here). */
#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("isb" ::: "memory")
#elif defined(__arm__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() ((void)0)
#endif

/* This process's identity and its next release token (_lock.py sets both at
 * import and again in a forked child). */
static double g_ident = 0.0;
static double g_next_token = -1.0;

/* "handle", interned once: looked up on a SemLock by every Event.set() and
 * condition slice (PyObject_GetAttrString would build the string each time,
 * some 700 instructions of event_set's 1,900). */
static PyObject *g_str_handle = NULL;

typedef struct {
    PyObject_HEAD
    sem_t *sem;              /* NULL: not attached, or detached (closed) */
    PyObject *semlock;       /* the SemLock that owns sem */
    Py_buffer view;          /* export on the arena that holds the owner word */
    int has_view;
    volatile double *owner;  /* the owner word (Lock, RLock) */
    PyObject *py_acquire;    /* the pure-Python methods, called with self first */
    PyObject *py_release;
    unsigned long tid;       /* thread that took it through this object; 0: none */
    long depth;              /* RLock: recursion depth */
    int maxvalue;            /* release() refuses to raise the count past it */
    PyObject *deferred;      /* Lock, RLock: NULL/None, or a list of callables that the
                                release ending this holding calls after its post (the
                                wake-ups of Condition.notify, see _condition.py) */
    /* Lock, RLock: a condition waiter's ticket byte that wait_slice kept held when it
     * retook this lock, for the release ending this holding to let go (run_kept):
     * kept_words is NULL, or the condition's words (KEPT holds kept_ticket + 1). */
    PyObject *kept_words;
    PyObject *kept_mine;     /* the queue's set of this process's slots, and ours */
    PyObject *kept_slot;
    long long kept_ticket;
    long long kept_byte;     /* the byte, on kept_fd's lock space (fcntl kept_cmd) */
    int kept_fd, kept_cmd;
    double kept_ident;       /* g_ident when kept: a forked child's release skips it */
    /* Lock, RLock: where acquire(False) asks the kernel whether a recorded holder
     * lives (held_by_live_holder): the descriptor of this process's own
     * description of the owner word's arena and the base of its identity bytes
     * (_sharedwords.IDENT_BASE), set by _arm_probe() in the process whose
     * identity is probe_ident (a forked child's are stale: Python then asks). */
    int probe_set, probe_fd;
    long long probe_base;
    double probe_ident;
} Core;

/* ── helpers ─────────────────────────────────────────────────────────────── */

static PyObject *
call_python(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    PyObject *small[8];
    PyObject **stack = small;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t total = 1 + nargs + nkw;
    PyObject *result;

    if (fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "proctor lock accelerator used before _attach()");
        return NULL;
    }
    if (total > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc(total * sizeof(PyObject *));
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[1 + i] = args[i];
    result = PyObject_Vectorcall(fn, stack, nargs + 1, kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return result;
}

/* Pick acquire(block=True, timeout=None)'s two arguments out of a vectorcall,
 * given by position or by name: 0 when they are well formed (*block and
 * *timeout stay NULL when not given); -1 for more than two positional
 * arguments; -2 for a keyword that is neither name or repeats one (*bad is
 * that name, borrowed). Nothing is raised: the lock fast paths hand such a call
 * to the Python method, MemSemaphore.acquire raises TypeError itself. */
static int
pick_acquire_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  PyObject **block, PyObject **timeout, PyObject **bad)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    *block = *timeout = NULL;
    if (nargs > 2)
        return -1;
    if (nargs >= 1)
        *block = args[0];
    if (nargs == 2)
        *timeout = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot = NULL;
        if (PyUnicode_CompareWithASCIIString(name, "block") == 0)
            slot = block;
        else if (PyUnicode_CompareWithASCIIString(name, "timeout") == 0)
            slot = timeout;
        if (slot == NULL || *slot != NULL) {
            *bad = name;
            return -2;
        }
        *slot = args[nargs + i];
    }
    return 0;
}

/* Raise the TypeError of an acquire() call that pick_acquire_args() refused
 * (``status`` is what it returned), in the stdlib's words: the call names
 * acquire(), not the Python method that would otherwise be handed it. */
static void
bad_acquire_call(int status, Py_ssize_t nargs, PyObject *bad)
{
    if (status == -1)
        PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments (%zd given)", nargs);
    else if (PyUnicode_CompareWithASCIIString(bad, "block") == 0
             || PyUnicode_CompareWithASCIIString(bad, "timeout") == 0)
        PyErr_Format(PyExc_TypeError, "acquire() got multiple values for argument %R", bad);
    else
        PyErr_Format(PyExc_TypeError, "acquire() got an unexpected keyword argument %R", bad);
}

/* The arguments of acquire(block=True, timeout=None), judged before the lock is
 * tried, so that a free lock and a taken one accept and refuse the same calls:
 * 1 if the fast path may go on (*blocking set: whether the call may wait, so 0
 * for a timeout of zero or less too); 0 if the Python method must take
 * the call -- a timeout other than None, an int or a float that is not NaN,
 * which Python checks (and refuses, or converts) before it tries the lock; -1
 * with an exception set: a malformed call, or a ``block`` whose truth raised. */
static int
simple_acquire_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int *blocking)
{
    PyObject *block, *timeout, *bad = NULL;
    int status;

    if (nargs == 0 && kwnames == NULL) {  /* acquire(): the usual call */
        *blocking = 1;
        return 1;
    }
    status = pick_acquire_args(args, nargs, kwnames, &block, &timeout, &bad);
    if (status < 0) {
        bad_acquire_call(status, nargs, bad);
        return -1;
    }
    if (block == NULL || block == Py_True) {
        *blocking = 1;
    }
    else if (block == Py_False) {
        *blocking = 0;
    }
    else {
        int truth = PyObject_IsTrue(block);
        if (truth < 0)
            return -1;
        *blocking = truth;
    }
    if (timeout != NULL && timeout != Py_None && !PyLong_CheckExact(timeout)
        && !(PyFloat_CheckExact(timeout) && !Py_IS_NAN(PyFloat_AS_DOUBLE(timeout))))
        return 0;
    /* A timeout of zero or less waits no more than acquire(False) does: no spin
     * (for a Lock, ~11 us of it before the Python method said no). */
    if (*blocking && timeout != NULL && timeout != Py_None) {
        if (PyFloat_CheckExact(timeout)) {
            if (PyFloat_AS_DOUBLE(timeout) <= 0.0)
                *blocking = 0;
        }
        else {
            int overflow;  /* (past a C long: -1 below, 1 above; nothing raised) */
            long value = PyLong_AsLongAndOverflow(timeout, &overflow);
            if (overflow < 0 || (overflow == 0 && value <= 0))
                *blocking = 0;
        }
    }
    return 1;
}

/* The CLOCK_REALTIME instant ``timeout`` seconds (> 0) from now: what
 * sem_timedwait takes. */
static struct timespec
deadline_after(double timeout)
{
    struct timeval now;
    struct timespec until;
    long long sec = (long long)timeout;
    long nsec = (long)((timeout - (double)sec) * 1e9);

    gettimeofday(&now, NULL);
    nsec += now.tv_usec * 1000L;
    until.tv_sec = now.tv_sec + (time_t)sec + nsec / 1000000000L;
    until.tv_nsec = nsec % 1000000000L;
    return until;
}

static inline int
try_take(sem_t *sem)
{
    int res;
    do {
        res = sem_trywait(sem);
    } while (res < 0 && errno == EINTR);
    return res == 0;
}

static int
spin_take(sem_t *sem)
{
    int pauses = 1, spent = 0;
    while (spent < SPIN_PAUSES) {
        for (int i = 0; i < pauses; i++)
            CPU_RELAX();
        spent += pauses;
        if (try_take(sem))
            return 1;
        if (pauses < SPIN_BACKOFF_MAX)
            pauses *= 2;
    }
    return 0;
}

/* After a blocking acquire's spin failed on a lock (or semaphore) another
 * process holds: one sleep in C, the GIL let go, of the Python wait's first
 * slice (_core/_wait.py, CHECK_INTERVAL), as _multiprocessing.SemLock.acquire
 * sleeps in sem_wait. Two processes contending for a lock hand it over in
 * microseconds: the Python wait (the call into it, its slice arithmetic, the
 * retry) cost more than the wait itself. A lock held longer, or whose holder
 * died, is the Python wait's from then on (its own slices, the dead-holder
 * check after each): a dead holder is noticed one slice later than before,
 * within 0.2 s. 1: taken (the caller records the owner, for a Lock or RLock);
 * 0: not within the slice, a signal came, or the lock was closed meanwhile
 * (then given back). Not on macOS: no sem_timedwait. */
#ifndef __APPLE__
#define FIRST_SLICE 0.1

static int
sleep_take(Core *self)
{
    sem_t *sem = self->sem;
    PyObject *semlock = self->semlock;
    struct timespec until = deadline_after(FIRST_SLICE);
    int res;

    Py_INCREF(semlock);  /* keeps sem open while another thread may close the lock */
    Py_BEGIN_ALLOW_THREADS
    res = sem_timedwait(sem, &until);
    Py_END_ALLOW_THREADS
    /* (Closing detaches: sem becomes NULL, and a lock's owner word with it.) */
    if (res == 0 && self->sem != sem) {
        sem_post(sem);  /* closed meanwhile: the Python method says so */
        res = -1;
    }
    Py_DECREF(semlock);
    return res == 0;
}
#else
#define sleep_take(self) 0
#endif

/* Whether release() may post without raising the count past maxvalue (the
 * same advisory check as _multiprocessing.SemLock.release). 1: post; 0: the
 * count is at its bound (or cannot be read): the Python method decides. */
static int
may_post(Core *self)
{
#ifdef __APPLE__
    /* No sem_getvalue: as SemLock does there, check only a lock's bound. */
    if (self->maxvalue == 1) {
        if (try_take(self->sem)) {
            sem_post(self->sem);
            return 0;
        }
    }
    return 1;
#else
    int value;
    if (sem_getvalue(self->sem, &value) < 0)
        return 0;
    return value < self->maxvalue;
#endif
}

static PyObject *
post(Core *self)
{
    if (sem_post(self->sem) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* Unlock ``byte`` of ``fd``'s lock space, as _WaitQueue.let_go does. */
static void
unlock_byte(int fd, int cmd, long long byte)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)byte;
    fl.l_len = 1;
    (void)fcntl(fd, cmd, &fl);  /* (fails only where nothing was held) */
}

/* The condition's header holds its KEPT word at this index (see below). */
#define COND_KEPT_INDEX 8

/* After a release's post: let go of the ticket byte a woken condition waiter
 * kept through this holding (wait_slice), as _WaitQueue.let_go does, then
 * free KEPT. Skipped by a forked child (its copy of the holding: the byte is
 * the parent's, and so is the descriptor's lock space) and after the
 * condition's close() in this process (its words and lock descriptor may be
 * gone; the byte then goes with the descriptor, and KEPT is freed by the next
 * waiter that finds its byte free, _WaitQueue._check_kept). */
static void
run_kept(Core *self)
{
    PyObject *words = self->kept_words, *mine = self->kept_mine, *slot = self->kept_slot;
    Py_buffer view;

    if (words == NULL)
        return;
    self->kept_words = self->kept_mine = self->kept_slot = NULL;
    if (self->kept_ident == g_ident) {
        if (PyObject_GetBuffer(words, &view, PyBUF_WRITABLE) == 0) {
            if (view.len >= (COND_KEPT_INDEX + 1) * (Py_ssize_t)sizeof(long long)) {
                long long expected = self->kept_ticket + 1;
                /* (set first: a probe of this process must never touch a byte we hold) */
                if (PySet_Discard(mine, slot) < 0)
                    PyErr_Clear();
                unlock_byte(self->kept_fd, self->kept_cmd, self->kept_byte);
                __atomic_compare_exchange_n((long long *)view.buf + COND_KEPT_INDEX,
                                            &expected, 0, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST);
            }
            PyBuffer_Release(&view);
        }
        else {
            PyErr_Clear();  /* (released: the condition was closed here) */
        }
    }
    Py_DECREF(words);
    Py_DECREF(mine);
    Py_DECREF(slot);
}

/* What follows a lock's post when a Condition left work to it (see
 * post_then_deferred): the deferred wake-ups, the yield, the kept byte. */
static NOINLINE PyObject *
after_post(Core *self)
{
    PyObject *todo;
    Py_ssize_t i;

    todo = self->deferred;
    if (todo == NULL || todo == Py_None) {
        run_kept(self);
        Py_RETURN_NONE;
    }
    self->deferred = NULL;
    if (!PyList_Check(todo)) {
        Py_DECREF(todo);
        PyErr_SetString(PyExc_TypeError, "a lock's _deferred must be a list or None");
        return NULL;
    }
    for (i = 0; i < PyList_GET_SIZE(todo); i++) {
        PyObject *fn = PyList_GET_ITEM(todo, i);
        PyObject *res;
        Py_INCREF(fn);
        res = PyObject_CallNoArgs(fn);
        Py_DECREF(fn);
        if (res == NULL) {
            Py_DECREF(todo);
            return NULL;
        }
        Py_DECREF(res);
    }
    Py_DECREF(todo);
    Py_BEGIN_ALLOW_THREADS
    sched_yield();
    Py_END_ALLOW_THREADS
    run_kept(self);
    Py_RETURN_NONE;
}

/* A lock's post, then the wake-ups deferred to it (``_deferred``, taken
 * first so that each runs once even if a callable re-enters the lock), then
 * a yield of the CPU, as _OwnedLock._run_deferred does: the kernel tends to
 * queue a woken process on the waker's CPU, behind the waker. Last, the
 * let-go of a kept ticket byte (run_kept), which no one waits for. The usual
 * release has none of them: two loads, no call. */
static inline PyObject *
post_then_deferred(Core *self)
{
    if (sem_post(self->sem) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if ((self->deferred == NULL || self->deferred == Py_None) && self->kept_words == NULL)
        Py_RETURN_NONE;
    return after_post(self);
}

/* ── life cycle ──────────────────────────────────────────────────────────── */

static int
core_traverse(Core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->semlock);
    Py_VISIT(self->py_acquire);
    Py_VISIT(self->py_release);
    Py_VISIT(self->deferred);
    Py_VISIT(self->kept_words);
    Py_VISIT(self->kept_mine);
    Py_VISIT(self->kept_slot);
    if (self->has_view)
        Py_VISIT(self->view.obj);
    return 0;
}

static void
core_detach(Core *self)
{
    run_kept(self);  /* (closed while a kept byte is held: let it go now) */
    self->sem = NULL;
    self->owner = NULL;
    self->probe_set = 0;
    self->tid = 0;
    self->depth = 0;
    if (self->has_view) {
        self->has_view = 0;
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->semlock);
}

static int
core_clear(Core *self)
{
    core_detach(self);
    Py_CLEAR(self->py_acquire);
    Py_CLEAR(self->py_release);
    Py_CLEAR(self->deferred);
    Py_CLEAR(self->kept_words);
    Py_CLEAR(self->kept_mine);
    Py_CLEAR(self->kept_slot);
    return 0;
}

static void
core_dealloc(Core *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(attach_doc,
"_attach(semlock, arena, offset, py_acquire, py_release)\n--\n\n"
"Point the fast paths at ``semlock``'s semaphore and at the owner word at byte\n"
"``offset`` of ``arena`` (None for a semaphore); ``py_acquire``/``py_release``\n"
"are the pure-Python methods that take every unusual call.");

static PyObject *
core_attach(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *semlock, *arena, *py_acquire, *py_release, *handle, *maxvalue;
    Py_ssize_t offset;
    void *sem;
    long max;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_attach() takes 5 arguments");
        return NULL;
    }
    semlock = args[0];
    arena = args[1];
    offset = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    py_acquire = args[3];
    py_release = args[4];

    handle = PyObject_GetAttrString(semlock, "handle");
    if (handle == NULL)
        return NULL;
    sem = PyLong_AsVoidPtr(handle);
    Py_DECREF(handle);
    if (sem == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the semaphore has no handle");
        return NULL;
    }
    maxvalue = PyObject_GetAttrString(semlock, "maxvalue");
    if (maxvalue == NULL)
        return NULL;
    max = PyLong_AsLong(maxvalue);
    Py_DECREF(maxvalue);
    if (max == -1 && PyErr_Occurred())
        return NULL;

    core_detach(self);
    if (arena != Py_None) {
        if (PyObject_GetBuffer(arena, &self->view, PyBUF_WRITABLE) < 0)
            return NULL;
        self->has_view = 1;
        if (offset < 0 || offset + (Py_ssize_t)sizeof(double) > self->view.len
            || ((Py_uintptr_t)((char *)self->view.buf + offset)) % sizeof(double) != 0) {
            core_detach(self);
            PyErr_Format(PyExc_ValueError, "no aligned owner word at offset %zd", offset);
            return NULL;
        }
        self->owner = (volatile double *)((char *)self->view.buf + offset);
    }
    Py_INCREF(semlock);
    self->semlock = semlock;
    self->sem = (sem_t *)sem;
    self->maxvalue = max > INT_MAX ? INT_MAX : (int)max;
    Py_INCREF(py_acquire);
    Py_XSETREF(self->py_acquire, py_acquire);
    Py_INCREF(py_release);
    Py_XSETREF(self->py_release, py_release);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(detach_doc,
"_detach()\n--\n\n"
"Let go of the semaphore and the arena; every later call goes to Python.");

static PyObject *
core_detach_method(Core *self, PyObject *Py_UNUSED(ignored))
{
    core_detach(self);
    Py_RETURN_NONE;
}

/* The thread that took it through this object (Lock: for the repr; RLock: the
 * owner), or None. */
static PyObject *
get_tid(Core *self, void *Py_UNUSED(closure))
{
    if (self->tid == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->tid);
}

/* acquire(False) found the lock taken: whether its recorded holder is this
 * process or one that lives, so that the answer is False without the Python
 * method (whose probe, _sharedwords._probe, is the same F_OFD_GETLK through
 * three Python calls: ~2.4 us against ~0.4 us here). The holder's identity
 * byte is locked for as long as it lives, by its own description, so the
 * kernel reports it held to ours. 0 for everything else -- no holder recorded
 * yet, a holder that died, a failed probe, no probe armed in this process --
 * and Python decides (and recovers a dead holder's lock). */
static int
held_by_live_holder(Core *self)
{
    double owner = *self->owner;

    if (owner == g_ident)
        return 1;  /* another thread of this process */
#ifdef F_OFD_GETLK
    if (owner > 0 && self->probe_set && self->probe_ident == g_ident) {
        struct flock fl;
        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = (off_t)(self->probe_base + (long long)owner);
        fl.l_len = 1;
        if (fcntl(self->probe_fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
            return 1;
    }
#endif
    return 0;
}

PyDoc_STRVAR(arm_probe_doc,
"_arm_probe(fd, base)\n--\n\n"
"Let acquire(False) of a lock another process holds ask, in C, whether that\n"
"holder lives: ``fd`` is this process's own description of the owner word's\n"
"arena (open-file-description locks), ``base`` the byte of identity 0. Holds\n"
"in this process only (a forked child's calls go to Python until it arms its\n"
"own); a no-op where the system has no F_OFD_GETLK.");

static PyObject *
core_arm_probe(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    long fd;
    long long base;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_arm_probe() takes 2 arguments");
        return NULL;
    }
    fd = PyLong_AsLong(args[0]);  /* (PyLong_AsInt is 3.13's) */
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    base = PyLong_AsLongLong(args[1]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
#ifdef F_OFD_GETLK
    if (self->owner != NULL && fd >= 0 && fd <= INT_MAX) {
        self->probe_fd = (int)fd;
        self->probe_base = base;
        self->probe_ident = g_ident;
        self->probe_set = 1;
    }
#endif
    Py_RETURN_NONE;
}

/* ── Lock ────────────────────────────────────────────────────────────────── */

/* acquire() past its first try: arguments, EINTR, the spin, Python. */
static NOINLINE PyObject *
lock_acquire_rest(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int blocking, simple;
    sem_t *sem = self->sem;

    simple = simple_acquire_args(args, nargs, kwnames, &blocking);
    if (simple < 0)
        return NULL;
    /* (owner is set exactly while a lock is attached: sem is then set too) */
    if (self->owner == NULL || !simple)
        return call_python(self->py_acquire, (PyObject *)self, args, nargs, kwnames);
    /* (acquire() with no arguments, no timeout: a sleep of one slice in C after the spin) */
    if (try_take(sem)
        || (blocking && *self->owner != g_ident
            && (spin_take(sem) || (nargs == 0 && kwnames == NULL && sleep_take(self))))) {
        *self->owner = g_ident;
        self->tid = PyThread_get_thread_ident();
        Py_RETURN_TRUE;
    }
    if (!blocking && held_by_live_holder(self))
        Py_RETURN_FALSE;
    return call_python(self->py_acquire, (PyObject *)self, args, nargs, kwnames);
}

static PyObject *
lock_acquire(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* The usual call, acquire() of a free lock, in the fewest instructions: one
     * try, then the owner (the same stores as below). Anything else -- arguments,
     * a busy lock, an interrupted try, a closed lock -- takes the whole path. */
    if (nargs == 0 && kwnames == NULL && self->owner != NULL && sem_trywait(self->sem) == 0) {
        *self->owner = g_ident;
        self->tid = PyThread_get_thread_ident();
        Py_RETURN_TRUE;
    }
    return lock_acquire_rest(self, args, nargs, kwnames);
}

static NOINLINE PyObject *
lock_enter_rest(Core *self)
{
    sem_t *sem = self->sem;

    if (self->owner != NULL
        && (try_take(sem)
            || (*self->owner != g_ident && (spin_take(sem) || sleep_take(self))))) {
        *self->owner = g_ident;
        self->tid = PyThread_get_thread_ident();
        Py_RETURN_TRUE;
    }
    return call_python(self->py_acquire, (PyObject *)self, NULL, 0, NULL);
}

static PyObject *
lock_enter(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->owner != NULL && sem_trywait(self->sem) == 0) {  /* (as lock_acquire) */
        *self->owner = g_ident;
        self->tid = PyThread_get_thread_ident();
        Py_RETURN_TRUE;
    }
    return lock_enter_rest(self);
}

static PyObject *
lock_release(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->owner == NULL || !may_post(self))
        return call_python(self->py_release, (PyObject *)self, NULL, 0, NULL);
    *self->owner = g_next_token;
    g_next_token -= 1.0;
    self->tid = 0;
    return post_then_deferred(self);
}

static PyObject *
lock_exit(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    return lock_release(self, NULL);
}

/* Condition.close(): a byte kept through this holding is let go now, while the
 * condition's words and descriptor are still there (as the slice did before
 * it kept bytes). */
static PyObject *
lock_let_go_kept(Core *self, PyObject *Py_UNUSED(ignored))
{
    run_kept(self);
    Py_RETURN_NONE;
}

static PyObject *
lock_became_owner(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->owner == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "this lock is closed in this process; it cannot be used any more");
        return NULL;
    }
    *self->owner = g_ident;
    self->tid = PyThread_get_thread_ident();
    Py_RETURN_NONE;
}

/* ── RLock ───────────────────────────────────────────────────────────────── */

static PyObject *
rlock_acquire(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int blocking, simple;
    unsigned long me;
    sem_t *sem = self->sem;

    simple = simple_acquire_args(args, nargs, kwnames, &blocking);
    if (simple < 0)
        return NULL;
    if (self->owner == NULL || !simple)
        return call_python(self->py_acquire, (PyObject *)self, args, nargs, kwnames);
    me = PyThread_get_thread_ident();
    if (self->tid == me && *self->owner == g_ident) {
        self->depth++;
        Py_RETURN_TRUE;
    }
    /* (acquire() with no arguments, and with: a sleep of one slice in C after the
     * spin, as Lock's.) */
    if (try_take(sem)
        || (blocking && *self->owner != g_ident
            && (spin_take(sem) || (nargs == 0 && kwnames == NULL && sleep_take(self))))) {
        *self->owner = g_ident;
        self->tid = me;
        self->depth = 1;
        Py_RETURN_TRUE;
    }
    if (!blocking && held_by_live_holder(self))
        Py_RETURN_FALSE;
    return call_python(self->py_acquire, (PyObject *)self, args, nargs, kwnames);
}

static PyObject *
rlock_release(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->owner == NULL || self->tid != PyThread_get_thread_ident()
        || *self->owner != g_ident || self->depth < 1)
        return call_python(self->py_release, (PyObject *)self, NULL, 0, NULL);
    if (self->depth > 1) {
        self->depth--;
        Py_RETURN_NONE;
    }
    self->depth = 0;
    self->tid = 0;
    *self->owner = g_next_token;
    g_next_token -= 1.0;
    return post_then_deferred(self);
}

static PyObject *
rlock_exit(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    return rlock_release(self, NULL);
}

static PyObject *
rlock_became_owner(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->owner == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "this lock is closed in this process; it cannot be used any more");
        return NULL;
    }
    self->tid = PyThread_get_thread_ident();
    self->depth = 1;
    *self->owner = g_ident;
    Py_RETURN_NONE;
}

static PyObject *
rlock_forget_ownership(Core *self, PyObject *Py_UNUSED(ignored))
{
    self->tid = 0;
    self->depth = 0;
    Py_RETURN_NONE;
}

static int
set_tid(Core *self, PyObject *value, void *Py_UNUSED(closure))
{
    unsigned long tid;
    if (value == NULL || value == Py_None) {
        self->tid = 0;
        return 0;
    }
    tid = PyLong_AsUnsignedLong(value);
    if (tid == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    self->tid = tid;
    return 0;
}

static PyObject *
get_depth(Core *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->depth);
}

static int
set_depth(Core *self, PyObject *value, void *Py_UNUSED(closure))
{
    long depth;
    if (value == NULL) {
        self->depth = 0;
        return 0;
    }
    depth = PyLong_AsLong(value);
    if (depth == -1 && PyErr_Occurred())
        return -1;
    self->depth = depth;
    return 0;
}

/* ── Semaphore ───────────────────────────────────────────────────────────── */

static PyObject *
sem_acquire_method(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int blocking, simple;
    sem_t *sem = self->sem;

    simple = simple_acquire_args(args, nargs, kwnames, &blocking);
    if (simple < 0)
        return NULL;
    /* acquire() with no arguments: the spin and the first slice's sleep, as a
     * Lock's (a semaphore has no holder to check on between slices). */
    if (sem != NULL && simple
        && (try_take(sem)
            || (blocking && nargs == 0 && kwnames == NULL
                && (spin_take(sem) || sleep_take(self)))))
        Py_RETURN_TRUE;
    /* acquire(False) of a taken semaphore: no holder to look at, no wait: the
     * answer is no, without the Python method's second try (255 -> ~60 ns, the
     * stdlib's). (With a timeout argument the Python method checks it first.) */
    if (sem != NULL && simple && !blocking && nargs <= 1 && kwnames == NULL)
        Py_RETURN_FALSE;
    return call_python(self->py_acquire, (PyObject *)self, args, nargs, kwnames);
}

static PyObject *
sem_enter(Core *self, PyObject *Py_UNUSED(ignored))
{
    sem_t *sem = self->sem;

    if (sem != NULL && (try_take(sem) || spin_take(sem) || sleep_take(self)))
        Py_RETURN_TRUE;
    return call_python(self->py_acquire, (PyObject *)self, NULL, 0, NULL);
}

static PyObject *
sem_release_method(Core *self, PyObject *Py_UNUSED(ignored))
{
    if (self->sem == NULL || !may_post(self))
        return call_python(self->py_release, (PyObject *)self, NULL, 0, NULL);
    return post(self);
}

static PyObject *
sem_exit(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    return sem_release_method(self, NULL);
}


/* The header of a condition's words (_condition.py names them the same way:
 * _TICKET, _FLAG, _SETS, _NOTIFIED, _UNMARKED, _KEPT, _HEADER;
 * test_sync_accel.py checks that both agree, through CONDITION_WORDS). */
#define COND_TICKET 0
#define EVENT_FLAG 1
#define EVENT_SETS 2
#define COND_NOTIFIED 5
#define COND_UNMARKED 6
#define COND_KEPT COND_KEPT_INDEX  /* 0, or 1 + the ticket of the one woken waiter
                                      that keeps its byte (run_kept) */
#define COND_HEADER 9

/* ── Condition: a waiter's wake-up ───────────────────────────────────────── */

/* Not on macOS, which has no sem_timedwait: its conditions run the Python slice
 * (_lock.py finds no wait_slice in the module). */
#ifndef __APPLE__
#define HAVE_WAIT_SLICE 1

/* What wait_slice() found (the Python side, _condition.py, names them too). */
#define SLICE_EMPTY 0     /* no wake-up within the slice (or a signal came) */
#define SLICE_NOTIFIED 1  /* taken, and it was ours: the ticket's byte is let go */
#define SLICE_OTHER 2     /* taken, but our ticket is not notified: another's */
#define SLICE_RETAKEN 3   /* as SLICE_NOTIFIED, and the condition's lock is ours again */

static PyTypeObject LockCoreType, RLockCoreType;  /* (defined below) */

/* A woken waiter's retake of the condition's lock (_acquire_restore), when it
 * is free: one try, as the notifier's release has just posted it. 1 if taken
 * and recorded as lock_acquire/rlock_acquire do (an RLock at ``depth``); 0
 * otherwise -- busy, not a native lock, closed --, with nothing changed: the
 * Python acquire then waits for it and takes it over from a dead holder. */
static int
retake(PyObject *obj, PyObject *depth_obj)
{
    Core *lock;
    long depth = 1;
    int rlock = PyObject_TypeCheck(obj, &RLockCoreType);

    if (!rlock && !PyObject_TypeCheck(obj, &LockCoreType))
        return 0;
    lock = (Core *)obj;
    if (rlock) {
        if (!PyLong_CheckExact(depth_obj))
            return 0;
        depth = PyLong_AsLong(depth_obj);
        if (depth < 1) {
            PyErr_Clear();
            return 0;
        }
    }
    if (lock->owner == NULL || !try_take(lock->sem))
        return 0;
    *lock->owner = g_ident;
    lock->tid = PyThread_get_thread_ident();
    if (rlock)
        lock->depth = depth;
    return 1;
}

PyDoc_STRVAR(wait_slice_doc,
"wait_slice(semlock, words, notified, ticket, timeout, fd, cmd, byte, slot, mine,\n"
"           lock=None, depth=None, keep=None)\n--\n\n"
"One slice of a condition waiter's sleep (_WaitQueue.sleep): take the wake-up\n"
"semaphore ``semlock`` within ``timeout`` seconds. Taken and ``words[notified]\n"
"> ticket``: if ``lock`` (the condition's native Lock or RLock) is free, take it\n"
"as its acquire() does (an RLock at ``depth``, what its _release_save returned).\n"
"Taken, with ``keep`` True and the KEPT word of ``words`` free: claim KEPT for\n"
"``ticket`` and leave the byte held, for the lock's release to let go; else drop ``slot`` from the set ``mine`` and unlock ``byte``\n"
"of ``fd``'s lock space with ``fcntl(fd, cmd)`` (F_OFD_SETLK or F_SETLK), as\n"
"_WaitQueue.let_go does. Returns 3 if the lock was taken, else 1. A wake-up\n"
"taken that is not ours: 2; none taken: 0. Everything else -- deadlines, the\n"
"ready() re-check, passing wake-ups on, a busy lock or a dead holder -- stays\n"
"in Python.");

static PyObject *
wait_slice(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *handle, *mine, *slot;
    long lval;
    sem_t *sem;
    Py_ssize_t index;
    long long ticket, byte;
    double timeout;
    int fd, cmd, res, err = 0, taken, retaken;
    Py_buffer view;
    long long notified;
    volatile long long *w;

    if (nargs < 10 || nargs > 13 || nargs == 11) {
        PyErr_SetString(PyExc_TypeError, "wait_slice() takes 10, 12 or 13 arguments");
        return NULL;
    }
    handle = PyObject_GetAttr(args[0], g_str_handle);
    if (handle == NULL)
        return NULL;
    sem = (sem_t *)PyLong_AsVoidPtr(handle);
    Py_DECREF(handle);
    if (sem == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the semaphore has no handle");
        return NULL;
    }
    index = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    ticket = PyLong_AsLongLong(args[3]);
    if (ticket == -1 && PyErr_Occurred())
        return NULL;
    timeout = PyFloat_AsDouble(args[4]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    lval = PyLong_AsLong(args[5]);
    if (lval == -1 && PyErr_Occurred())
        return NULL;
    fd = (int)lval;
    lval = PyLong_AsLong(args[6]);
    if (lval == -1 && PyErr_Occurred())
        return NULL;
    cmd = (int)lval;
    byte = PyLong_AsLongLong(args[7]);
    if (byte == -1 && PyErr_Occurred())
        return NULL;
    slot = args[8];
    mine = args[9];
    if (!PyAnySet_Check(mine)) {
        PyErr_SetString(PyExc_TypeError, "wait_slice(): mine must be a set");
        return NULL;
    }

    /* The semaphore: a try without letting go of the GIL (the wake-up is often
     * there already), else a sleep of at most ``timeout``. The SemLock passed
     * in keeps the sem_t open meanwhile. */
    taken = try_take(sem);
    if (!taken && timeout > 0) {
        struct timespec until = deadline_after(timeout);

        Py_BEGIN_ALLOW_THREADS
        res = sem_timedwait(sem, &until);
        err = errno;
        Py_END_ALLOW_THREADS
        if (res == 0) {
            taken = 1;
        }
        else if (err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return NULL;  /* (Python: an interrupted waiter lets its byte go) */
        }
        else if (err != ETIMEDOUT) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    if (!taken)
        return PyLong_FromLong(SLICE_EMPTY);

    /* Ours? The header word is read with the GIL held, like the Python check. */
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) {
        sem_post(sem);  /* not lost: whoever takes it next decides */
        return NULL;
    }
    if (index < 0 || (index + 1) * (Py_ssize_t)sizeof(long long) > view.len
        || (nargs == 13 && (view.len < COND_HEADER * (Py_ssize_t)sizeof(long long)
                            || ((Py_uintptr_t)view.buf) % sizeof(long long) != 0))) {
        PyBuffer_Release(&view);
        sem_post(sem);
        PyErr_SetString(PyExc_IndexError, "wait_slice(): no such word");
        return NULL;
    }
    w = (volatile long long *)view.buf;
    notified = w[index];
    if (notified <= ticket) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(SLICE_OTHER);
    }

    /* Notified. The condition's lock first: the notifier's release has just
     * posted it. */
    retaken = nargs >= 12 && retake(args[10], args[11]);
    if (retaken && nargs == 13 && args[12] == Py_True && ((Core *)args[10])->kept_words == NULL) {
        /* Keep the byte through this holding, if no other waiter keeps one:
         * KEPT tells _pass_on that this ticket needs no wake-up, and the
         * release that ends the holding lets the byte go and frees KEPT
         * (run_kept). One fcntl fewer between the wake-up and wait()'s return. */
        long long expected = 0;
        if (__atomic_compare_exchange_n((long long *)&w[COND_KEPT], &expected, ticket + 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            Core *lock = (Core *)args[10];
            PyBuffer_Release(&view);
            Py_INCREF(args[1]);
            Py_INCREF(mine);
            Py_INCREF(slot);
            lock->kept_words = args[1];
            lock->kept_mine = mine;
            lock->kept_slot = slot;
            lock->kept_ticket = ticket;
            lock->kept_byte = byte;
            lock->kept_fd = fd;
            lock->kept_cmd = cmd;
            lock->kept_ident = g_ident;
            return PyLong_FromLong(SLICE_RETAKEN);
        }
    }
    PyBuffer_Release(&view);

    /* Out of the waiting table, as _WaitQueue.let_go (set first: a probe of
     * this process must never touch a byte we no longer hold). */
    if (PySet_Discard(mine, slot) < 0)
        PyErr_Clear();  /* (unhashable, a caller's bug: then it was not in the set) */
    unlock_byte(fd, cmd, byte);
    return PyLong_FromLong(retaken ? SLICE_RETAKEN : SLICE_NOTIFIED);
}
#endif /* !__APPLE__ */

/* ── types ───────────────────────────────────────────────────────────────── */

PyDoc_STRVAR(acquire_doc, "acquire(block=True, timeout=None)\n--\n\nAcquire (see the Python class).");
PyDoc_STRVAR(release_doc, "release()\n--\n\nRelease (see the Python class).");

static PyMemberDef lock_members[] = {
    {"_deferred", T_OBJECT, offsetof(Core, deferred), 0,
     "None, or what the release that ends this holding calls after its post"},
    {NULL, 0, 0, 0, NULL},
};

#define COMMON_METHODS \
    {"_attach", (PyCFunction)(void (*)(void))core_attach, METH_FASTCALL, attach_doc}, \
    {"_detach", (PyCFunction)core_detach_method, METH_NOARGS, detach_doc}, \
    {"_arm_probe", (PyCFunction)(void (*)(void))core_arm_probe, METH_FASTCALL, arm_probe_doc}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS, acquire_doc},
    {"release", (PyCFunction)lock_release, METH_NOARGS, release_doc},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL},
    {"_became_owner", (PyCFunction)lock_became_owner, METH_NOARGS, NULL},
    {"_let_go_kept", (PyCFunction)lock_let_go_kept, METH_NOARGS, NULL},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lock_getset[] = {
    {"_holder_tid", (getter)get_tid, NULL,
     "the thread that took the lock through this object (None: released, or taken elsewhere)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef rlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))rlock_acquire, METH_FASTCALL | METH_KEYWORDS, acquire_doc},
    {"release", (PyCFunction)rlock_release, METH_NOARGS, release_doc},
    /* RLock.__enter__ is acquire (as in the pure class, it takes the same arguments) */
    {"__enter__", (PyCFunction)(void (*)(void))rlock_acquire, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))rlock_exit, METH_FASTCALL, NULL},
    {"_became_owner", (PyCFunction)rlock_became_owner, METH_NOARGS, NULL},
    {"_forget_ownership", (PyCFunction)rlock_forget_ownership, METH_NOARGS, NULL},
    {"_let_go_kept", (PyCFunction)lock_let_go_kept, METH_NOARGS, NULL},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rlock_getset[] = {
    {"_tid", (getter)get_tid, (setter)set_tid, "the owning thread's ident, or None", NULL},
    {"_depth", (getter)get_depth, (setter)set_depth, "the recursion depth", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef sem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire_method, METH_FASTCALL | METH_KEYWORDS, acquire_doc},
    {"release", (PyCFunction)sem_release_method, METH_NOARGS, release_doc},
    {"__enter__", (PyCFunction)sem_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))sem_exit, METH_FASTCALL, NULL},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

#define CORE_TYPE(cname, pyname, methods, getset, members, doc)         \
    static PyTypeObject cname = {                                       \
        PyVarObject_HEAD_INIT(NULL, 0)                                  \
        .tp_name = "proctor._sync._native." pyname,                     \
        .tp_basicsize = sizeof(Core),                                   \
        .tp_dealloc = (destructor)core_dealloc,                         \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, \
        .tp_doc = doc,                                                  \
        .tp_traverse = (traverseproc)core_traverse,                     \
        .tp_clear = (inquiry)core_clear,                                \
        .tp_methods = methods,                                          \
        .tp_getset = getset,                                            \
        .tp_members = members,                                          \
        .tp_new = PyType_GenericNew,                                    \
    };

CORE_TYPE(LockCoreType, "LockCore", lock_methods, lock_getset, lock_members,
          "C fast paths of proctor's Lock (a base class; see _sync/_lock.py).")
CORE_TYPE(RLockCoreType, "RLockCore", rlock_methods, rlock_getset, lock_members,
          "C fast paths of proctor's RLock (a base class; see _sync/_lock.py).")
CORE_TYPE(SemaphoreCoreType, "SemaphoreCore", sem_methods, NULL, NULL,
          "C fast paths of proctor's Semaphore (a base class; see _sync/_semaphore.py).")

/* ── Event.set() and Condition.notify() ──────────────────────────────────── */

/* The sem_t of a _multiprocessing.SemLock; NULL without an error set when
 * ``semlock`` is something else (a closed semaphore, a test's stand-in): the
 * caller then leaves the call to Python, which calls its methods. */
static sem_t *
semlock_sem(PyObject *semlock)
{
    PyObject *handle;
    void *sem;

    handle = PyObject_GetAttr(semlock, g_str_handle);
    if (handle == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        return NULL;
    }
    sem = PyLong_AsVoidPtr(handle);
    Py_DECREF(handle);
    if (sem == NULL && PyErr_Occurred())
        PyErr_Clear();
    return (sem_t *)sem;
}

/* The header words of a condition, as a writable buffer; 0 on success. */
static int
header_words(PyObject *words, Py_buffer *view)
{
    if (PyObject_GetBuffer(words, view, PyBUF_WRITABLE) < 0)
        return -1;
    if (view->len < COND_HEADER * (Py_ssize_t)sizeof(long long)
        || ((Py_uintptr_t)view->buf) % sizeof(long long) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "not the words of a condition");
        return -1;
    }
    return 0;
}

/* Mark every waiting ticket notified (_WaitQueue.notify with n >= the waiters
 * not yet notified); return how many wake-ups to post. */
static long long
mark_all(volatile long long *w)
{
    long long end = w[COND_TICKET], unmarked;

    if (w[COND_NOTIFIED] >= end)
        return 0;
    unmarked = w[COND_UNMARKED];
    w[COND_NOTIFIED] = end;
    w[COND_UNMARKED] = 0;
    return unmarked > 0 ? unmarked : 0;
}

PyDoc_STRVAR(event_set_doc,
"event_set(lock, semlock, words)\n--\n\n"
"Event.set() in one call: take ``lock`` (a native Lock) without waiting, set the\n"
"flag in ``words`` (the condition's), mark every waiter notified, release the\n"
"lock, post their wake-ups on ``semlock``, yield the CPU if any was woken.\n"
"Returns None; NotImplemented, having changed nothing, when the call needs the\n"
"Python path (the lock is busy, or either object is closed or not a native one).");

static PyObject *
event_set(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Core *lock;
    sem_t *wake;
    Py_buffer view;
    volatile long long *w;
    long long woken, i;
    int err = 0;
    PyObject *res;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "event_set() takes 3 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &LockCoreType))
        Py_RETURN_NOTIMPLEMENTED;
    lock = (Core *)args[0];
    if (lock->owner == NULL)
        Py_RETURN_NOTIMPLEMENTED;
    wake = semlock_sem(args[1]);
    if (wake == NULL)
        Py_RETURN_NOTIMPLEMENTED;
    if (header_words(args[2], &view) < 0)
        return NULL;
    /* The lock as lock_enter takes it; busy after the spin: Python waits for it
     * (in slices, taking it over from a dead holder). */
    if (!(try_take(lock->sem) || (*lock->owner != g_ident && spin_take(lock->sem)))) {
        PyBuffer_Release(&view);
        Py_RETURN_NOTIMPLEMENTED;
    }
    *lock->owner = g_ident;
    lock->tid = PyThread_get_thread_ident();
    w = (volatile long long *)view.buf;
    w[EVENT_FLAG] = 1;
    w[EVENT_SETS] += 1;
    woken = mark_all(w);
    PyBuffer_Release(&view);
    res = lock_release(lock, NULL);  /* (its error, if any, is told after the posts) */
    /* After the release, as the Python set() posts: a woken waiter that goes on
     * to use the event (clear() it, wait() again) finds its lock free instead of
     * sleeping on it until this release. A setter killed before these posts
     * leaves the flag set and the waiters marked: they find that at their next
     * look, within a slice. */
    for (i = 0; i < woken; i++) {
        if (sem_post(wake) < 0) {
            err = errno;
            break;
        }
    }
    if (err) {
        Py_XDECREF(res);  /* (the post's error is the one to tell) */
        if (err == EOVERFLOW) {
            PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
            return NULL;
        }
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    if (woken) {
        /* As Event.set(): a woken process queued on our CPU runs now. */
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cond_notify_doc,
"cond_notify(lock, post, words, n)\n--\n\n"
"Condition.notify(n) when it wakes every waiter not yet notified (n at least\n"
"their number): mark them notified in ``words`` and defer ``post`` to the\n"
"release of ``lock`` (a native Lock or RLock) once per waiter, as\n"
"_OwnedLock._defer does. Returns None; NotImplemented, having changed nothing,\n"
"when the call needs the Python path: ``n`` is not an int or is less than the\n"
"waiters (the live ones must be told from the dead), the caller does not hold\n"
"``lock`` (Python raises), or the lock is closed.");

static PyObject *
cond_notify(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Core *lock;
    int rlock;
    long long n, count;
    int overflow;
    Py_buffer view;
    volatile long long *w;
    PyObject *todo;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "cond_notify() takes 4 arguments");
        return NULL;
    }
    rlock = PyObject_TypeCheck(args[0], &RLockCoreType);
    if (!rlock && !PyObject_TypeCheck(args[0], &LockCoreType))
        Py_RETURN_NOTIMPLEMENTED;
    lock = (Core *)args[0];
    if (lock->owner == NULL || *lock->owner != g_ident
        || (rlock && lock->tid != PyThread_get_thread_ident()))
        Py_RETURN_NOTIMPLEMENTED;  /* (not the holder: Python says so) */
    if (!PyLong_CheckExact(args[3]))
        Py_RETURN_NOTIMPLEMENTED;
    n = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (overflow > 0)
        n = LLONG_MAX;
    else if (overflow < 0)
        Py_RETURN_NOTIMPLEMENTED;
    if (header_words(args[2], &view) < 0)
        return NULL;
    w = (volatile long long *)view.buf;
    if (w[COND_NOTIFIED] < w[COND_TICKET] && n < w[COND_UNMARKED]) {
        PyBuffer_Release(&view);
        Py_RETURN_NOTIMPLEMENTED;  /* some, not all: Python probes who still waits */
    }
    count = mark_all(w);
    PyBuffer_Release(&view);
    if (count == 0)
        Py_RETURN_NONE;
    todo = lock->deferred;
    if (todo == NULL || todo == Py_None) {
        todo = PyList_New(0);
        if (todo == NULL)
            return NULL;
        Py_XSETREF(lock->deferred, todo);
    }
    else if (!PyList_Check(todo)) {
        PyErr_SetString(PyExc_TypeError, "a lock's _deferred must be a list or None");
        return NULL;
    }
    for (; count > 0; count--) {
        if (PyList_Append(todo, args[1]) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* ── MemSemaphore: a process-shared semaphore in anonymous shared memory ──── */

/* Linux only: an unnamed semaphore (sem_init with pshared=1) in a MAP_SHARED
 * mapping of a memfd works across processes however each maps it (the futex
 * is keyed by the file and offset). macOS has no unnamed semaphores (sem_init
 * fails with ENOSYS), and proctor does not rely on the BSDs' ones: there the
 * objects that would use one keep a named semaphore (_reaper/_semlock.py).
 *
 *     MemSemaphore(memory, offset, maxvalue, value=-1)
 *       value >= 0: sem_init(memory + offset, pshared=1, value) -- a new block
 *                   that no other process can see yet
 *       value <  0: use the semaphore already there (rebuilt in another process)
 *     acquire(block=True, timeout=None) / release(): as _multiprocessing.SemLock's
 *     handle, maxvalue: what the lock fast paths (_attach) read from a SemLock
 *
 * The object holds a buffer export on the memory for as long as it lives, so
 * the sem_t cannot be unmapped under it (nor under a Core attached to it).
 * There is no sem_destroy: other processes may use the semaphore until the
 * last mapping goes, and the kernel then frees it with the memory. */

#ifdef __linux__
#define HAVE_MEM_SEMAPHORE 1

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    sem_t *sem;
    int maxvalue;
} MemSem;

static int
memsem_init(MemSem *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"memory", "offset", "maxvalue", "value", NULL};
    PyObject *memory;
    Py_ssize_t offset;
    long maxvalue, value = -1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onl|l:MemSemaphore", kwlist, &memory,
                                     &offset, &maxvalue, &value))
        return -1;
    if (self->sem != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "MemSemaphore.__init__ called twice");
        return -1;
    }
    if (maxvalue < 1 || maxvalue > SEM_VALUE_MAX || value > maxvalue) {
        PyErr_Format(PyExc_ValueError,
                     "a semaphore's maxvalue must be 1 to %d and its value at most that, "
                     "not maxvalue=%ld value=%ld", SEM_VALUE_MAX, maxvalue, value);
        return -1;
    }
    if (PyObject_GetBuffer(memory, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (offset < 0 || offset + (Py_ssize_t)sizeof(sem_t) > self->view.len
        || ((Py_uintptr_t)((char *)self->view.buf + offset)) % 16 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_Format(PyExc_ValueError,
                     "no room for a 16-byte aligned semaphore at offset %zd", offset);
        return -1;
    }
    if (value >= 0 && sem_init((sem_t *)((char *)self->view.buf + offset), 1,
                               (unsigned int)value) < 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->sem = (sem_t *)((char *)self->view.buf + offset);
    self->maxvalue = (int)maxvalue;
    return 0;
}

static void
memsem_dealloc(MemSem *self)
{
    if (self->sem != NULL) {
        self->sem = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static sem_t *
memsem_get(MemSem *self)
{
    if (self->sem == NULL)
        PyErr_SetString(PyExc_ValueError, "this MemSemaphore was never initialised");
    return self->sem;
}

PyDoc_STRVAR(memsem_acquire_doc,
"acquire(block=True, timeout=None)\n--\n\n"
"Take one unit, as _multiprocessing.SemLock.acquire: True once taken; False when\n"
"``block`` is false and none is free, or ``timeout`` seconds passed first.");

static PyObject *
memsem_acquire(MemSem *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *given[2], *bad = NULL;
    int blocking = 1, res, err;
    double timeout = -1.0;  /* < 0: no timeout */
    struct timespec until;
    sem_t *sem = memsem_get(self);

    if (sem == NULL)
        return NULL;
    res = pick_acquire_args(args, nargs, kwnames, &given[0], &given[1], &bad);
    if (res < 0) {
        bad_acquire_call(res, nargs, bad);
        return NULL;
    }
    if (given[0] != NULL) {
        blocking = PyObject_IsTrue(given[0]);
        if (blocking < 0)
            return NULL;
    }
    if (blocking && given[1] != NULL && given[1] != Py_None) {
        timeout = PyFloat_AsDouble(given[1]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (timeout < 0 || timeout != timeout)
            timeout = 0;
    }
    if (try_take(sem))
        Py_RETURN_TRUE;
    if (!blocking || timeout == 0)
        Py_RETURN_FALSE;
    if (timeout > 0)
        until = deadline_after(timeout > 1e9 ? 1e9 : timeout);  /* (31 years: any time_t) */
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        res = timeout > 0 ? sem_timedwait(sem, &until) : sem_wait(sem);
        err = errno;
        Py_END_ALLOW_THREADS
        if (res == 0)
            Py_RETURN_TRUE;
        if (err == ETIMEDOUT)
            Py_RETURN_FALSE;
        if (err != EINTR) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        /* A signal: its handler runs now (and may raise); then the same deadline. */
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

PyDoc_STRVAR(memsem_release_doc,
"release()\n--\n\n"
"Give one unit back; ValueError if the count is at ``maxvalue`` already.");

static PyObject *
memsem_release(MemSem *self, PyObject *Py_UNUSED(ignored))
{
    int value;
    sem_t *sem = memsem_get(self);

    if (sem == NULL)
        return NULL;
    if (sem_getvalue(sem, &value) == 0 && value >= self->maxvalue) {
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return NULL;
    }
    if (sem_post(sem) < 0)
        return PyErr_SetFromErrno(errno == EOVERFLOW ? PyExc_ValueError : PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
memsem_get_value(MemSem *self, PyObject *Py_UNUSED(ignored))
{
    int value;
    sem_t *sem = memsem_get(self);

    if (sem == NULL)
        return NULL;
    if (sem_getvalue(sem, &value) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(value < 0 ? 0 : value);  /* (< 0: waiters, on some systems) */
}

static PyObject *
memsem_is_zero(MemSem *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *value = memsem_get_value(self, NULL);
    int zero;

    if (value == NULL)
        return NULL;
    zero = PyLong_AsLong(value) == 0;
    Py_DECREF(value);
    return PyBool_FromLong(zero);
}

static PyObject *
memsem_handle(MemSem *self, void *Py_UNUSED(closure))
{
    if (memsem_get(self) == NULL)
        return NULL;
    return PyLong_FromVoidPtr(self->sem);
}

static PyObject *
memsem_maxvalue(MemSem *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->maxvalue);
}

static PyMethodDef memsem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))memsem_acquire, METH_FASTCALL | METH_KEYWORDS,
     memsem_acquire_doc},
    {"release", (PyCFunction)memsem_release, METH_NOARGS, memsem_release_doc},
    {"_get_value", (PyCFunction)memsem_get_value, METH_NOARGS, "The count now."},
    {"_is_zero", (PyCFunction)memsem_is_zero, METH_NOARGS, "Whether the count is 0."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef memsem_getset[] = {
    {"handle", (getter)memsem_handle, NULL, "the address of the sem_t", NULL},
    {"maxvalue", (getter)memsem_maxvalue, NULL, "the largest count release() may make", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MemSemType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proctor._sync._native.MemSemaphore",
    .tp_basicsize = sizeof(MemSem),
    .tp_dealloc = (destructor)memsem_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A process-shared semaphore at ``offset`` of anonymous shared memory "
              "(see _sync/_memsem.py).",
    .tp_methods = memsem_methods,
    .tp_getset = memsem_getset,
    .tp_init = (initproc)memsem_init,
    .tp_new = PyType_GenericNew,
};
#endif /* __linux__ */

/* ── module ──────────────────────────────────────────────────────────────── */

PyDoc_STRVAR(set_process_doc,
"set_process(ident, token)\n--\n\n"
"Set this process's identity and its next release token (both floats).");

static PyObject *
set_process(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    double ident, token;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_process() takes 2 arguments");
        return NULL;
    }
    ident = PyFloat_AsDouble(args[0]);
    if (ident == -1.0 && PyErr_Occurred())
        return NULL;
    token = PyFloat_AsDouble(args[1]);
    if (token == -1.0 && PyErr_Occurred())
        return NULL;
    g_ident = ident;
    g_next_token = token;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(next_token_doc,
"next_token()\n--\n\n"
"A release token (negative) never returned before by this process.");

static PyObject *
next_token(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    double token = g_next_token;
    g_next_token -= 1.0;
    return PyFloat_FromDouble(token);
}

static PyMethodDef module_methods[] = {
    {"set_process", (PyCFunction)(void (*)(void))set_process, METH_FASTCALL, set_process_doc},
    {"next_token", (PyCFunction)next_token, METH_NOARGS, next_token_doc},
#ifdef HAVE_WAIT_SLICE
    {"wait_slice", (PyCFunction)(void (*)(void))wait_slice, METH_FASTCALL, wait_slice_doc},
#endif
    {"event_set", (PyCFunction)(void (*)(void))event_set, METH_FASTCALL, event_set_doc},
    {"cond_notify", (PyCFunction)(void (*)(void))cond_notify, METH_FASTCALL, cond_notify_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proctor._sync._native",
    .m_doc = "C fast paths of proctor's Lock, RLock and Semaphore (optional; see _native.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module;

    if (g_str_handle == NULL && (g_str_handle = PyUnicode_InternFromString("handle")) == NULL)
        return NULL;
    if (PyType_Ready(&LockCoreType) < 0 || PyType_Ready(&RLockCoreType) < 0
        || PyType_Ready(&SemaphoreCoreType) < 0)
        return NULL;
#ifdef HAVE_MEM_SEMAPHORE
    if (PyType_Ready(&MemSemType) < 0)
        return NULL;
#endif
    module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&LockCoreType);
    Py_INCREF(&RLockCoreType);
    Py_INCREF(&SemaphoreCoreType);
    if (PyModule_AddObject(module, "LockCore", (PyObject *)&LockCoreType) < 0
        || PyModule_AddStringConstant(module, "SOURCE_DIGEST", PROCTOR_SOURCE_DIGEST) < 0
        || PyModule_AddObject(module, "RLockCore", (PyObject *)&RLockCoreType) < 0
        || PyModule_AddObject(module, "SemaphoreCore", (PyObject *)&SemaphoreCoreType) < 0
        || PyModule_AddIntConstant(module, "SPIN_PAUSES", SPIN_PAUSES) < 0
        || PyModule_AddIntConstant(module, "SPIN_BACKOFF_MAX", SPIN_BACKOFF_MAX) < 0
        || PyModule_AddObject(module, "CONDITION_WORDS",
                              Py_BuildValue("(iiiiiii)", COND_TICKET, EVENT_FLAG, EVENT_SETS,
                                            COND_NOTIFIED, COND_UNMARKED, COND_KEPT, COND_HEADER)) < 0
#ifdef HAVE_MEM_SEMAPHORE
        || PyModule_AddObjectRef(module, "MemSemaphore", (PyObject *)&MemSemType) < 0
        || PyModule_AddIntConstant(module, "MEM_SEMAPHORE_SIZE", (long)sizeof(sem_t)) < 0
#endif
#ifdef HAVE_WAIT_SLICE
        || PyModule_AddIntConstant(module, "SLICE_EMPTY", SLICE_EMPTY) < 0
        || PyModule_AddIntConstant(module, "SLICE_NOTIFIED", SLICE_NOTIFIED) < 0
        || PyModule_AddIntConstant(module, "SLICE_OTHER", SLICE_OTHER) < 0
        || PyModule_AddIntConstant(module, "SLICE_RETAKEN", SLICE_RETAKEN) < 0
#endif
        ) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
