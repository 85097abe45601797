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

static PyObject *
relaxed_lines(PyObject *module, PyObject *arg)
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
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t') {
            Py_ssize_t j = i + 1;
            while (j < n && (in[j] == ' ' || in[j] == '\t')) {
                j++;
            }
            if (!(j + 1 < n && in[j] == '\r' && in[j + 1] == '\n')) {
                out[o++] = ' ';
            }
            i = j;
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
relaxed_header(PyObject *module, PyObject *arg)
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
