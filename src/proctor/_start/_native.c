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
 *     fork_start(own_threads)           os.fork() for a fork start (Python 3.12+);
 *                                       own_threads() ─▶ proctor's fork-safe threads
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
 * counted after the before-fork hooks and just before fork(), as os.fork() counts
 * them (from /proc/self/stat, else from the threading module), own_threads() of
 * them (proctor's, fork-safe) are not counted, and the same DeprecationWarning is
 * given in the parent after the fork (any error from it swallowed, as 3.12 and
 * 3.13 do) if any other thread remains.
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

/* The threads os.fork() counts where /proc cannot be read: those the threading
 * module knows (running and starting), if it is imported; else -1, with any
 * error cleared (a count never stops the fork). */
static long
count_python_threads(void)
{
    long threads = -1;
    PyObject *name = PyUnicode_InternFromString("threading");
    PyObject *threading = name == NULL ? NULL : PyImport_GetModule(name);

    Py_XDECREF(name);
    if (threading != NULL) {
        PyObject *active = PyObject_GetAttrString(threading, "_active");
        PyObject *limbo = PyObject_GetAttrString(threading, "_limbo");
        Py_ssize_t running = active == NULL ? -1 : PyObject_Size(active);
        Py_ssize_t starting = limbo == NULL ? -1 : PyObject_Size(limbo);

        if (running >= 0 && starting >= 0)
            threads = (long)(running + starting);
        Py_XDECREF(active);
        Py_XDECREF(limbo);
        Py_DECREF(threading);
    }
    PyErr_Clear();
    return threads;
}

static PyObject *
fork_start(PyObject *module, PyObject *own_threads)
{
    pid_t pid;
    int saved_errno;
    long threads, own = -1;

    (void)module;
    if (!PyCallable_Check(own_threads)) {
        PyErr_Format(PyExc_TypeError,
                     "own_threads must be a function that returns how many of proctor's "
                     "threads are fork-safe, not %.100s",
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
    if (PySys_Audit("os.fork", NULL) < 0)
        return NULL;
    PyOS_BeforeFork();
    /* Counted after the before-fork hooks, as os.fork() counts after them (a hook
     * may stop a thread), and own_threads() asked then too: from it to fork() the
     * GIL is held, so no thread it names as alive can end before the count. */
    PyObject *got = PyObject_CallNoArgs(own_threads);
    if (got != NULL) {
        own = PyLong_AsLong(got);
        Py_DECREF(got);
        if (own < 0 && !PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "own_threads() must return 0 or more, not %ld", own);
    }
    if (own < 0) {
        /* No fork: the after-fork hooks that release what the before-fork ones
         * took run with the error put aside. */
        PyObject *error = PyErr_GetRaisedException();
        PyOS_AfterFork_Parent();
        PyErr_SetRaisedException(error);
        return NULL;
    }
    threads = count_threads();
    if (threads < 0)
        threads = count_python_threads();
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
     "the own_threads() of proctor's, which are safe to fork with."},
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
