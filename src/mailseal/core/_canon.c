/* Relaxed body canonicalization (RFC 6376 section 3.4.4 a+b) over complete lines.
 *
 * The same transformation as mailseal.core.canonicalization.relaxed_lines_py,
 * in one pass: every run of SP/HTAB becomes one SP, and a run that ends a line
 * (is followed by CRLF) is removed. Lines are delimited by CRLF only; a bare CR
 * or LF is ordinary content. The Python version stays the reference and the
 * test suite checks both agree on arbitrary bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The byte at in[i] starts a run that relaxed canonicalization rewrites or removes:
 * any HTAB, or an SP followed by SP, HTAB or CR. A lone SP before other content
 * is copied unchanged, as is every other byte. */
static Py_ssize_t
relaxed_run(const unsigned char *in, Py_ssize_t n, Py_ssize_t i, unsigned char *out, Py_ssize_t *o)
{
    Py_ssize_t j = i + 1;
    while (j < n && (in[j] == ' ' || in[j] == '\t')) {
        j++;
    }
    if (!(j + 1 < n && in[j] == '\r' && in[j + 1] == '\n')) {
        out[(*o)++] = ' ';
    }
    return j;
}

static PyObject *
relaxed_lines(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t o = 0;
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    /* 16 bytes at a time: a block with nothing to rewrite (no HTAB, no SP followed
     * by SP/HTAB/CR) is copied whole; otherwise copy up to the first such byte and
     * let relaxed_run() handle the run. Writing a whole block at out+o is safe:
     * o <= i always, and i + 17 <= n. Typical text is mostly such blocks. */
    const __m128i sp = _mm_set1_epi8(' ');
    const __m128i tab = _mm_set1_epi8('\t');
    const __m128i cr = _mm_set1_epi8('\r');
    while (i + 17 <= n) {
        __m128i here = _mm_loadu_si128((const __m128i *)(in + i));
        __m128i next = _mm_loadu_si128((const __m128i *)(in + i + 1));
        __m128i next_ws = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(next, sp), _mm_cmpeq_epi8(next, tab)), _mm_cmpeq_epi8(next, cr));
        __m128i starts = _mm_or_si128(
            _mm_cmpeq_epi8(here, tab), _mm_and_si128(_mm_cmpeq_epi8(here, sp), next_ws));
        unsigned int mask = (unsigned int)_mm_movemask_epi8(starts);
        _mm_storeu_si128((__m128i *)(out + o), here);
        if (mask == 0) {
            o += 16;
            i += 16;
            continue;
        }
        unsigned int k = (unsigned int)__builtin_ctz(mask);
        o += k;
        i = relaxed_run(in, n, i + k, out, &o);
    }
#endif
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t') {
            i = relaxed_run(in, n, i, out, &o);
        } else {
            out[o++] = c;
            i++;
        }
    }
    PyBuffer_Release(&view);
    if (o != n && _PyBytes_Resize(&result, o) < 0) {
        return NULL;
    }
    return result;
}

/* Relaxed header canonicalization (RFC 6376 section 3.4.2) of one raw field:
 * lower-case the name and drop WSP before the colon, unfold (remove every CRLF),
 * collapse SP/HTAB runs to one SP, drop WSP at both ends of the value, end with
 * CRLF. Mirrors mailseal.core.canonicalization.relaxed_header_py. */
static PyObject *
relaxed_header(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    const unsigned char *colon_ptr = memchr(in, ':', (size_t)n);
    if (colon_ptr == NULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "header field without a colon");
        return NULL;
    }
    Py_ssize_t colon = colon_ptr - in;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n + 3);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t o = 0;
    Py_ssize_t name_end = colon;
    while (name_end > 0 && (in[name_end - 1] == ' ' || in[name_end - 1] == '\t')) {
        name_end--;
    }
    for (Py_ssize_t i = 0; i < name_end; i++) {
        unsigned char c = in[i];
        out[o++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    out[o++] = ':';
    Py_ssize_t value_start = o;
    Py_ssize_t i = colon + 1;
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t' || (c == '\r' && i + 1 < n && in[i + 1] == '\n')) {
            int space = 0;
            while (i < n) {
                if (in[i] == ' ' || in[i] == '\t') {
                    space = 1;
                    i++;
                } else if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') {
                    i += 2;
                } else {
                    break;
                }
            }
            if (space && o > value_start && i < n) {
                out[o++] = ' ';
            }
        } else {
            out[o++] = c;
            i++;
        }
    }
    out[o++] = '\r';
    out[o++] = '\n';
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&result, o) < 0) {
        return NULL;
    }
    return result;
}

static PyMethodDef canon_methods[] = {
    {"relaxed_header", relaxed_header, METH_O,
     "Relaxed header canonicalization of one raw field (RFC 6376 3.4.2)."},
    {"relaxed_lines", relaxed_lines, METH_O,
     "Collapse SP/HTAB runs to one SP and drop them before CRLF (RFC 6376 3.4.4)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef canon_module = {
    PyModuleDef_HEAD_INIT, "mailseal.core._canon",
    "C speedup for relaxed body canonicalization.", -1, canon_methods,
};

PyMODINIT_FUNC
PyInit__canon(void)
{
    return PyModule_Create(&canon_module);
}
