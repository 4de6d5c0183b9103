/* proctor._start._native: arm a child's parent-death signal without ctypes.
 *
 * Optional: built with the other C modules when a C compiler is present
 * (hatch_build.py). Every child calls set_parent_death_signal once, first thing
 * (_bootstrap.arm_parent_death); without this module it calls libc's prctl
 * through _ctypes, which costs a spawned child the loading of _ctypes and libffi
 * (~1 M instructions, ~0.6 ms) and a forked child the pages that a foreign call
 * writes. The module holds nothing else, so importing it loads no other module::
 *
 *     set_parent_death_signal(signum)   prctl(PR_SET_PDEATHSIG, signum)
 *                                       ─▶ None, or OSError (errno)
 *
 * Linux only: elsewhere the module has no function (there is no prctl), and the
 * child watches its parent from a thread, as without the module.
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

static PyMethodDef native_methods[] = {
#ifdef __linux__
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "set_parent_death_signal(signum, /)\n--\n\n"
     "Have the kernel send signum to this process when the thread that created it "
     "ends (prctl PR_SET_PDEATHSIG); OSError if it refuses."},
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
