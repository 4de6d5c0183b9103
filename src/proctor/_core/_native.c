/* proctor._core._native: the descriptors that fork children let go of, in C.
 *
 * Optional: built with the other C modules when a C compiler is present
 * (hatch_build.py); without it _core/_system.py keeps the same list in an array
 * and lets go of it from an os.register_at_fork hook.
 *
 * A process that forks holds descriptors that are its own and not its fork
 * children's: the log listener's (each child's log channel, its wake-up pair, its
 * epoll), the sentinels and channels held for its children, its sentinels' epoll.
 * A fork child points each of them at /dev/null (close-on-exec): the objects that
 * own them in its copy of the parent's memory are not touched (each page touched
 * is a page copied), and one closed or collected there later closes /dev/null,
 * never a descriptor of the child's that reused the number. Done here, by a
 * pthread_atfork child handler, that costs a fork child a few dup3 calls and no
 * Python at all: the Python hook that did it cost ~45 us of each fork start in a
 * parent that forwards logs (mostly the pages its calls touched first; issue 17)::
 *
 *     let_go_in_forks(fd)        add fd to the list (the process holds it from now)
 *     keep_in_forks(fd)          take fd off the list (before the process closes it)
 *     fds_let_go_in_forks()      the list, a tuple (for tests)
 *     set_devnull(fd)            the process's /dev/null descriptor, once
 *     poll_readable(fds, ms)     one poll() for readable descriptors (below)
 *     spin_recv_into(fd, buf, ns) a receiver's look before it sleeps (below)
 *     spin_until_readable(fd, ns) the same look, reading nothing (below); fd may be
 *                                 a sequence of descriptors: any of them
 *     read_rest_as_bytes(fd, head, n, is_socket) a frame's body read into a new
 *     recv_datagram_as_bytes(fd, n, spill)       bytes object, no copy out (below)
 *
 *     fork() ─▶ child: dup3(devnull, fd, O_CLOEXEC) for each listed fd, then an
 *               empty list (the numbers are the parent's), before any Python runs
 *
 * The list changes only with the GIL held, and CPython forks with it held, so a
 * Python fork never sees it half changed. A fork from a thread that does not hold
 * the GIL (C code) may: so the count is published after the entry it covers, and
 * an array outgrown is never freed (a child forked meanwhile may still read it;
 * they add up to less than the last one).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* This file's digest (its CRC-32 and length, 16 hex digits), passed by hatch_build.py:
   the loader (_core/_accel.py) refuses a module built from older source. */
#ifndef PROCTOR_SOURCE_DIGEST
#define PROCTOR_SOURCE_DIGEST ""
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int *g_fds = NULL;
static Py_ssize_t g_len = 0;
static Py_ssize_t g_cap = 0;
static int g_devnull = -1;
static int g_handler_registered = 0;

#if defined(__GNUC__) || defined(__clang__)
#define PUBLISH(var, value) __atomic_store_n(&(var), (value), __ATOMIC_RELEASE)
#else
#define PUBLISH(var, value) ((var) = (value))
#endif

/* In the child, inside fork(): only async-signal-safe calls. */
static void
let_go_in_child(void)
{
    int devnull = g_devnull;
    int *fds = g_fds;
    Py_ssize_t n = g_len;

    if (devnull >= 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int fd = fds[i];
            if (fd == devnull)
                continue;
#ifdef __linux__
            while (dup3(devnull, fd, O_CLOEXEC) < 0 && errno == EINTR)
                ;
#else
            while (dup2(devnull, fd) < 0 && errno == EINTR)
                ;
            (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
        }
    }
    g_len = 0;
}

static int
fd_arg(PyObject *arg, int *fd)
{
    long value;

    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "descriptors are ints, not %.100s", Py_TYPE(arg)->tp_name);
        return 0;
    }
    value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return 0;
    if (value < 0 || value > 0x7fffffff) {
        PyErr_Format(PyExc_ValueError, "not a descriptor: %ld", value);
        return 0;
    }
    *fd = (int)value;
    return 1;
}

static PyObject *
let_go_in_forks(PyObject *module, PyObject *arg)
{
    int fd;

    (void)module;
    if (!fd_arg(arg, &fd))
        return NULL;
    if (!g_handler_registered) {
        int err = pthread_atfork(NULL, NULL, let_go_in_child);
        if (err != 0) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        g_handler_registered = 1;
    }
    if (g_len == g_cap) {
        Py_ssize_t cap = g_cap ? g_cap * 2 : 64;
        int *grown = PyMem_RawMalloc((size_t)cap * sizeof(int));
        if (grown == NULL)
            return PyErr_NoMemory();
        if (g_len)
            memcpy(grown, g_fds, (size_t)g_len * sizeof(int));
        /* (the old array is not freed: see the top of this file) */
        PUBLISH(g_fds, grown);
        g_cap = cap;
    }
    g_fds[g_len] = fd;
    PUBLISH(g_len, g_len + 1);
    Py_RETURN_NONE;
}

static PyObject *
keep_in_forks(PyObject *module, PyObject *arg)
{
    int fd;

    (void)module;
    if (!fd_arg(arg, &fd))
        return NULL;
    /* The last listed first: a descriptor is usually let go of soon after it was listed. */
    for (Py_ssize_t i = g_len - 1; i >= 0; i--) {
        if (g_fds[i] == fd) {
            g_fds[i] = g_fds[g_len - 1];
            PUBLISH(g_len, g_len - 1);
            break;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
fds_let_go_in_forks(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyTuple_New(g_len);

    (void)module;
    if (result == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < g_len; i++) {
        PyObject *fd = PyLong_FromLong(g_fds[i]);
        if (fd == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, fd);
    }
    return result;
}

static PyObject *
set_devnull(PyObject *module, PyObject *arg)
{
    int fd;

    (void)module;
    if (!fd_arg(arg, &fd))
        return NULL;
    g_devnull = fd;
    Py_RETURN_NONE;
}

/* poll_readable(fds, timeout_ms): the readable ones of fds (any revents: POLLHUP,
 * POLLERR and POLLNVAL too, as select.poll reports them), waiting at most timeout_ms
 * (-1: for ever) with the GIL released. One poll() call: an empty list when it timed
 * out or a signal interrupted it (after its handler ran: an exception it raised is
 * raised here), and the caller waits again for what is left (_timeout.ready_by).
 * select.poll() does the same, but a thread that waits in every receive
 * (_core._wakeup) paid ~6 us for making, filling and reading a poll object. */
#define POLL_STACK_FDS 8

/* The descriptors of the sequence `fds`, each watched for POLLIN: in `stack` when
 * POLL_STACK_FDS hold them, else in memory allocated here (the caller frees what is
 * not `stack`, with PyMem_Free); their count in *count. NULL with an exception
 * (`message` when fds is not a sequence). */
static struct pollfd *
pollfds_of(PyObject *fds, struct pollfd *stack, Py_ssize_t *count, const char *message)
{
    struct pollfd *pfds = stack;
    PyObject *seq = PySequence_Fast(fds, message);
    Py_ssize_t n;

    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > POLL_STACK_FDS) {
        if ((size_t)n > SIZE_MAX / sizeof(struct pollfd))
            pfds = NULL;
        else
            pfds = PyMem_Malloc((size_t)n * sizeof(struct pollfd));
        if (pfds == NULL) {
            PyErr_NoMemory();
            Py_DECREF(seq);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!fd_arg(PySequence_Fast_GET_ITEM(seq, i), &pfds[i].fd)) {
            if (pfds != stack)
                PyMem_Free(pfds);
            Py_DECREF(seq);
            return NULL;
        }
        pfds[i].events = POLLIN;
        pfds[i].revents = 0;
    }
    Py_DECREF(seq);
    *count = n;
    return pfds;
}

static PyObject *
poll_readable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct pollfd stack[POLL_STACK_FDS];
    struct pollfd *pfds;
    PyObject *result = NULL;
    Py_ssize_t n;
    int timeout_ms, got, saved_errno;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "poll_readable() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    long ms = PyLong_AsLong(args[1]); /* (PyLong_AsInt is 3.13's) */
    if (ms == -1 && PyErr_Occurred())
        return NULL;
    if (ms < -1 || ms > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "timeout_ms must be -1 to %d, not %ld", INT_MAX, ms);
        return NULL;
    }
    timeout_ms = (int)ms;
    pfds = pollfds_of(args[0], stack, &n, "poll_readable() takes a sequence of descriptors");
    if (pfds == NULL)
        return NULL;
    if (timeout_ms == 0) {
        /* A look that never blocks keeps the GIL: letting it go would hand it to
         * any thread waiting for it, and this one would then wait to get it back
         * (a pool's dispatcher looks after each result it takes, while the
         * submitting thread wants the GIL). */
        got = poll(pfds, (nfds_t)n, 0);
        saved_errno = errno;
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        got = poll(pfds, (nfds_t)n, timeout_ms);
        saved_errno = errno;
        Py_END_ALLOW_THREADS
    }
    if (got < 0) {
        if (saved_errno != EINTR) {
            errno = saved_errno;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        if (PyErr_CheckSignals() < 0)
            goto done;
        got = 0;
    }
    result = PyList_New(0);
    for (Py_ssize_t i = 0; result != NULL && got > 0 && i < n; i++) {
        if (pfds[i].revents) {
            PyObject *fd = PyLong_FromLong(pfds[i].fd);
            if (fd == NULL || PyList_Append(result, fd) < 0)
                Py_CLEAR(result);
            Py_XDECREF(fd);
        }
    }
done:
    if (pfds != stack)
        PyMem_Free(pfds);
    return result;
}

/* spin_recv_into(fd, buffer, budget_ns, without_gil=False): recv() into buffer
 * without waiting, tried again and again for at most budget_ns nanoseconds, with
 * the GIL held (released with without_gil: see recv_looking). The bytes
 * read (0: end of file) when they were there at the first try; -2 - the bytes
 * read when they came while it looked (so the caller can tell a look that paid
 * from one that was not needed); -1 when nothing came within the budget (nothing
 * read: the caller then waits in its blocking read). A Pipe() end's receiver on a
 * frame socket calls it before it would sleep (Connection, _receiving): on two
 * cores of this VM a process woken from a sleep on a socket runs ~10-15 us after
 * the send that woke it, while one that is looking sees the bytes within a try;
 * with the GIL held only in a process with no other thread, which it keeps from
 * nothing, and the caller stops trying while tries keep failing (a peer on the same CPU
 * cannot send while this one spins). Errors other than EAGAIN raise OSError
 * (ConnectionResetError and the like, as the blocking read would). */
#if defined(__x86_64__) || defined(__i386__)
#define SPIN_RELAX() __asm__ __volatile__("pause" ::: "memory")
#elif defined(__aarch64__)
#define SPIN_RELAX() __asm__ __volatile__("isb" ::: "memory")
#else
#define SPIN_RELAX() ((void)0)
#endif
#define SPIN_PAUSES_BETWEEN_TRIES 8

static long long
monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Whether this process may run on more than one CPU (Linux: its affinity mask);
 * else 1: a peer may be on another, we cannot tell. */
static int
may_run_on_other_cpus(void)
{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        return CPU_COUNT(&set) > 1;
#endif
    return 1;
}

/* Between two tries of a look (spin_recv_into, spin_until_readable), the first
 * being try 0: 1 to try again, after a short pause; 0 to stop, where this process
 * may run on one CPU only (a peer there can only send once this one sleeps) or
 * the budget is spent; -1 with an exception: a signal came, and its Python
 * handler raised (it runs now, not after the look or the blocking read the
 * caller makes next; cheap while no signal came, a flag's read). With `signals`
 * 0 (a look with the GIL released, in a process with other threads) no handler
 * runs in between: they run once the caller holds the GIL again, before any
 * sleep (only the main thread runs them anyway). */
static int
look_again(int tries, long long until, int signals)
{
    if (tries == 0 && !may_run_on_other_cpus())
        return 0;
    if (monotonic_ns() >= until)
        return 0;
    if (signals && PyErr_CheckSignals() < 0)
        return -1;
    for (int i = 0; i < SPIN_PAUSES_BETWEEN_TRIES; i++)
        SPIN_RELAX();
    return 1;
}

/* The tries of the two looks, with the GIL held (`signals` 1) or released (0: a
 * process with other threads, which a held GIL would stop for the look's length).
 * recv_looking: what spin_recv_into returns; poll_looking: what spin_until_readable
 * returns. *err is set to an errno other than EAGAIN and EINTR (the result then
 * -1, or 0 for poll_looking), or to -1 where a signal handler raised. */
static ssize_t
recv_looking(int fd, void *buf, size_t len, long long until, int signals, int *err)
{
    for (int tries = 0;; tries++) {
        int more;
        ssize_t got = recv(fd, buf, len, MSG_DONTWAIT);
        if (got >= 0)
            return tries > 0 ? -2 - got : got;  /* (-2 - got: came while we looked) */
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            if (errno != EINTR)
                *err = errno;
            return -1;  /* (EINTR, a signal: its handler runs after, before any sleep) */
        }
        more = look_again(tries, until, signals);
        if (more <= 0) {
            if (more < 0)
                *err = -1;
            return -1;
        }
    }
}

static int
poll_looking(struct pollfd *pfds, nfds_t n, long long until, int signals, int *err)
{
    for (int tries = 0;; tries++) {
        int got, more;
        got = poll(pfds, n, 0);
        if (got > 0)
            return tries > 0 ? 2 : 1;
        if (got < 0) {
            if (errno != EINTR)
                *err = errno;
            return 0;  /* (EINTR, a signal: its handler runs after) */
        }
        more = look_again(tries, until, signals);
        if (more <= 0) {
            if (more < 0)
                *err = -1;
            return 0;
        }
    }
}

/* After a look: its Python result, or NULL with the exception that err says. */
static PyObject *
look_result(long long result, int err, int nothing)
{
    if (err < 0)
        return NULL;  /* (a signal handler raised) */
    if (err > 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (result == nothing && PyErr_CheckSignals() < 0)
        return NULL;
    return PyLong_FromLongLong(result);
}

/* The optional last argument of the two looks: true to look with the GIL released
 * (recv_looking, poll_looking). 1 or 0; -1 with an exception. */
static int
without_gil_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t at)
{
    return nargs > at ? PyObject_IsTrue(args[at]) : 0;
}

static PyObject *
spin_recv_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    int fd;
    long long budget, until;
    ssize_t got;
    int without_gil, err = 0;

    (void)module;
    if (nargs != 3 && nargs != 4) {
        PyErr_Format(PyExc_TypeError, "spin_recv_into() takes 3 or 4 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (!fd_arg(args[0], &fd))
        return NULL;
    budget = PyLong_AsLongLong(args[2]);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    without_gil = without_gil_arg(args, nargs, 3);
    if (without_gil < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    until = monotonic_ns() + budget;
    if (without_gil) {
        Py_BEGIN_ALLOW_THREADS
        got = recv_looking(fd, view.buf, (size_t)view.len, until, 0, &err);
        Py_END_ALLOW_THREADS
    }
    else {
        got = recv_looking(fd, view.buf, (size_t)view.len, until, 1, &err);
    }
    PyBuffer_Release(&view);
    return look_result(got, err, -1);
}

/* spin_until_readable(fd, budget_ns, without_gil=False): poll() fd without waiting,
 * again and again for at most budget_ns nanoseconds, with the GIL held (or not, as
 * spin_recv_into), and read nothing: 1 when it was
 * readable at the first look, 2 when it became readable while looking, 0 when not
 * within the budget. For a connection whose reads take more than bytes (a socket
 * that may bring descriptors, read with recvmsg): its receiver looks with this,
 * then reads as it always does. fd may also be a sequence of descriptors, any of
 * which ends the look (connection.wait()). The same rules as spin_recv_into: one
 * look only where this process may run on one CPU, signals handled at once. */
static PyObject *
spin_until_readable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct pollfd stack[POLL_STACK_FDS];
    struct pollfd *pfds = stack;
    Py_ssize_t n = 1;
    long long budget, until;
    int seen, without_gil, err = 0;

    (void)module;
    if (nargs != 2 && nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "spin_until_readable() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    budget = PyLong_AsLongLong(args[1]);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    without_gil = without_gil_arg(args, nargs, 2);
    if (without_gil < 0)
        return NULL;
    if (PyLong_Check(args[0])) {
        if (!fd_arg(args[0], &stack[0].fd))
            return NULL;
        stack[0].events = POLLIN;
        stack[0].revents = 0;
    }
    else {
        pfds = pollfds_of(args[0], stack, &n,
                          "spin_until_readable() takes a descriptor or a sequence of them");
        if (pfds == NULL)
            return NULL;
    }
    until = monotonic_ns() + budget;
    if (without_gil) {
        Py_BEGIN_ALLOW_THREADS
        seen = poll_looking(pfds, (nfds_t)n, until, 0, &err);
        Py_END_ALLOW_THREADS
    }
    else {
        seen = poll_looking(pfds, (nfds_t)n, until, 1, &err);
    }
    if (pfds != stack)
        PyMem_Free(pfds);
    return look_result(seen, err, 0);
}

/* A byte count argument, not negative: 1, or 0 with an exception. */
static int
size_arg(PyObject *arg, Py_ssize_t *n)
{
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred())
        return 0;
    if (*n < 0) {
        PyErr_Format(PyExc_ValueError, "n must not be negative, not %zd", *n);
        return 0;
    }
    return 1;
}

/* Wait, the GIL released, until fd is readable (or hung up: the read that follows
 * says what happened): 0, or -1 with an exception (a signal handler's, or poll's). */
static int
wait_readable_forever(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
    int got, saved_errno;

    Py_BEGIN_ALLOW_THREADS
    got = poll(&pfd, 1, -1);
    saved_errno = errno;
    Py_END_ALLOW_THREADS
    if (got < 0 && saved_errno != EINTR) {
        errno = saved_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return PyErr_CheckSignals();
}

/* A receive straight into the bytes object recv_bytes() returns, where reading into
 * a buffer and copying out would cost a copy of the body per message (0.55 us for
 * 16 KiB, 1.7 us for 64 KiB on this VM: 4-5% of a one-core round trip, all of the
 * gap to multiprocessing, which reads into its bytes with os.read).
 *
 * read_rest_as_bytes(fd, head, n, is_socket): a new bytes object of n bytes: the
 * bytes of `head` (the start of the body, read with its frame's header), then what
 * fd brings, read after read until there are n, or end of file (the bytes object
 * is then shorter: the caller tells how much of the message came; a connection
 * reset, the peer's process dead, counts as end of file). A frame's rest is in a
 * socket once its first byte is (one send), so a socket is read without waiting,
 * the GIL held (letting it go would hand it to a thread that wants it, and this
 * one would wait to get it back); only where nothing is there (bytes not written
 * by a proctor sender) does it wait in poll() with the GIL released. A descriptor
 * that is not a socket (a pipe: no frame sockets there) is read with read(), the
 * GIL released. Signals are handled as os.read handles them (PEP 475): their
 * handlers run, and an exception one raises ends the read. */
static PyObject *
read_rest_as_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer head;
    PyObject *out;
    Py_ssize_t n, have;
    int fd, is_socket;

    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "read_rest_as_bytes() takes 4 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (!fd_arg(args[0], &fd) || !size_arg(args[2], &n))
        return NULL;
    is_socket = PyObject_IsTrue(args[3]);
    if (is_socket < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &head, PyBUF_SIMPLE) < 0)
        return NULL;
    if (n < head.len) {
        PyErr_Format(PyExc_ValueError, "n (%zd) is shorter than head (%zd bytes)", n,
                     head.len);
        PyBuffer_Release(&head);
        return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) {
        PyBuffer_Release(&head);
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(out), head.buf, (size_t)head.len);
    have = head.len;
    PyBuffer_Release(&head);
    while (have < n) {
        char *into = PyBytes_AS_STRING(out) + have;
        size_t want = (size_t)(n - have);
        ssize_t got = -1;
        int saved_errno = 0;

        if (is_socket) {
            got = recv(fd, into, want, MSG_DONTWAIT);
            saved_errno = errno;
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            got = read(fd, into, want);
            saved_errno = errno;
            Py_END_ALLOW_THREADS
        }
        if (got > 0) {
            have += got;
            continue;
        }
        if (got == 0 || saved_errno == ECONNRESET)
            break; /* end of file: the caller says how much came */
        if (saved_errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                goto fail;
            continue;
        }
        if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) {
            if (wait_readable_forever(fd) < 0)
                goto fail;
            continue;
        }
        errno = saved_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    if (have < n && _PyBytes_Resize(&out, have) < 0)
        return NULL;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* recv_datagram_as_bytes(fd, n, spill): one datagram from the socket fd, without
 * waiting, as (frame id, body): its first 8 bytes are the frame's id (big-endian,
 * _frames.FRAME_ID), the rest its body, received straight into a new bytes object
 * of n bytes (the length its frame header announced). A datagram longer than that
 * (another sender's, whose header is further on) has its tail received into
 * `spill` (writable, as long as the longest datagram) and joined after; a shorter
 * one's bytes object is cut to its size. (-1, b"") when the datagram is shorter
 * than an id. OSError as recv() would raise it (BlockingIOError: none there). */
static PyObject *
recv_datagram_as_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char id_bytes[8];
    struct iovec iov[3];
    struct msghdr msg;
    Py_buffer spill;
    PyObject *body;
    Py_ssize_t n, size;
    unsigned long long frame_id = 0;
    ssize_t got;
    int fd, saved_errno;

    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "recv_datagram_as_bytes() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!fd_arg(args[0], &fd) || !size_arg(args[1], &n))
        return NULL;
    if (PyObject_GetBuffer(args[2], &spill, PyBUF_WRITABLE) < 0)
        return NULL;
    body = PyBytes_FromStringAndSize(NULL, n);
    if (body == NULL) {
        PyBuffer_Release(&spill);
        return NULL;
    }
    iov[0].iov_base = id_bytes;
    iov[0].iov_len = sizeof(id_bytes);
    iov[1].iov_base = PyBytes_AS_STRING(body);
    iov[1].iov_len = (size_t)n;
    iov[2].iov_base = spill.buf;
    iov[2].iov_len = (size_t)spill.len;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = 3;
    do {
        got = recvmsg(fd, &msg, MSG_DONTWAIT);
        saved_errno = errno;
    } while (got < 0 && saved_errno == EINTR && PyErr_CheckSignals() == 0);
    if (got < 0) {
        if (saved_errno != EINTR) {
            errno = saved_errno;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        goto fail;
    }
    if ((size_t)got < sizeof(id_bytes)) {
        Py_DECREF(body);
        PyBuffer_Release(&spill);
        return Py_BuildValue("(iy#)", -1, "", (Py_ssize_t)0);
    }
    for (size_t i = 0; i < sizeof(id_bytes); i++)
        frame_id = (frame_id << 8) | id_bytes[i];
    size = (Py_ssize_t)got - (Py_ssize_t)sizeof(id_bytes);
    if (size < n) {
        if (_PyBytes_Resize(&body, size) < 0) {
            PyBuffer_Release(&spill);
            return NULL;
        }
    }
    else if (size > n) {
        PyObject *whole = PyBytes_FromStringAndSize(NULL, size);
        if (whole == NULL)
            goto fail;
        memcpy(PyBytes_AS_STRING(whole), PyBytes_AS_STRING(body), (size_t)n);
        memcpy(PyBytes_AS_STRING(whole) + n, spill.buf, (size_t)(size - n));
        Py_SETREF(body, whole);
    }
    PyBuffer_Release(&spill);
    return Py_BuildValue("(KN)", frame_id, body);
fail:
    Py_DECREF(body);
    PyBuffer_Release(&spill);
    return NULL;
}

static PyMethodDef native_methods[] = {
    {"let_go_in_forks", let_go_in_forks, METH_O,
     "let_go_in_forks(fd, /)\n--\n\n"
     "List fd among the descriptors that a process forked from this one points at "
     "/dev/null, before any Python runs there."},
    {"keep_in_forks", keep_in_forks, METH_O,
     "keep_in_forks(fd, /)\n--\n\n"
     "Take fd off that list (before this process closes it); nothing if not listed."},
    {"fds_let_go_in_forks", fds_let_go_in_forks, METH_NOARGS,
     "fds_let_go_in_forks()\n--\n\nThe listed descriptors, a tuple."},
    {"set_devnull", set_devnull, METH_O,
     "set_devnull(fd, /)\n--\n\nThe /dev/null descriptor that fork children point them at."},
    {"poll_readable", (PyCFunction)(void (*)(void))poll_readable, METH_FASTCALL,
     "poll_readable(fds, timeout_ms, /)\n--\n\n"
     "The readable ones of fds after one poll() of at most timeout_ms (-1: no limit); "
     "[] when it timed out or a signal interrupted it."},
    {"spin_recv_into", (PyCFunction)(void (*)(void))spin_recv_into, METH_FASTCALL,
     "spin_recv_into(fd, buffer, budget_ns, without_gil=False, /)\n--\n\n"
     "recv() into buffer without waiting, tried again for at most budget_ns with the "
     "GIL held (released with without_gil): the bytes read (0: end of file) at the "
     "first try, -2 - the bytes read later, or -1 when nothing came."},
    {"spin_until_readable", (PyCFunction)(void (*)(void))spin_until_readable, METH_FASTCALL,
     "spin_until_readable(fd, budget_ns, without_gil=False, /)\n--\n\n"
     "poll() fd (or any of a sequence of descriptors) without waiting, again for at "
     "most budget_ns with the GIL held (released with without_gil), reading nothing: "
     "1 if readable at once, 2 if it became readable meanwhile, 0 if not."},
    {"read_rest_as_bytes", (PyCFunction)(void (*)(void))read_rest_as_bytes, METH_FASTCALL,
     "read_rest_as_bytes(fd, head, n, is_socket, /)\n--\n\n"
     "A new bytes object of n bytes: head's, then read from fd (recv() without waiting "
     "where is_socket, else read()) until there are n; shorter at end of file or a "
     "connection reset."},
    {"recv_datagram_as_bytes", (PyCFunction)(void (*)(void))recv_datagram_as_bytes,
     METH_FASTCALL,
     "recv_datagram_as_bytes(fd, n, spill, /)\n--\n\n"
     "One datagram without waiting, as (frame id, body), the body received into a new "
     "bytes object of n bytes when it is that long; (-1, b'') when shorter than an id."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proctor._core._native",
    .m_doc = "The descriptors fork children let go of, and a poll for readable ones, in C "
             "(optional; see _native.c).",
    .m_size = -1,
    .m_methods = native_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module = PyModule_Create(&native_module);

    if (module == NULL)
        return NULL;
    if (PyModule_AddStringConstant(module, "SOURCE_DIGEST", PROCTOR_SOURCE_DIGEST) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
