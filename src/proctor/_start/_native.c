/* proctor._start._native: a parent-death signal without ctypes; fork; fork-server hot paths.
 *
 * Optional: built with the other C modules when a C compiler is present
 * (hatch_build.py). Every child calls set_parent_death_signal once, first thing
 * (_bootstrap.arm_parent_death); without this module it calls libc's prctl
 * through _ctypes, which costs a spawned child the loading of _ctypes and libffi
 * (~1 M instructions, ~0.6 ms) and a forked child the pages that a foreign call
 * writes. Importing the module loads no other module::
 *
 *     set_parent_death_signal(signum)   prctl(PR_SET_PDEATHSIG, signum)
 *                                       ─▶ None, or OSError (errno)
 *     watch_parent(parent_pid)          a native thread that kills this process
 *                                       (SIGKILL) when parent_pid is no longer its
 *                                       parent; needs no GIL ─▶ None, or OSError
 *     fork_start(own_threads)           os.fork() for a fork start (Python 3.12+);
 *                                       own_threads() ─▶ the native ids of
 *                                       proctor's fork-safe threads (a tuple)
 *                                       ─▶ 0 in the child, the pid in the parent
 *     take_request(sock, spare, reply)  read a message (_core._wire's framing); if
 *                                       it is a plain start and a spare waits (the
 *                                       fork server), hand the spare its descriptors
 *                                       and send the reply on sock
 *                                       ─▶ the request's status descriptor; else
 *                                       ─▶ (data, fds, spare_failed)
 *     report_exits(status_fds)          the fork server's children that ended:
 *                                       reap each, write its exit code to its
 *                                       status descriptor ─▶ [(pid, exitcode)]
 *     claim_learning(region)            whether the next child forked is to learn
 *                                       the pages children write (and now does)
 *     learn_pages(region)               record the pages this child wrote
 *                                       ─▶ how many ranges were recorded
 *     warm_up(region, stop_fd)          copy those pages ahead, until stop_fd is
 *                                       readable ─▶ pages copied, or -1
 *
 * take_request and report_exits are the fork server's hot paths (_forkserver) in C,
 * for what they do not write: after the server forks a spare, every page it or the
 * spare writes is copied. In Python, reading a request, handing it over and replying wrote ~40
 * pages in the server (the functions called, the objects made: ~150 us between a
 * parent's request and its child's first step); the spare's reading of it ~45 more;
 * reaping a child and writing its exit code ~11.
 *
 * fork_start is os.fork() -- the "os.fork" audit event, the at-fork hooks
 * (PyOS_BeforeFork, PyOS_AfterFork_Child/_Parent) -- except for the warning that
 * Python 3.12+ gives when a process with more than one thread forks. os.fork()
 * counts the process's threads (/proc/self/stat) after the fork and warns
 * through the warnings machinery: with the log listener's thread alive (a
 * parent that forwards its children's logs) it warned the user, at every fork
 * start, about a thread of proctor's that its fork hooks make safe to fork
 * with. (Not for speed: the two cost the same within noise.) Here the threads are
 * counted after the before-fork hooks and just before fork(), as os.fork() counts
 * them (from /proc/self/stat, else from the threading module), those of
 * own_threads() (proctor's, fork-safe; asked before the hooks, as no Python code
 * may run after them, and each checked to be alive after the count) are not
 * counted, nor watch_parent's threads (from /proc, which sees them; they hold no
 * lock), and the same DeprecationWarning is given in the parent after the fork
 * (any error from it swallowed, as 3.12 and 3.13 do) if any other thread remains.
 *
 * watch_parent is the parent-death watch of a child that cannot use the signal
 * (started from a thread of its parent, whose death the signal would follow; every
 * child on macOS). A Python thread that watches needs the GIL to act, and a target
 * inside one long C call (a regex that backtracks, a C extension's loop) never lets
 * it go: such a child outlived its SIGKILLed parent for ever. The thread here never
 * touches Python: it blocks in poll() on a pidfd of the parent (Linux), or looks at
 * getppid() every WATCH_INTERVAL_NS elsewhere (and where a pidfd cannot be had),
 * then calls kill(getpid(), SIGKILL). The pidfd lives in a descriptor table of the
 * thread's own (close_range(CLOSE_RANGE_UNSHARE), Linux 5.9): no other thread sees
 * it, so no child inherits it (fork copies the forking thread's table) and no code
 * that closes descriptors by number (closerange, a fork server's child) can close
 * it or make its number another file's. Where that table cannot be had (an older
 * kernel, a seccomp filter), no pidfd is opened and getppid() is polled. Threads do
 * not survive fork: a forked child arms a watch of its own (_bootstrap), and the
 * count of watches (for fork_start's warning) is reset in it. At exit the thread,
 * detached and blocked in a system call, dies with the process.
 *
 * Warm spares (claim_learning, learn_pages, warm_up). A child of the fork server
 * copies each page of the server's that it writes (copy on write): ~130 between
 * reading its start message and its target, for a no-op target; with the Python that
 * writes them, ~0.8 ms of CPU of a ~2 ms start on a 2-CPU VM (issue 17). A spare waits
 * idle for its request, so it can have those pages copied first, in one system call
 * per range rather than one fault per page. Which pages: the first child the server
 * forks (after each change of what it has loaded) learns them. Just before its target
 * runs it reads /proc/self/pagemap for the pages that only it maps, in private
 * writable mappings (the server's pages it copied, and any it added), and writes them
 * as ranges into a region the server shares with all its children. A spare forked
 * later, its own preparation done, has the kernel copy those ranges
 * (madvise(MADV_POPULATE_WRITE), Linux 5.14) and stops as soon as its request
 * arrives: the request never waits for the warming. Every spare is a fork of the
 * same server, so an address names the same page in each; one that is not mapped
 * (any more) is skipped. A kernel without MADV_POPULATE_WRITE, or without
 * /proc/self/pagemap, marks the region LEARN_FAILED: no spare tries again.
 *
 * set_parent_death_signal, take_request, report_exits, fork_start and the warm
 * spares are Linux only: elsewhere the module has watch_parent alone (there is no
 * prctl), and a fork start calls os.fork().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* This file's digest (its CRC-32 and length, 16 hex digits), passed by hatch_build.py:
   the loader (_core/_accel.py) refuses a module built from older source. */
#ifndef PROCTOR_SOURCE_DIGEST
#define PROCTOR_SOURCE_DIGEST ""
#endif

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

/* How often the watch looks at getppid() where it has no pidfd: well inside the
   one-second promise, and a wake-up five times a second costs nothing to see. */
#define WATCH_INTERVAL_NS 200000000L
/* The watch thread's stack: it calls a few system calls and nothing else. */
#define WATCH_STACK_SIZE (64 * 1024)
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1) /* linux/close_range.h, Linux 5.9 */
#endif

/* The watch threads running in this process (the GIL guards it; reset in a fork
   child, which has none): fork_start does not count them against a fork. */
static long watch_threads = 0;
static int watch_atfork_registered = 0;

static void
watch_forget_at_fork(void)
{
    watch_threads = 0;
}

/* A pidfd of parent in a descriptor table of this thread's own, empty besides it;
   -1 where there is none to have (see the module's comment). */
static int
open_private_pidfd(pid_t parent)
{
#if defined(__linux__) && defined(SYS_close_range) && defined(SYS_pidfd_open)
    /* (Unsharing a table that holds only what is closed copies nothing.) */
    if (syscall(SYS_close_range, 0U, ~0U, CLOSE_RANGE_UNSHARE) != 0)
        return -1;
    return (int)syscall(SYS_pidfd_open, parent, 0U);
#else
    (void)parent;
    return -1;
#endif
}

/* watch_parent's hand-over to its thread, on watch_parent's stack: the thread
   reads parent, and says when it is set up, after which it touches this no more. */
struct watch_start {
    pid_t parent;
    int set_up;
    pthread_mutex_t lock;
    pthread_cond_t done;
};

static void *
watch_parent_thread(void *arg)
{
    struct watch_start *start = arg;
    pid_t parent = start->parent;
    struct timespec interval = {0, WATCH_INTERVAL_NS};

#ifdef __linux__
    /* (What a look at the process's threads sees: /proc/PID/task/TID/comm.) */
    prctl(PR_SET_NAME, (unsigned long)"proctor-watch", 0UL, 0UL, 0UL);
#endif
    int pidfd = open_private_pidfd(parent);

    pthread_mutex_lock(&start->lock);
    start->set_up = 1;
    pthread_cond_signal(&start->done);
    pthread_mutex_unlock(&start->lock);
    /* While parent is our parent, it can be neither reaped nor its pid reused:
       checked after pidfd_open, the pidfd is our parent's, not a newer process's.
       It turns readable when the parent has ended, after we were reparented. */
    if (pidfd >= 0 && getppid() == parent) {
        struct pollfd wait = {pidfd, POLLIN, 0};

        while (poll(&wait, 1, -1) < 0 && errno == EINTR)
            ;
    }
    /* (Also where poll failed: then the polling below does the watch.) */
    while (getppid() == parent)
        nanosleep(&interval, NULL);
    kill(getpid(), SIGKILL);
    return NULL;
}

static PyObject *
watch_parent(PyObject *module, PyObject *arg)
{
    long parent = PyLong_AsLong(arg);
    struct watch_start start;
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    int error;

    (void)module;
    if (parent == -1 && PyErr_Occurred())
        return NULL;
    if (parent <= 0 || (long)(pid_t)parent != parent) {
        PyErr_Format(PyExc_ValueError, "parent_pid must be a process id, not %ld", parent);
        return NULL;
    }
    if (getppid() != (pid_t)parent) /* it is gone already: do not run the target */
        kill(getpid(), SIGKILL);
    if (!watch_atfork_registered) {
        error = pthread_atfork(NULL, NULL, watch_forget_at_fork);
        if (error != 0) {
            errno = error;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        watch_atfork_registered = 1;
    }
    start.parent = (pid_t)parent;
    start.set_up = 0;
    error = pthread_mutex_init(&start.lock, NULL);
    if (error == 0) {
        error = pthread_cond_init(&start.done, NULL);
        if (error != 0)
            pthread_mutex_destroy(&start.lock);
    }
    if (error != 0) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    error = pthread_attr_init(&attr);
    if (error == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* (Refused below the system's minimum: the default stack then.) */
        pthread_attr_setstacksize(&attr, WATCH_STACK_SIZE);
        /* Every signal blocked in the thread (it inherits this mask), so that none
           is delivered to it: they go to the threads that handle them. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        error = pthread_create(&thread, &attr, watch_parent_thread, &start);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (error == 0) {
        /* Returns with the watch in place (its pidfd open): a few system calls away.
           (The GIL stays held: the thread never asks for it.) */
        pthread_mutex_lock(&start.lock);
        while (!start.set_up)
            pthread_cond_wait(&start.done, &start.lock);
        pthread_mutex_unlock(&start.lock);
    }
    pthread_cond_destroy(&start.done);
    pthread_mutex_destroy(&start.lock);
    if (error != 0) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    watch_threads++;
    Py_RETURN_NONE;
}

#ifdef __linux__
static PyObject *
set_parent_death_signal(PyObject *module, PyObject *arg)
{
    long signum = PyLong_AsLong(arg); /* PyLong_AsInt is 3.13's */

    if (signum == -1 && PyErr_Occurred())
        return NULL;
    (void)module;
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)signum, 0UL, 0UL, 0UL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}
#endif

#ifdef __linux__
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* _core._wire's framing: <length:u64 little-endian><kind:u8>, then the data inline
 * or, for a spilled message, in a file whose descriptor comes first. */
#define WIRE_HEADER 9
#define WIRE_INLINE 0
#define WIRE_SPILLED 1
#define WIRE_INLINE_MAX (64 * 1024)
#define WIRE_MAX_FDS 253
/* A start request's descriptors: the child's channel, its status socket (the
 * server's to write), stdout, stderr. */
#define REQUEST_FDS 4
/* Received descriptors close-on-exec, as Python's own are (PEP 446; _wire.cloexec_flag). */
#define RECV_CLOEXEC MSG_CMSG_CLOEXEC

/* Read len bytes: from a stream socket with recv(), or from a file's start with pread()
 * (positioned): 0, or -1 with errno set (0 at the end of the data). */
static int
read_fully(int fd, char *buffer, size_t len, int positioned)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = positioned ? pread(fd, buffer + got, len - got, (off_t)got)
                               : recv(fd, buffer + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = 0;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Read a spilled message's len bytes from its file: 0, or -1 with errno set (0: short). */
static int
read_spilled(int fd, char *buffer, size_t len)
{
    struct stat st;

    if (fstat(fd, &st) != 0)
        return -1;
    if ((uint64_t)st.st_size != (uint64_t)len) {
        errno = 0;
        return -1;
    }
    return read_fully(fd, buffer, len, 1);
}

static void
close_all(const int *fds, int count)
{
    for (int i = 0; i < count; i++)
        close(fds[i]);
}

/* Send len bytes on a stream socket: 0, or -1 with errno set. */
static int
send_all(int sock, const char *data, size_t len)
{
    size_t sent = 0;

    while (sent < len) {
        ssize_t n = send(sock, data + sent, len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        sent += (size_t)n;
    }
    return 0;
}

/* Send a header-only message (no data) with count descriptors: 0, or -1 with errno. */
static int
send_descriptors(int sock, const int *fds, int count)
{
    char header[WIRE_HEADER] = {0}; /* length 0, kind WIRE_INLINE */
    union {
        char buffer[CMSG_SPACE(REQUEST_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {header, WIRE_HEADER};
    struct msghdr msg;
    ssize_t n;

    memset(&control, 0, sizeof(control));
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buffer;
    msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(count * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, count * sizeof(int));
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    /* The descriptors went with the first byte; the rest of the header is plain. */
    return send_all(sock, header + n, WIRE_HEADER - (size_t)n);
}

/* An error while reading the request: OSError for errno, else EOFError (the parent
 * closed its end, or sent something that is not a message). */
static PyObject *
request_error(const char *what)
{
    if (errno != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyErr_Format(PyExc_EOFError, "the fork server's request: %s", what);
    return NULL;
}

static PyObject *
take_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    char header[WIRE_HEADER];
    int fds[WIRE_MAX_FDS];
    int nfds = 0;
    union {
        char buffer[CMSG_SPACE(WIRE_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {header, WIRE_HEADER};
    struct msghdr msg;
    ssize_t got;
    Py_buffer reply;
    char *data = NULL;
    PyObject *result = NULL, *fd_list = NULL;
    uint64_t length = 0;
    int kind, spare_failed = 0;

    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "take_request() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int ctl = PyObject_AsFileDescriptor(args[0]);
    long spare;

    if (ctl < 0)
        return NULL;
    spare = PyLong_AsLong(args[1]);
    if (spare == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[2], &reply, PyBUF_SIMPLE) < 0)
        return NULL;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buffer;
    msg.msg_controllen = sizeof(control.buffer);
    do {
        got = recvmsg(ctl, &msg, RECV_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    if (got > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (count > WIRE_MAX_FDS - nfds)
                count = WIRE_MAX_FDS - nfds;
            memcpy(fds + nfds, CMSG_DATA(c), count * sizeof(int));
            nfds += count;
        }
    }
    if (got <= 0) {
        if (got == 0)
            errno = 0;
        request_error("the parent closed its end");
        goto done;
    }
    if ((size_t)got < WIRE_HEADER
        && read_fully(ctl, header + got, WIRE_HEADER - (size_t)got, 0) < 0) {
        request_error("the parent closed its end within a header");
        goto done;
    }
    for (int i = 7; i >= 0; i--)
        length = (length << 8) | (unsigned char)header[i];
    kind = (unsigned char)header[8];
    if (!((kind == WIRE_INLINE && length <= WIRE_INLINE_MAX)
          || (kind == WIRE_SPILLED && nfds > 0 && length <= (uint64_t)PY_SSIZE_T_MAX))) {
        errno = 0;
        request_error("a corrupt frame header");
        goto done;
    }
    if (length > 0) {
        data = malloc((size_t)length);
        if (data == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        if (kind == WIRE_SPILLED) {
            int spilled = fds[0];
            int failed = read_spilled(spilled, data, (size_t)length);
            close(spilled);
            memmove(fds, fds + 1, (nfds - 1) * sizeof(int));
            nfds--;
            if (failed < 0) {
                request_error("a spilled message without its whole file");
                goto done;
            }
        }
        else if (read_fully(ctl, data, (size_t)length, 0) < 0) {
            request_error("the parent closed its end within a message");
            goto done;
        }
    }
    if (length == 0 && nfds == REQUEST_FDS && spare >= 0) {
        int handed[3] = {fds[0], fds[2], fds[3]}; /* all but the status socket */
        if (send_descriptors((int)spare, handed, 3) == 0) {
            close_all(handed, 3);
            int status = fds[1];
            nfds = 0; /* the status descriptor is the caller's now */
            if (send_all(ctl, reply.buf, (size_t)reply.len) < 0) {
                close(status);
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
            result = PyLong_FromLong((long)status);
            if (result == NULL)
                close(status);
            goto done;
        }
        spare_failed = 1; /* it died before it was reaped: the caller forks */
    }
    fd_list = PyList_New(nfds);
    if (fd_list == NULL)
        goto done;
    for (int i = 0; i < nfds; i++) {
        PyObject *number = PyLong_FromLong((long)fds[i]);
        if (number == NULL) {
            Py_DECREF(fd_list);
            goto done;
        }
        PyList_SET_ITEM(fd_list, i, number);
    }
    result = Py_BuildValue("(y#NO)", data == NULL ? "" : data, (Py_ssize_t)length, fd_list,
                           spare_failed ? Py_True : Py_False);
    if (result != NULL)
        nfds = 0; /* the caller's now */

done:
    if (result == NULL)
        close_all(fds, nfds);
    free(data);
    PyBuffer_Release(&reply);
    return result;
}

#include <sys/wait.h>

static PyObject *
report_exits(PyObject *module, PyObject *status_fds)
{
    PyObject *reaped;

    (void)module;
    if (!PyDict_Check(status_fds)) {
        PyErr_Format(PyExc_TypeError, "status_fds must be a dict of pid to descriptor, not %.100s",
                     Py_TYPE(status_fds)->tp_name);
        return NULL;
    }
    reaped = PyList_New(0);
    if (reaped == NULL)
        return NULL;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            break; /* none ended (0), or no child left (ECHILD) */
        int exitcode = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
        PyObject *key = PyLong_FromLong((long)pid);
        if (key == NULL)
            goto error; /* (this child's code is lost with the error) */
        PyObject *fd = PyDict_GetItemWithError(status_fds, key); /* borrowed */
        Py_DECREF(key);
        if (fd == NULL && PyErr_Occurred())
            goto error;
        if (fd != NULL) {
            long number = PyLong_AsLong(fd);
            if (number == -1 && PyErr_Occurred())
                goto error;
            /* _forkserver.EXIT_STATUS: a little-endian int32. */
            unsigned char code[4];
            uint32_t bits = (uint32_t)exitcode;
            for (int i = 0; i < 4; i++)
                code[i] = (unsigned char)(bits >> (8 * i));
            ssize_t n;
            do {
                n = write((int)number, code, sizeof(code));
            } while (n < 0 && errno == EINTR);
            /* (A failed write: the parent closed the process object already.) */
        }
        PyObject *entry = Py_BuildValue("(li)", (long)pid, exitcode);
        if (entry == NULL || PyList_Append(reaped, entry) < 0) {
            Py_XDECREF(entry);
            goto error;
        }
        Py_DECREF(entry);
    }
    return reaped;

error:
    Py_DECREF(reaped);
    return NULL;
}

/* -- warm spares (see the module's comment) -------------------------------- */

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* linux/mman.h, Linux 5.14 */
#endif
/* The region's words: its state, the number of ranges, the learner's pid, then
   (start, pages) pairs. */
#define LEARN_NONE 0   /* nothing learned: the next child forked learns */
#define LEARN_BUSY 1   /* a learner was forked and has not finished */
#define LEARN_DONE 2   /* the ranges are there to warm */
#define LEARN_FAILED 3 /* this kernel cannot: no child tries again */
#define REGION_HEADER_WORDS 3
/* pagemap's bits: the page is present; only this process maps it. */
#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_EXCLUSIVE (1ULL << 56)
/* pagemap entries read at a time, and how many pages warm_up copies between two
   looks at its request. */
#define PAGEMAP_CHUNK 512
#define WARM_STEP_PAGES 16

/* The region as words; NULL (with an error set) unless it is a writable buffer
   with room for the header. */
static uint64_t *
region_words(PyObject *region, Py_buffer *view, Py_ssize_t *capacity)
{
    if (PyObject_GetBuffer(region, view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (view->len < (Py_ssize_t)((REGION_HEADER_WORDS + 2) * sizeof(uint64_t))
        || ((uintptr_t)view->buf % sizeof(uint64_t)) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError,
                        "region must be a writable, word-aligned buffer of at least 40 bytes");
        return NULL;
    }
    /* How many (start, pages) pairs fit after the header. */
    *capacity = (view->len / (Py_ssize_t)sizeof(uint64_t) - REGION_HEADER_WORDS) / 2;
    return view->buf;
}

static PyObject *
claim_learning(PyObject *module, PyObject *region)
{
    Py_buffer view;
    Py_ssize_t capacity;
    uint64_t *words = region_words(region, &view, &capacity);
    uint64_t expected = LEARN_NONE;

    (void)module;
    if (words == NULL)
        return NULL;
    int claimed = __atomic_compare_exchange_n(&words[0], &expected, LEARN_BUSY, 0,
                                              __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyBool_FromLong(claimed);
}

/* Append the exclusive, present pages of [low, high) to the ranges: 0, or -1 with
   errno set (pagemap unreadable). *count stops growing at capacity. */
static int
record_exclusive(int pagemap, uint64_t low, uint64_t high, long page, uint64_t *ranges,
                 Py_ssize_t capacity, Py_ssize_t *count)
{
    uint64_t entries[PAGEMAP_CHUNK];

    for (uint64_t at = low; at < high && *count < capacity;) {
        size_t want = (size_t)((high - at) / (uint64_t)page);
        if (want > PAGEMAP_CHUNK)
            want = PAGEMAP_CHUNK;
        ssize_t got = pread(pagemap, entries, want * sizeof(uint64_t),
                            (off_t)(at / (uint64_t)page * sizeof(uint64_t)));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got < 0 ? -1 : 0;
        size_t n = (size_t)got / sizeof(uint64_t);
        for (size_t i = 0; i < n && *count < capacity; i++) {
            uint64_t address = at + i * (uint64_t)page;
            uint64_t flags = entries[i] & (PAGEMAP_PRESENT | PAGEMAP_EXCLUSIVE);
            if (flags != (PAGEMAP_PRESENT | PAGEMAP_EXCLUSIVE))
                continue;
            uint64_t *last = *count > 0 ? &ranges[2 * (*count - 1)] : NULL;
            if (last != NULL && last[0] + last[1] * (uint64_t)page == address)
                last[1]++;
            else {
                ranges[2 * *count] = address;
                ranges[2 * *count + 1] = 1;
                (*count)++;
            }
        }
        at += n * (uint64_t)page;
    }
    return 0;
}

static PyObject *
learn_pages(PyObject *module, PyObject *region)
{
    Py_buffer view;
    Py_ssize_t capacity, count = 0;
    uint64_t *words = region_words(region, &view, &capacity);
    uint64_t *ranges;
    long page = sysconf(_SC_PAGESIZE);
    char line[512];
    int failed = 0;

    (void)module;
    if (words == NULL)
        return NULL;
    ranges = words + REGION_HEADER_WORDS;
    FILE *maps = fopen("/proc/self/maps", "re");
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (maps == NULL || pagemap < 0 || page <= 0)
        failed = 1;
    /* Each line: "low-high perms offset dev inode [name]". Private writable
       mappings only: a shared one is no copy, and nothing else is written. */
    while (!failed && fgets(line, sizeof(line), maps) != NULL) {
        unsigned long long low, high;
        char perms[5];
        size_t length = strlen(line);

        if (length > 0 && line[length - 1] != '\n' && !feof(maps)) {
            /* A name longer than the line: drop the rest of it. */
            int c;
            while ((c = fgetc(maps)) != EOF && c != '\n')
                ;
        }
        if (sscanf(line, "%llx-%llx %4s", &low, &high, perms) != 3)
            continue;
        if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p')
            continue;
        if (record_exclusive(pagemap, low, high, page, ranges, capacity, &count) < 0)
            failed = 1;
        if (count >= capacity)
            break; /* full: the first ones are warmed, the rest are not */
    }
    if (maps != NULL)
        fclose(maps);
    if (pagemap >= 0)
        close(pagemap);
    words[1] = (uint64_t)count;
    words[2] = (uint64_t)getpid();
    /* The ranges and their count before the state that says they are there. */
    __atomic_store_n(&words[0], failed ? LEARN_FAILED : LEARN_DONE, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(failed ? -1 : count);
}

/* Whether fd is readable now (its request came, or its peer closed). */
static int
readable_now(int fd)
{
    struct pollfd check = {fd, POLLIN, 0};
    int n;

    do {
        n = poll(&check, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0;
}

static PyObject *
warm_up(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t capacity;
    uint64_t *words;
    long page = sysconf(_SC_PAGESIZE);
    long warmed = 0;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "warm_up() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    int stop = PyObject_AsFileDescriptor(args[1]);
    if (stop < 0)
        return NULL;
    words = region_words(args[0], &view, &capacity);
    if (words == NULL)
        return NULL;
    if (__atomic_load_n(&words[0], __ATOMIC_ACQUIRE) != LEARN_DONE) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(0);
    }
    uint64_t count = words[1];
    const uint64_t *ranges = words + REGION_HEADER_WORDS;

    if (count > (uint64_t)capacity)
        count = (uint64_t)capacity;
    for (uint64_t r = 0; r < count; r++) {
        uint64_t start = ranges[2 * r], pages = ranges[2 * r + 1];

        for (uint64_t done = 0; done < pages; done += WARM_STEP_PAGES) {
            uint64_t step = pages - done < WARM_STEP_PAGES ? pages - done : WARM_STEP_PAGES;

            if (readable_now(stop))
                goto done;
            if (madvise((void *)(uintptr_t)(start + done * (uint64_t)page),
                        (size_t)(step * (uint64_t)page), MADV_POPULATE_WRITE) == 0)
                warmed += (long)step;
            else if (errno == EINVAL) {
                /* This kernel has no MADV_POPULATE_WRITE: no spare tries again. */
                __atomic_store_n(&words[0], LEARN_FAILED, __ATOMIC_RELEASE);
                warmed = -1;
                goto done;
            }
            /* (ENOMEM, EFAULT: not mapped here, or not writable: skipped.) */
        }
    }
done:
    PyBuffer_Release(&view);
    return PyLong_FromLong(warmed);
}
#endif

#if defined(__linux__) && PY_VERSION_HEX >= 0x030C0000
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* The number of threads of this process (field 20 of /proc/self/stat), or -1. */
static long
count_threads(void)
{
    char line[1024];
    ssize_t got;
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    do {
        got = read(fd, line, sizeof(line) - 1);
    } while (got < 0 && errno == EINTR);
    close(fd);
    if (got <= 0)
        return -1;
    line[got] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the
     * fields are counted from the last ')'; after it come field 3 (state) on. */
    char *p = strrchr(line, ')');
    if (p == NULL)
        return -1;
    for (int field = 2; field < 20; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return -1;
    }
    char *end;
    long threads = strtol(p + 1, &end, 10);
    return end == p + 1 ? -1 : threads;
}

/* The names count_python_threads looks up, made before the fork (see fork_start). */
static PyObject *threading_name, *active_name, *limbo_name;

/* The threads os.fork() counts where /proc cannot be read: those the threading
 * module knows (running and starting), if it is imported; else -1, with any
 * error cleared (a count never stops the fork). Called between PyOS_BeforeFork()
 * and fork(), so it runs no Python code: sys.modules and the module's dict are
 * read as dicts (PyImport_GetModule may call importlib for a module being
 * imported), with names made beforehand. */
static long
count_python_threads(void)
{
    long threads = -1;
    PyObject *modules = PyImport_GetModuleDict(); /* (borrowed) */
    PyObject *threading = PyDict_Check(modules)
                              ? PyDict_GetItemWithError(modules, threading_name)
                              : NULL; /* (borrowed) */

    if (threading != NULL && PyModule_Check(threading)) {
        PyObject *globals = PyModule_GetDict(threading); /* (borrowed) */
        PyObject *active = PyDict_GetItemWithError(globals, active_name);
        PyObject *limbo = active == NULL ? NULL : PyDict_GetItemWithError(globals, limbo_name);

        if (limbo != NULL && PyDict_Check(active) && PyDict_Check(limbo))
            threads = (long)(PyDict_GET_SIZE(active) + PyDict_GET_SIZE(limbo));
    }
    PyErr_Clear();
    return threads;
}

/* At most this many threads own_threads() may name (there is one: the log
 * listener's). */
#define MAX_OWN_THREADS 16

/* own_threads()'s thread ids, into tids: how many, or -1 with an exception set. */
static Py_ssize_t
own_thread_ids(PyObject *own_threads, long *tids)
{
    PyObject *got = PyObject_CallNoArgs(own_threads);
    Py_ssize_t count = -1;

    if (got == NULL)
        return -1;
    if (!PyTuple_Check(got)) {
        PyErr_Format(PyExc_TypeError,
                     "own_threads() must return a tuple of thread ids, not %.100s",
                     Py_TYPE(got)->tp_name);
        goto done;
    }
    if (PyTuple_GET_SIZE(got) > MAX_OWN_THREADS) {
        PyErr_Format(PyExc_ValueError, "own_threads() named %zd threads, more than %d",
                     PyTuple_GET_SIZE(got), MAX_OWN_THREADS);
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(got); i++) {
        long tid = PyLong_AsLong(PyTuple_GET_ITEM(got, i));

        if (tid == -1 && PyErr_Occurred())
            goto done;
        if (tid <= 0 || (long)(pid_t)tid != tid) {
            PyErr_Format(PyExc_ValueError,
                         "own_threads() must name threads by their native id, not %ld", tid);
            goto done;
        }
        tids[i] = tid;
    }
    count = PyTuple_GET_SIZE(got);
done:
    Py_DECREF(got);
    return count;
}

/* How many of the threads tids names still run (tgkill with no signal: ESRCH once a
 * thread has ended and left /proc; the count and this see the same threads). */
static long
living_threads(const long *tids, Py_ssize_t count)
{
    pid_t pid = getpid();
    long living = 0;

    for (Py_ssize_t i = 0; i < count; i++)
        if (syscall(SYS_tgkill, pid, (pid_t)tids[i], 0) == 0)
            living++;
    return living;
}

static PyObject *
fork_start(PyObject *module, PyObject *own_threads)
{
    pid_t pid;
    int saved_errno;
    long threads, own, tids[MAX_OWN_THREADS];
    Py_ssize_t named;

    (void)module;
    if (!PyCallable_Check(own_threads)) {
        PyErr_Format(PyExc_TypeError,
                     "own_threads must be a function that returns the native ids of "
                     "proctor's threads that are fork-safe, not %.100s",
                     Py_TYPE(own_threads)->tp_name);
        return NULL;
    }
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        /* Where os.fork() may fork, its child dies at once (the runtime deletes
         * every interpreter but the main one in a fork child). */
        PyErr_SetString(PyExc_RuntimeError,
                        "a fork start runs only in the main interpreter, not in a "
                        "subinterpreter; use the spawn start method there");
        return NULL;
    }
    if (threading_name == NULL
        && ((threading_name = PyUnicode_InternFromString("threading")) == NULL
            || (active_name = PyUnicode_InternFromString("_active")) == NULL
            || (limbo_name = PyUnicode_InternFromString("_limbo")) == NULL)) {
        Py_CLEAR(threading_name);
        Py_CLEAR(active_name);
        return NULL;
    }
    /* Asked before PyOS_BeforeFork(), not after: no Python code may run between it
     * and fork(). On 3.13 it returns holding the runtime's lock on its list of
     * interpreters (HEAD_LOCK); code that let the GIL go there (the eval breaker)
     * to a thread that starts a thread (which takes that lock, keeping the GIL)
     * deadlocked both. What it returns stays true to the count below: the threads
     * it names are checked again (living_threads) after the count, with no Python
     * code run in between, so one that ended meanwhile (during the hooks) is no
     * longer left out. */
    named = own_thread_ids(own_threads, tids);
    if (named < 0)
        return NULL;
    if (PySys_Audit("os.fork", NULL) < 0)
        return NULL;
    PyOS_BeforeFork();
    /* Counted after the before-fork hooks, as os.fork() counts after them (a hook
     * may stop a thread); then the threads named above that still run: a thread
     * that ends between the two is counted and not left out, so at worst, rarely,
     * the warning is given (never missed). The watch threads are fork-safe too:
     * they hold no lock, and the child arms a watch of its own
     * (count_python_threads does not see them). */
    threads = count_threads();
    if (threads < 0)
        threads = count_python_threads();
    else
        threads -= watch_threads;
    own = living_threads(tids, named);
    pid = fork();
    saved_errno = errno;
    if (pid == 0) {
        PyOS_AfterFork_Child();
    }
    else {
        PyOS_AfterFork_Parent();
        /* In the parent after the fork, in os.fork()'s words, as it does; and as
         * there (3.12, 3.13), nothing the warning raises (-W error) undoes the fork. */
        if (threads - own > 1
            && PyErr_WarnFormat(PyExc_DeprecationWarning, 1,
                                "This process (pid=%d) is multi-threaded, use of fork() "
                                "may lead to deadlocks in the child.",
                                (int)getpid()) < 0)
            PyErr_Clear();
    }
    if (pid < 0) {
        errno = saved_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong((long)pid);
}
#endif

static PyMethodDef native_methods[] = {
    {"watch_parent", watch_parent, METH_O,
     "watch_parent(parent_pid, /)\n--\n\n"
     "Start a native thread that kills this process (SIGKILL) once parent_pid is no "
     "longer its parent, without the GIL: a pidfd of the parent in a descriptor table "
     "of the thread's own where the kernel allows, else getppid() every 0.2 s. Kills "
     "at once if parent_pid is not the parent now. OSError if the thread cannot start."},
#ifdef __linux__
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "set_parent_death_signal(signum, /)\n--\n\n"
     "Have the kernel send signum to this process when the thread that created it "
     "ends (prctl PR_SET_PDEATHSIG); OSError if it refuses."},
#endif
#ifdef __linux__
    {"take_request", (PyCFunction)(void (*)(void))take_request, METH_FASTCALL,
     "take_request(sock, spare, reply, /)\n--\n\n"
     "Read one message from sock. A plain start (no data, four descriptors) with "
     "a spare waiting (spare >= 0): hand the spare the child's channel, stdout "
     "and stderr, send reply on sock and return the status descriptor. Otherwise "
     "return (data, fds, spare_failed). EOFError when the peer closed its end "
     "(or sent no message), OSError on other errors."},
    {"report_exits", report_exits, METH_O,
     "report_exits(status_fds, /)\n--\n\n"
     "Reap every child of this process that has ended; for each whose pid is a key "
     "of status_fds, write its exit code (little-endian int32) to that descriptor. "
     "Returns [(pid, exitcode)] in the order reaped."},
    {"claim_learning", claim_learning, METH_O,
     "claim_learning(region, /)\n--\n\n"
     "Whether nothing is learned in region (a shared, writable buffer, zeroed when "
     "made) and no learner runs: if so, the next child is the learner, and region "
     "says so from now on."},
    {"learn_pages", learn_pages, METH_O,
     "learn_pages(region, /)\n--\n\n"
     "Record in region, as (start, pages) ranges, the pages in private writable "
     "mappings that only this process maps (/proc/self/pagemap): the pages it "
     "copied or added. Returns the number of ranges, or -1 if pagemap cannot be "
     "read (region then says no child should try)."},
    {"warm_up", (PyCFunction)(void (*)(void))warm_up, METH_FASTCALL,
     "warm_up(region, stop_fd, /)\n--\n\n"
     "Have the kernel copy the pages region records (madvise MADV_POPULATE_WRITE), "
     "a few at a time, until they are all copied or stop_fd is readable. Returns "
     "the pages copied (0 if nothing is learned yet), or -1 if this kernel cannot "
     "(region then says no child should try)."},
#endif
#if defined(__linux__) && PY_VERSION_HEX >= 0x030C0000
    {"fork_start", fork_start, METH_O,
     "fork_start(own_threads, /)\n--\n\n"
     "os.fork() for a fork start: 0 in the child, the pid in the parent. Warns as "
     "os.fork() does about forking with threads only if threads remain beside "
     "those own_threads() names (a tuple of native thread ids: proctor's, which "
     "are safe to fork with). own_threads is called before the fork hooks."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proctor._start._native",
    .m_doc = "A child's parent-death signal and watch, fork, the fork server's hot paths (optional; see _native.c).",
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
