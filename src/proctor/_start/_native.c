/* proctor._start._native: arm a child's parent-death signal without ctypes; fork.
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
 *     fork_start(own_threads)           os.fork() for a fork start (Python 3.12+)
 *                                       ─▶ 0 in the child, the pid in the parent
 *
 * fork_start is os.fork() -- the "os.fork" audit event, the at-fork hooks
 * (PyOS_BeforeFork, PyOS_AfterFork_Child/_Parent) -- except for the warning that
 * Python 3.12+ gives when a process with more than one thread forks. os.fork()
 * counts the process's threads (/proc/self/stat) after the fork and warns
 * through the warnings machinery: with the log listener's thread alive (a
 * parent that forwards its children's logs) it warned the user, at every fork
 * start, about a thread of proctor's that its fork hooks make safe to fork
 * with. (Not for speed: the two cost the same within noise.) Here the threads are
 * counted just before the fork, own_threads of them (proctor's, fork-safe) are
 * not counted, and the same DeprecationWarning is given in the parent after the
 * fork (any error from it swallowed), as os.fork() gives it, if any other thread
 * remains.
 *
 * Linux only: elsewhere the module has no function (there is no prctl), the
 * child watches its parent from a thread, and a fork start calls os.fork().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* This file's digest (its CRC-32 and length, 16 hex digits), passed by hatch_build.py:
   the loader (_core/_accel.py) refuses a module built from older source. */
#ifndef PROCTOR_SOURCE_DIGEST
#define PROCTOR_SOURCE_DIGEST ""
#endif

#ifdef __linux__
#include <sys/prctl.h>

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

static PyObject *
fork_start(PyObject *module, PyObject *arg)
{
    long own = PyLong_AsLong(arg);
    pid_t pid;
    int saved_errno;

    (void)module;
    if (own == -1 && PyErr_Occurred())
        return NULL;
    if (own < 0) {
        PyErr_Format(PyExc_ValueError, "own_threads must be 0 or more, not %ld", own);
        return NULL;
    }
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "fork_start() is for the main interpreter; call os.fork() elsewhere");
        return NULL;
    }
    if (PySys_Audit("os.fork", NULL) < 0)
        return NULL;
    /* Counted just before the fork: the threads the child is forked beside
     * (after it, the listener may already be ending its thread in the parent). */
    long threads = count_threads();
    PyOS_BeforeFork();
    pid = fork();
    saved_errno = errno;
    if (pid == 0) {
        PyOS_AfterFork_Child();
    }
    else {
        PyOS_AfterFork_Parent();
        /* In the parent after the fork, in os.fork()'s words, as it does; and as
         * there, nothing the warning raises (-W error) undoes the fork. */
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
#ifdef __linux__
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "set_parent_death_signal(signum, /)\n--\n\n"
     "Have the kernel send signum to this process when the thread that created it "
     "ends (prctl PR_SET_PDEATHSIG); OSError if it refuses."},
#endif
#if defined(__linux__) && PY_VERSION_HEX >= 0x030C0000
    {"fork_start", fork_start, METH_O,
     "fork_start(own_threads, /)\n--\n\n"
     "os.fork() for a fork start: 0 in the child, the pid in the parent. Warns as "
     "os.fork() does about forking with threads only if threads remain beside "
     "own_threads of proctor's, which are safe to fork with."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proctor._start._native",
    .m_doc = "A child's parent-death signal without ctypes (optional; see _native.c).",
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
