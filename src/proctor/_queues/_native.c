/* proctor._queues._native: the C fast paths of a queue's ring (_ring.py).
 *
 * Optional: built when a C compiler is present (hatch_build.py), else the ring
 * runs the same code in pure Python (_ring.Ring.try_put_one/try_get_one). Both
 * read and write the same bytes in the same order, so a C process and a pure
 * one share a queue. This module does only what costs the pure path most: the
 * arithmetic on the two 64-bit words and the copy of one small frame. Locks,
 * tokens, waits, spilled and batched items stay in Python::
 *
 *     put_one(payload, limit)                 get_one()
 *     ───────────────────────                 ─────────
 *     load the get word (acquire)             load the put word (acquire)
 *     count >= limit or no room? ─▶ False     empty, or the head frame not a
 *     copy header + payload (may wrap)          plain one-item frame that ends
 *     store the put word (release)              before the end of the data area?
 *     ─▶ True                                   ─▶ None
 *                                             copy the payload into a new bytes
 *                                             store the get word (release) ─▶ bytes
 *
 * The caller holds the put lock (put_one) or the get lock (get_one), exactly as
 * for the pure methods: each side stores only its own word, with one aligned
 * 8-byte store that commits the whole operation. A process killed anywhere in
 * put_one or get_one has either stored its word or not: the ring is as after
 * the operation, or as before it, as with the pure path.
 *
 * Memory ordering: the other side's word is loaded with acquire ordering
 * before the frame bytes it covers are touched, and a side's own word is
 * stored with release ordering after its frame bytes. On x86 both are plain
 * moves (what the pure path relies on: total store order); elsewhere they are
 * also correct, though the queue gives both sides one lock there anyway.
 *
 * A RingCore holds a buffer export on the ring's mmap (so the mapping cannot
 * be unmapped under it); release() drops it, and Ring.release() calls that
 * before the queue closes its memory. Every call holds the GIL.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* This file's digest (its CRC-32 and length, 16 hex digits), passed by hatch_build.py:
   the loader (_core/_accel.py) refuses a module built from older source. */
#ifndef PROCTOR_SOURCE_DIGEST
#define PROCTOR_SOURCE_DIGEST ""
#endif

#include <stdint.h>
#include <string.h>

/* The layout, as in _ring.py (the loader refuses a module whose numbers differ). */
#define HEADER_SIZE 128
#define FRAME_HEADER 16
#define POSITION_BITS 36
#define POSITION_MASK ((((uint64_t)1) << POSITION_BITS) - 1)
#define COUNT_MASK ((((uint64_t)1) << 27) - 1)
#define GET_WORD 0 /* index of the 8-byte words */
#define PUTTERS_WORD 1
#define PUT_WORD 8

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    int64_t *words;        /* the header, as 8-byte words */
    unsigned char *data;   /* the data area */
    uint64_t capacity;
    uint64_t span;         /* 2 * capacity: positions run over [0, span) */
} RingCore;

static int
closed_error(void)
{
    PyErr_SetString(PyExc_ValueError,
                    "this queue's ring was released in this process (the queue handle is "
                    "closed): the call cannot go on");
    return -1;
}

static inline uint64_t
load_acquire(int64_t *word)
{
    return (uint64_t)__atomic_load_n(word, __ATOMIC_ACQUIRE);
}

static inline void
store_release(int64_t *word, uint64_t value)
{
    __atomic_store_n(word, (int64_t)value, __ATOMIC_RELEASE);
}

/* Copy n bytes to the data area at byte offset start, wrapping at capacity. */
static inline void
write_circular(RingCore *self, uint64_t start, const unsigned char *src, uint64_t n)
{
    uint64_t first = self->capacity - start;
    if (n <= first) {
        memcpy(self->data + start, src, n);
    }
    else {
        memcpy(self->data + start, src, first);
        memcpy(self->data, src + first, n - first);
    }
}

static inline uint64_t
offset_of(RingCore *self, uint64_t position)
{
    return position < self->capacity ? position : position - self->capacity;
}

/* ── the type ────────────────────────────────────────────────────────────── */

static int
ringcore_init(RingCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *memory;
    Py_buffer view;
    static char *kwlist[] = {"memory", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:RingCore", kwlist, &memory))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_TypeError, "RingCore.__init__ called twice");
        return -1;
    }
    if (PyObject_GetBuffer(memory, &view, PyBUF_WRITABLE) < 0)
        return -1;
    if (view.len < HEADER_SIZE + 64 || ((uintptr_t)view.buf & 7) != 0
        || (uint64_t)(view.len - HEADER_SIZE) > (((uint64_t)1) << (POSITION_BITS - 2))) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "a ring needs an 8-byte aligned buffer of %d to %llu bytes, got %zd",
                     HEADER_SIZE + 64,
                     (unsigned long long)((((uint64_t)1) << (POSITION_BITS - 2)) + HEADER_SIZE),
                     view.len);
        return -1;
    }
    self->view = view;
    self->has_view = 1;
    self->words = (int64_t *)view.buf;
    self->data = (unsigned char *)view.buf + HEADER_SIZE;
    self->capacity = (uint64_t)(view.len - HEADER_SIZE);
    self->span = 2 * self->capacity;
    return 0;
}

static void
ringcore_release_view(RingCore *self)
{
    if (self->has_view) {
        self->has_view = 0;
        self->words = NULL;
        self->data = NULL;
        PyBuffer_Release(&self->view);
    }
}

static void
ringcore_dealloc(RingCore *self)
{
    ringcore_release_view(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(release_doc,
"release()\n--\n\n"
"Let go of the ring's memory (idempotent); later calls raise ValueError.");

static PyObject *
ringcore_release(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    ringcore_release_view(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(put_one_doc,
"put_one(payload, limit)\n--\n\n"
"Append a plain one-item frame if it fits and fewer than limit items are in the\n"
"ring; return whether it was put. The put lock must be held.");

static PyObject *
ringcore_put_one(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload;
    long long limit;
    uint64_t got_word, word, put, tail, head, used, size, start;
    unsigned char header[FRAME_HEADER];
    uint32_t field;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "put_one() takes 2 arguments (payload, limit)");
        return NULL;
    }
    limit = PyLong_AsLongLong(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (!self->has_view)
        return closed_error(), NULL;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((uint64_t)payload.len > UINT32_MAX - FRAME_HEADER) {
        PyBuffer_Release(&payload);
        Py_RETURN_FALSE; /* the general path reports it */
    }
    got_word = load_acquire(&self->words[GET_WORD]);
    word = (uint64_t)self->words[PUT_WORD]; /* our own side's: under our lock */
    put = word >> POSITION_BITS;
    if (limit <= 0
        || ((put - (got_word >> POSITION_BITS)) & COUNT_MASK) >= (uint64_t)limit) {
        PyBuffer_Release(&payload);
        Py_RETURN_FALSE;
    }
    tail = word & POSITION_MASK;
    head = got_word & POSITION_MASK;
    used = tail >= head ? tail - head : tail + self->span - head;
    size = FRAME_HEADER + (uint64_t)payload.len;
    if (tail >= self->span || head >= self->span || used > self->capacity
        || self->capacity - used < size) {
        PyBuffer_Release(&payload);
        Py_RETURN_FALSE; /* (a corrupt word too: the general path reports it) */
    }
    /* <length:u32><meta:u32><seq:u32><mail_id:u32>, little-endian */
    field = (uint32_t)payload.len;
    header[0] = field & 0xFF; header[1] = (field >> 8) & 0xFF;
    header[2] = (field >> 16) & 0xFF; header[3] = (field >> 24) & 0xFF;
    header[4] = 1; header[5] = 0; header[6] = 0; header[7] = 0; /* meta: 1 item, no flags */
    field = (uint32_t)put;
    header[8] = field & 0xFF; header[9] = (field >> 8) & 0xFF;
    header[10] = (field >> 16) & 0xFF; header[11] = (field >> 24) & 0xFF;
    header[12] = 0; header[13] = 0; header[14] = 0; header[15] = 0; /* mail id */
    start = offset_of(self, tail);
    write_circular(self, start, header, FRAME_HEADER);
    write_circular(self, offset_of(self, (tail + FRAME_HEADER) % self->span),
                   (const unsigned char *)payload.buf, (uint64_t)payload.len);
    PyBuffer_Release(&payload);
    tail += size;
    if (tail >= self->span)
        tail -= self->span;
    store_release(&self->words[PUT_WORD], (((put + 1) & COUNT_MASK) << POSITION_BITS) | tail);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(get_one_doc,
"get_one()\n--\n\n"
"Take the head frame if it is a plain one-item frame that does not wrap, and\n"
"return its payload; else None (the caller takes the general path). The get\n"
"lock must be held.");

static PyObject *
ringcore_get_one(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t put_word, word, head, tail, used, start, length, meta, frame;
    const unsigned char *at;
    PyObject *payload;

    if (!self->has_view)
        return closed_error(), NULL;
    put_word = load_acquire(&self->words[PUT_WORD]);
    word = (uint64_t)self->words[GET_WORD]; /* our own side's: under our lock */
    head = word & POSITION_MASK;
    tail = put_word & POSITION_MASK;
    if (head == tail || head >= self->span || tail >= self->span)
        Py_RETURN_NONE;
    start = offset_of(self, head);
    if (start + FRAME_HEADER > self->capacity)
        Py_RETURN_NONE; /* the header wraps: the general path */
    at = self->data + start;
    length = (uint64_t)at[0] | ((uint64_t)at[1] << 8) | ((uint64_t)at[2] << 16)
             | ((uint64_t)at[3] << 24);
    meta = (uint64_t)at[4] | ((uint64_t)at[5] << 8) | ((uint64_t)at[6] << 16)
           | ((uint64_t)at[7] << 24);
    frame = FRAME_HEADER + length;
    used = tail >= head ? tail - head : tail + self->span - head;
    if (meta != 1 || start + frame > self->capacity || frame > used)
        Py_RETURN_NONE; /* a batch, spilled, wrapping (or corrupt: reported there) */
    payload = PyBytes_FromStringAndSize((const char *)at + FRAME_HEADER, (Py_ssize_t)length);
    if (payload == NULL)
        return NULL; /* nothing taken */
    head += frame;
    if (head >= self->span)
        head -= self->span;
    store_release(&self->words[GET_WORD],
                  ((((word >> POSITION_BITS) + 1) & COUNT_MASK) << POSITION_BITS) | head);
    return payload;
}

PyDoc_STRVAR(putters_doc,
"putters()\n--\n\n"
"Producers registered as waiting for room (the get lock must be held).");

static PyObject *
ringcore_putters(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->has_view)
        return closed_error(), NULL;
    return PyLong_FromLongLong(__atomic_load_n(&self->words[PUTTERS_WORD], __ATOMIC_RELAXED));
}

static PyMethodDef ringcore_methods[] = {
    {"putters", (PyCFunction)ringcore_putters, METH_NOARGS, putters_doc},
    {"put_one", (PyCFunction)(void (*)(void))ringcore_put_one, METH_FASTCALL, put_one_doc},
    {"get_one", (PyCFunction)ringcore_get_one, METH_NOARGS, get_one_doc},
    {"release", (PyCFunction)ringcore_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proctor._queues._native.RingCore",
    .tp_basicsize = sizeof(RingCore),
    .tp_dealloc = (destructor)ringcore_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RingCore(memory): C fast paths of one queue ring (see _queues/_ring.py).",
    .tp_methods = ringcore_methods,
    .tp_init = (initproc)ringcore_init,
    .tp_new = PyType_GenericNew,
};

/* ── module ──────────────────────────────────────────────────────────────── */

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proctor._queues._native",
    .m_doc = "C fast paths of proctor's queue ring (optional; see _native.c).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module;

    if (PyType_Ready(&RingCoreType) < 0)
        return NULL;
    module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RingCoreType);
    if (PyModule_AddObject(module, "RingCore", (PyObject *)&RingCoreType) < 0
        || PyModule_AddStringConstant(module, "SOURCE_DIGEST", PROCTOR_SOURCE_DIGEST) < 0
        || PyModule_AddIntConstant(module, "HEADER_SIZE", HEADER_SIZE) < 0
        || PyModule_AddIntConstant(module, "FRAME_HEADER", FRAME_HEADER) < 0
        || PyModule_AddIntConstant(module, "POSITION_BITS", POSITION_BITS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
